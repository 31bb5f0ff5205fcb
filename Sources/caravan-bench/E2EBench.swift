import API
import ArgumentParser
import CaravanTesting
import Foundation

/// Three real agents on loopback, driven through the HTTP API as a user would.
struct E2EBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "Three agents on loopback: register latency, submit → running per driver, blocking-query wake-up, node SIGKILL → replacement running.")

    @Option(help: "Jobs per driver for the latency figures.") var jobs: Int = 100
    @Option(help: "Blocking-query wake-up trials.") var wakeups: Int = 100
    @Option(help: "Node SIGKILL trials.") var kills: Int = 3
    @Option(help: "Registry HOST:PORT holding busybox:1.36 for the container driver (Deploy/registry.sh up); none skips it.")
    var registry: String?
    @Option(help: "The caravan binary (default: next to this one).") var binary: String?

    static let subnet = 67
    static func ip(_ i: Int) -> String { "127.0.\(subnet).\(i + 2)" }

    final class Cluster: @unchecked Sendable {
        let root = NSTemporaryDirectory() + "caravan-bench-e2e-\(getpid())"
        let binary: String
        var processes: [Int: Process] = [:]
        let key = "YmVuY2htYXJrLWtleS1mb3ItY2FyYXZhbi1lMmUtMDE="
        /// More agent flags (TLS, ACLs).
        var extra: [String] = []

        init(binary: String) { self.binary = binary }

        func start(_ i: Int) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["agent", "--name", "e2e-\(i)", "--bind", E2EBench.ip(i), "--data-dir", "\(root)/\(i)", "--encrypt", key,
                           "--join", E2EBench.ip(0), "--join", E2EBench.ip(1), "--log-level", "warning", "--enable-raw-exec"] + extra
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            processes[i] = p
        }

        func kill(_ i: Int) {
            guard let p = processes[i] else { return }
            Foundation.kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }

        func stop() {
            for i in processes.keys { kill(i) }
            TaskSweeper.killTasks(under: root)
            try? FileManager.default.removeItem(atPath: root)
        }
    }

    func client(_ i: Int) throws -> CaravanClient { try CaravanClient(address: "http://\(Self.ip(i)):4680", timeout: .seconds(30)) }

    static func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }

    static func summary(_ xs: [Double]) -> String {
        let p50 = ExecutorBench.percentile(xs, 0.5), p99 = ExecutorBench.percentile(xs, 0.99)
        return String(format: "p50 %.1f ms, p99 %.1f ms (max %.1f, n=%d)", p50, p99, xs.max() ?? 0, xs.count)
    }

    func run() async throws {
        let bin = binary ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("caravan").path
        let cluster = Cluster(binary: bin)
        defer { cluster.stop() }
        for i in 0..<3 { try cluster.start(i) }
        print("# caravan-bench e2e — \(Date())")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB; 3 agents on \(Self.ip(0))–\(Self.ip(2)), sealed\n")
        let leader = try await waitForCluster()
        let follower = (0..<3).first { $0 != leader }!
        let watcher = (0..<3).first { $0 != leader && $0 != follower }!
        print("| figure | value |\n|---|---|")

        let (register, running) = try await submitToRunning(driver: "raw_exec", via: follower, count: jobs)
        print("| register (POST /v1/jobs to a follower → 200) | \(Self.summary(register)) |")
        print("| submit → running, raw_exec (200 of the register → task running, seen by a blocking read) | \(Self.summary(running)) |")
        if let registry {
            _ = try await submitToRunning(driver: "container", via: follower, count: 1, image: "\(registry)/busybox:1.36")  // warms the image cache
            let (_, c) = try await submitToRunning(driver: "container", via: follower, count: jobs, image: "\(registry)/busybox:1.36")
            print("| submit → running, container (image cached on every node) | \(Self.summary(c)) |")
        }
        let wake = try await blockingWakeups(writeVia: follower, watchVia: watcher)
        print("| blocking-query wake-up: a read waiting on another follower answers, after the write's 200 | \(Self.summary(wake)) |")
        let replaced = try await killToReplacement(cluster, leader: leader)
        print("| node SIGKILL → its instance running elsewhere | \(replaced.map { String(format: "%.2f s", $0 / 1000) }.joined(separator: ", ")) |")
    }

    /// Waits for a leader and three ready nodes; the leader's index.
    func waitForCluster() async throws -> Int {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let l = try? await client(0).status().leader, let nodes = try? await client(0).nodes(), nodes.filter({ $0.status == "ready" }).count == 3,
               let i = (0..<3).first(where: { "e2e-\($0)" == l }) {
                return i
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("the agents did not form a cluster within 60 s")
    }

    func jobText(_ id: String, driver: String, count: Int = 1, image: String? = nil) -> String {
        let config = image.map { "image: \($0), command: sleep, args: [\"3600\"]" } ?? "command: /bin/sleep, args: [\"3600\"]"
        return """
            id: \(id)
            groups:
              - name: g
                count: \(count)
                tasks:
                  - name: t
                    driver: \(driver)
                    config: {\(config)}
                    killTimeout: 1s
                    resources: {cpu: 10m, memory: 16Mi}
            """
    }

    /// One blocking read of a job (typed throws kept out of the callers: the optimizer of this
    /// toolchain crashes on them inside the loops below).
    static func read(_ api: CaravanClient, _ id: String, _ index: UInt64) async throws -> (job: JobStatusView, index: UInt64) {
        do { return try await api.job(id, index: index, wait: .seconds(5)) } catch { throw ValidationError(error.message) }
    }

    /// Blocking reads of the job until `count` instances run on nodes other than `avoid`.
    func waitRunning(_ api: CaravanClient, _ id: String, count: Int = 1, avoid: String? = nil, within: Duration = .seconds(60)) async throws {
        var index: UInt64 = 0
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            let r = try await Self.read(api, id, index)
            index = r.index
            let up = r.job.allocations.filter { $0.desiredStatus == "run" && $0.clientStatus == "running" && $0.node != avoid }
            if up.count >= count { return }
        }
        throw ValidationError("job \(id) was not running within \(within)")
    }

    func submitToRunning(driver: String, via i: Int, count: Int, image: String? = nil) async throws -> ([Double], [Double]) {
        let api = try client(i)
        var register: [Double] = [], running: [Double] = []
        for k in 0..<count {
            let id = "bench-\(driver.replacingOccurrences(of: "_", with: "-"))-\(k)"
            let t0 = ContinuousClock.now
            _ = try await api.registerJob(jobText(id, driver: driver, image: image))
            let t1 = ContinuousClock.now
            try await waitRunning(api, id)
            running.append(Self.ms(ContinuousClock.now - t1))
            register.append(Self.ms(t1 - t0))
            _ = try await api.stopJob(id, purge: true)
        }
        return (register, running)
    }

    func blockingWakeups(writeVia w: Int, watchVia r: Int) async throws -> [Double] {
        let writer = try client(w), watcher = try client(r)
        var out: [Double] = []
        for k in 0..<wakeups {
            let (_, index): ([JobStatusView], UInt64) = try await watcher.blocking("/v1/jobs", index: 0, wait: .zero)
            let woken = Task { () -> ContinuousClock.Instant in
                _ = try await watcher.blocking("/v1/jobs", index: index, wait: .seconds(10), as: [JobStatusView].self)
                return ContinuousClock.now
            }
            try await Task.sleep(for: .milliseconds(20))  // the read is waiting on the leader by now
            _ = try await writer.registerJob(jobText("wake-\(k)", driver: "raw_exec", count: 0))
            let acked = ContinuousClock.now
            let at = try await woken.value
            out.append(Self.ms(at - acked))
            _ = try await writer.stopJob("wake-\(k)", purge: true)
        }
        return out
    }

    /// One instance per node; SIGKILL a non-leader holding one; time until its replacement runs.
    func killToReplacement(_ cluster: Cluster, leader: Int) async throws -> [Double] {
        var out: [Double] = []
        let victim = leader == 0 ? 1 : 0
        for trial in 0..<kills {
            out.append(try await replacementTime("spread-\(trial)", cluster, leader: leader, victim: victim))
        }
        return out
    }

    func replacementTime(_ id: String, _ cluster: Cluster, leader: Int, victim: Int) async throws -> Double {
        let api = try client(leader)
        _ = try await api.registerJob(jobText(id, driver: "raw_exec", count: 3))
        try await waitRunning(api, id, count: 3)
        let t0 = DispatchTime.now().uptimeNanoseconds
        cluster.kill(victim)
        try await waitRunning(api, id, count: 3, avoid: "e2e-\(victim)")
        let took = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        _ = try await api.stopJob(id, purge: true)
        try cluster.start(victim)
        try await readyNodes(api, 3)
        return took
    }

    /// Back and ready before the next trial.
    func readyNodes(_ api: CaravanClient, _ n: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let nodes = (try? await api.nodes()) ?? []
            if nodes.filter({ $0.status == "ready" }).count == n { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("\(n) nodes were not ready within 60 s")
    }
}
