import CaravanModel
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix

/// The result of one service check run: Nomad's passing / warning / critical.
public enum CheckStatus: String, Sendable, Equatable, Codable { case pending, passing, warning, critical }

/// One service check of an allocation, as the executor runs it.
struct CheckRun: Sendable {
    /// `<service>.<index>.<type>`, the key under which its status is reported.
    var name: String
    var check: Check
    /// The host port it probes (http, tcp).
    var port: Int?
    /// The task a script check runs in, and the one a failing check restarts.
    var task: String

    /// Every check of a group, with its port resolved from the allocation's ports.
    static func all(group: TaskGroup, ports: [String: Int]) -> [CheckRun] {
        let main = group.tasks.first { $0.lifecycle == nil }?.name ?? group.tasks.first?.name ?? ""
        var out: [CheckRun] = []
        for s in group.services {
            for (i, c) in s.checks.enumerated() {
                let label = c.port ?? s.port
                out.append(CheckRun(name: "\(s.name).\(i).\(c.type.rawValue)", check: c, port: label.flatMap { ports[$0] }, task: main))
            }
        }
        return out
    }
}

/// Probes that need no task context.
enum Probe {
    /// HTTP GET; any 2xx passes.
    static func http(host: String, port: Int, path: String, timeout: Duration) async -> (CheckStatus, String) {
        do {
            let r = try await RegistryHTTP.get(host: host, port: port, path: path.hasPrefix("/") ? path : "/" + path, headers: [],
                                               maxMemory: 64 << 10, timeout: timeout)
            return (200..<300).contains(r.status) ? (.passing, "HTTP \(r.status)") : (.critical, "HTTP \(r.status)")
        } catch {
            return (.critical, error.description)
        }
    }

    /// A TCP connection that opens within the timeout passes.
    static func tcp(host: String, port: Int, timeout: Duration) async -> (CheckStatus, String) {
        do {
            let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
            let ch = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.nanoseconds(Int64(timeout / .nanoseconds(1))))
                .connect(to: address).get()
            try? await ch.close()
            return (.passing, "TCP connect \(host):\(port) ok")
        } catch {
            return (.critical, "TCP connect \(host):\(port) failed")
        }
    }
}
