import CoreMetrics
import Hummingbird
import Metrics
import Prometheus
import Synchronization

/// The agent's Prometheus registry. `caravan agent` bootstraps swift-metrics with it, so every
/// counter, gauge and timer the modules record (gossip, Raft, executor, scheduler, API) lands
/// here; `GET /v1/metrics` adds what is read off the running agent at scrape time.
public enum AgentMetrics {
    public static let registry = PrometheusCollectorRegistry()
    private static let bootstrapped = Mutex(false)

    /// Points swift-metrics at the registry; the first call in a process wins, later ones do nothing.
    public static func bootstrap() {
        bootstrapped.withLock { done in
            guard !done else { return }
            done = true
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.defaultDurationHistogramBuckets = [
                .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
                .seconds(5), .seconds(10),
            ]
            MetricsSystem.bootstrap(factory)
        }
    }
}

/// Counts every API request by method, route and status, and times it
/// (`caravan_http_requests_total`, `caravan_http_request_seconds`); failures also by error code
/// (`caravan_http_request_errors_total`).
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response = try await next(request, context)
        // The route pattern (`/v1/job/{id}`), never the raw path: ids would make a series each.
        let route = context.endpointPath.flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "unmatched"
        let method = request.method.rawValue
        let status = response.status.code
        Counter(label: "caravan_http_requests_total", dimensions: [("method", method), ("route", route), ("status", String(status))]).increment()
        Timer(label: "caravan_http_request_seconds", dimensions: [("method", method), ("route", route)])
            .record(duration: ContinuousClock.now - start)
        if status >= 400 {
            Counter(label: "caravan_http_request_errors_total", dimensions: [("route", route), ("status", String(status))]).increment()
        }
        return response
    }
}

/// Prometheus text for values read off the agent when scraped.
struct MetricsText {
    var lines: [String] = []

    mutating func add(_ name: String, _ type: String, _ help: String, _ samples: [(labels: [(String, String)], value: Double)]) {
        lines.append("# HELP \(name) \(help)")
        lines.append("# TYPE \(name) \(type)")
        for s in samples {
            let labels = s.labels.isEmpty ? "" : "{" + s.labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
            let v = s.value.rounded() == s.value && abs(s.value) < 1e15 ? String(Int64(s.value)) : String(s.value)
            lines.append(name + labels + " " + v)
        }
    }

    mutating func add(_ name: String, _ type: String, _ help: String, _ value: Double) {
        add(name, type, help, [(labels: [], value: value)])
    }

    static func escape(_ s: String) -> String {
        s.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
    }

    var text: String { lines.joined(separator: "\n") + "\n" }
}
