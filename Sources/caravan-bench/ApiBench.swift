import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes and linearizable reads through the HTTP API of three real agents, and — in the same
/// run, with the same client — through etcd's HTTP gateway when `etcd` is installed.
struct ApiBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "HTTP API writes and linearizable reads, 3 members, side by side with etcd (same client, same run) when it is installed.")

    @Option(help: "Sequential requests per figure and round.") var requests: Int = 3000
    @Option(help: "Requests per client for the concurrent figure.") var perClient: Int = 300
    @Option(help: "Concurrent clients (one keep-alive connection each).") var clients: Int = 64
    @Option(help: "Rounds; Caravan and etcd take turns, medians reported.") var rounds: Int = 3
    @Option(help: "Bytes per value.") var valueBytes: Int = 64
    @Option(help: "Directory for the data of both (fsync is real there).") var dir: String = "/var/tmp"
    @Option(help: "The caravan binary (default: next to this one).") var binary: String?
    @Option(help: "The etcd binary; none skips it.") var etcd: String = "/usr/bin/etcd"

    static let caravanSubnet = 69
    static let etcdSubnet = 70
    static func ip(_ subnet: Int, _ i: Int) -> String { "127.0.\(subnet).\(i + 2)" }

    /// One system under test: how to find its leader and a follower, and its requests.
    struct Target {
        var name: String
        var port: UInt16
        var hosts: [String]
        var leader: String
        var follower: String
        var write: @Sendable (Int) -> [UInt8]
        var read: @Sendable (Int) -> [UInt8]
        /// The cheapest request the server answers (the HTTP path's floor on this machine).
        var trivial: [UInt8]
    }

    func run() async throws {
        let bin = binary ?? "/proc/self/exe".resolvingSelf().replacingOccurrences(of: "caravan-bench", with: "caravan")
        let root = dir + "/caravan-bench-api-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        var procs: [Process] = []
        defer {
            for p in procs where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
            try? FileManager.default.removeItem(atPath: root)
        }
        print("# caravan-bench api — \(Date())")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB, data in \(dir); \(valueBytes)-byte values")

        // Caravan: three sealed agents, plain HTTP (as etcd's gateway below).
        let key = "YmVuY2htYXJrLWtleS1mb3ItY2FyYXZhbi1hcGktMDE="
        for i in 0..<3 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin)
            p.arguments = ["agent", "--name", "api-\(i)", "--bind", Self.ip(Self.caravanSubnet, i), "--data-dir", "\(root)/caravan-\(i)",
                           "--encrypt", key, "--join", Self.ip(Self.caravanSubnet, 0), "--join", Self.ip(Self.caravanSubnet, 1),
                           "--bootstrap-expect", "3", "--log-level", "warning"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            procs.append(p)
        }
        let hosts = (0..<3).map { Self.ip(Self.caravanSubnet, $0) }
        let value = String(repeating: "v", count: valueBytes)
        let body = "{\"value\":\"\(value)\"}"
        let leader = try await Self.waitFor("Caravan's leader", deadline: .seconds(60)) { () -> String? in
            guard let (status, bytes) = try? HTTPLoad.once(host: hosts[0], port: 4680, HTTPLoad.get("/v1/status")), status == 200,
                  let o = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
                  let address = o["leaderAddress"] as? String, !address.isEmpty else { return nil }
            let host = String(address.split(separator: ":")[0])
            // Ready once a write goes through.
            guard let (s, _) = try? HTTPLoad.once(host: host, port: 4680, HTTPLoad.put("/v1/var/bench/warm", body)), s == 200 else { return nil }
            return host
        }
        var targets = [Target(name: "Caravan", port: 4680, hosts: hosts, leader: leader, follower: hosts.first { $0 != leader }!,
                              write: { HTTPLoad.put("/v1/var/bench/k\($0 % 100)", body) },
                              read: { HTTPLoad.get("/v1/var/bench/k\($0 % 100)") }, trivial: HTTPLoad.get("/v1/status/leader"))]

        if FileManager.default.isExecutableFile(atPath: etcd) {
            let ehosts = (0..<3).map { Self.ip(Self.etcdSubnet, $0) }
            let cluster = ehosts.enumerated().map { "e\($0.offset)=http://\($0.element):2380" }.joined(separator: ",")
            for (i, h) in ehosts.enumerated() {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: etcd)
                p.arguments = ["--name", "e\(i)", "--data-dir", "\(root)/etcd-\(i)",
                               "--listen-client-urls", "http://\(h):2379", "--advertise-client-urls", "http://\(h):2379",
                               "--listen-peer-urls", "http://\(h):2380", "--initial-advertise-peer-urls", "http://\(h):2380",
                               "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "bench-\(getpid())",
                               "--logger", "zap", "--log-level", "error"]
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                try p.run()
                procs.append(p)
            }
            func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }
            let ev = b64(value)
            let eleader = try await Self.waitFor("etcd's leader", deadline: .seconds(60)) { () -> String? in
                for h in ehosts {
                    guard let (status, bytes) = try? HTTPLoad.once(host: h, port: 2379, HTTPLoad.post("/v3/maintenance/status", "{}")), status == 200,
                          let o = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
                          let header = o["header"] as? [String: Any], let me = header["member_id"] as? String,
                          let l = o["leader"] as? String, l == me else { continue }
                    guard let (s, _) = try? HTTPLoad.once(host: h, port: 2379, HTTPLoad.post("/v3/kv/put", "{\"key\":\"\(b64("warm"))\",\"value\":\"\(ev)\"}")),
                          s == 200 else { return nil }
                    return h
                }
                return nil
            }
            let keys = (0..<100).map { b64("bench/k\($0)") }
            targets.append(Target(name: "etcd \(Self.version(etcd))", port: 2379, hosts: ehosts, leader: eleader, follower: ehosts.first { $0 != eleader }!,
                                  write: { HTTPLoad.post("/v3/kv/put", "{\"key\":\"\(keys[$0 % 100])\",\"value\":\"\(ev)\"}") },
                                  read: { HTTPLoad.post("/v3/kv/range", "{\"key\":\"\(keys[$0 % 100])\"}") }, trivial: HTTPLoad.get("/version")))
        } else {
            print("(etcd not found at \(etcd): Caravan only; `apt install etcd-server` for the side-by-side figures)")
        }
        print("Caravan: \(hosts.joined(separator: ", ")) (leader \(leader)); \(targets.count > 1 ? "etcd: \(targets[1].hosts.joined(separator: ", ")) (leader \(targets[1].leader))" : "")\n")

        // Figures, each a list of per-round results per target.
        struct Figure { var title: String; var higherIsBetter: Bool; var values: [[Double]] }
        var figures: [Figure] = []
        func add(_ index: Int, _ title: String, _ higher: Bool, _ target: Int, _ v: Double) {
            if figures.count <= index { figures.append(Figure(title: title, higherIsBetter: higher, values: Array(repeating: [], count: targets.count))) }
            figures[index].values[target].append(v)
        }
        for _ in 0..<rounds {
            for (t, target) in targets.enumerated() {
                var f = 0
                func record(_ what: String, _ r: HTTPLoad.Result) {
                    add(f, "\(what): requests/s", true, t, r.rate); f += 1
                    add(f, "\(what): p50 ms", false, t, r.p50); f += 1
                    add(f, "\(what): p99 ms", false, t, r.p99); f += 1
                }
                let trivial = target.trivial
                record("floor: a trivial GET on the leader (Caravan /v1/status/leader, etcd /version)",
                       try HTTPLoad.sequential(host: target.leader, port: target.port, count: requests) { _ in trivial })
                record("sequential writes to the leader", try HTTPLoad.sequential(host: target.leader, port: target.port, count: requests, target.write))
                record("sequential writes through a follower", try HTTPLoad.sequential(host: target.follower, port: target.port, count: requests, target.write))
                record("sequential linearizable reads, leader", try HTTPLoad.sequential(host: target.leader, port: target.port, count: requests, target.read))
                record("\(clients) clients writing to the leader", try HTTPLoad.concurrent(host: target.leader, port: target.port, clients: clients,
                                                                                        each: perClient, target.write))
            }
        }
        let median = { (xs: [Double]) -> Double in xs.sorted()[xs.count / 2] }
        print("| figure (median of \(rounds) rounds) | " + targets.map(\.name).joined(separator: " | ") + (targets.count > 1 ? " | Caravan ÷ etcd |" : " |"))
        print("|---|" + String(repeating: "---|", count: targets.count + (targets.count > 1 ? 1 : 0)))
        for fig in figures {
            let m = fig.values.map(median)
            var line = "| \(fig.title) | " + zip(m, fig.values).map { v, all in
                String(format: fig.title.hasSuffix("ms") ? "%.3f" : "%.0f", v) + " (" + all.map { String(format: fig.title.hasSuffix("ms") ? "%.2f" : "%.0f", $0) }.joined(separator: ", ") + ")"
            }.joined(separator: " | ")
            if m.count > 1 {
                // How many times better Caravan is (> 1 is better whichever way the figure runs).
                let better = fig.higherIsBetter ? m[0] / m[1] : m[1] / m[0]
                line += String(format: " | %.2f× %@", better, better >= 1 ? "better" : "worse")
            }
            print(line + " |")
        }
    }

    static func version(_ etcd: String) -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: etcd)
        p.arguments = ["--version"]
        let out = Pipe()
        p.standardOutput = out
        try? p.run()
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return text.split(separator: "\n").first.map { String($0.split(separator: " ").last ?? "") } ?? ""
    }

    static func waitFor<T>(_ what: String, deadline: Duration, _ probe: () async -> T?) async throws -> T {
        let start = ContinuousClock.now
        while ContinuousClock.now - start < deadline {
            if let v = await probe() { return v }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("\(what) was not ready within \(deadline)")
    }
}

/// A minimal HTTP/1.1 keep-alive client on blocking sockets: the same client for every system
/// measured, so the figures compare servers, not clients.
enum HTTPLoad {
    struct Failure: Error, CustomStringConvertible { var description: String }

    struct Result {
        var rate: Double
        var p50: Double
        var p99: Double
    }

    static func get(_ path: String) -> [UInt8] { Array("GET \(path) HTTP/1.1\r\nHost: bench\r\n\r\n".utf8) }
    static func put(_ path: String, _ body: String) -> [UInt8] { request("PUT", path, body) }
    static func post(_ path: String, _ body: String) -> [UInt8] { request("POST", path, body) }
    static func request(_ method: String, _ path: String, _ body: String) -> [UInt8] {
        Array("\(method) \(path) HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
    }

    /// One connection.
    final class Connection {
        let fd: Int32
        var buffer = [UInt8](repeating: 0, count: 65536)
        var have = 0

        init(host: String, port: UInt16) throws { fd = try HTTPLoad.connect(host: host, port: port, timeoutSeconds: 10) }

        deinit { close(fd) }

        /// Sends one request, reads one response; its status and body.
        func roundTrip(_ request: [UInt8]) throws -> (Int, [UInt8]) {
            try HTTPLoad.sendAll(fd, request)
            // Headers, then Content-Length bytes of body (or chunks).
            while true {
                if let end = headerEnd() {
                    let head = String(decoding: buffer[0..<end], as: UTF8.self)
                    let lines = head.split(separator: "\r\n")
                    let status = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
                    var length: Int?
                    var chunked = false
                    for l in lines.dropFirst() {
                        let lower = l.lowercased()
                        if lower.hasPrefix("content-length:") { length = Int(lower.dropFirst(15).trimmingCharacters(in: .whitespaces)) }
                        if lower.hasPrefix("transfer-encoding:") && lower.contains("chunked") { chunked = true }
                    }
                    let bodyStart = end + 4
                    if chunked { return (status, try readChunked(from: bodyStart)) }
                    let want = bodyStart + (length ?? 0)
                    while have < want { try fill() }
                    let body = Array(buffer[bodyStart..<want])
                    consume(want)
                    return (status, body)
                }
                try fill()
            }
        }

        private func headerEnd() -> Int? {
            guard have >= 4 else { return nil }
            for i in 0...(have - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 { return i }
            return nil
        }

        private func readChunked(from start: Int) throws -> [UInt8] {
            var body: [UInt8] = []
            var at = start
            while true {
                var lineEnd: Int?
                while lineEnd == nil {
                    lineEnd = (at..<max(at, have - 1)).first { buffer[$0] == 13 && buffer[$0 + 1] == 10 }
                    if lineEnd == nil { try fill() }
                }
                let size = Int(String(decoding: buffer[at..<lineEnd!], as: UTF8.self).split(separator: ";")[0], radix: 16) ?? 0
                let dataStart = lineEnd! + 2
                while have < dataStart + size + 2 { try fill() }
                body += buffer[dataStart..<dataStart + size]
                at = dataStart + size + 2
                if size == 0 { consume(at); return body }
            }
        }

        private func fill() throws {
            if have == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + have, $0.count - have, 0) }
            guard n > 0 else { throw Failure(description: "connection closed or timed out") }
            have += n
        }

        /// Drops the first `n` bytes read (an answer) and keeps what follows — usually nothing, so
        /// the client's own cost per request stays small next to the servers' it measures.
        private func consume(_ n: Int) {
            if n < have {
                buffer.withUnsafeMutableBytes { b in _ = memmove(b.baseAddress!, b.baseAddress! + n, have - n) }
            }
            have -= n
        }
    }

    /// A blocking TCP connection (no Nagle delay, reads time out after `timeoutSeconds`).
    static func connect(host: String, port: UInt16, timeoutSeconds: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        inet_pton(AF_INET, host, &addr.sin_addr)
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard ok == 0 else { close(fd); throw Failure(description: "cannot connect to \(host):\(port)") }
        return fd
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send failed") }
            sent += n
        }
    }

    static func once(host: String, port: UInt16, _ request: [UInt8]) throws -> (Int, [UInt8]) {
        try Connection(host: host, port: port).roundTrip(request)
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// `count` requests one after another on one connection.
    static func sequential(host: String, port: UInt16, count: Int, _ make: (Int) -> [UInt8]) throws -> Result {
        let c = try Connection(host: host, port: port)
        var lat: [Double] = []
        lat.reserveCapacity(count)
        let requests = (0..<count).map(make)
        let t0 = now()
        for r in requests {
            let s = now()
            let (status, body) = try c.roundTrip(r)
            guard status == 200 else { throw Failure(description: "\(host):\(port) answered \(status): \(String(decoding: body.prefix(200), as: UTF8.self))") }
            lat.append((now() - s) * 1000)
        }
        return summarize(lat, elapsed: now() - t0)
    }

    /// `clients` connections, each sending `each` requests one after another, all at once.
    static func concurrent(host: String, port: UInt16, clients: Int, each: Int, _ make: @escaping @Sendable (Int) -> [UInt8]) throws -> Result {
        let results = UnsafeSendableBox(Array(repeating: [Double](), count: clients))
        let failures = UnsafeSendableBox([String]())
        let lock = NSLock()
        let group = DispatchGroup()
        let t0 = now()
        for k in 0..<clients {
            group.enter()
            let t = Thread {
                defer { group.leave() }
                do {
                    let c = try Connection(host: host, port: port)
                    var lat: [Double] = []
                    lat.reserveCapacity(each)
                    for i in 0..<each {
                        let s = now()
                        let (status, _) = try c.roundTrip(make(k * each + i))
                        guard status == 200 else { throw Failure(description: "status \(status)") }
                        lat.append((now() - s) * 1000)
                    }
                    lock.lock(); results.value[k] = lat; lock.unlock()
                } catch {
                    lock.lock(); failures.value.append("\(error)"); lock.unlock()
                }
            }
            t.stackSize = 1 << 20
            t.start()
        }
        group.wait()
        let elapsed = now() - t0
        if let f = failures.value.first { throw Failure(description: "\(failures.value.count) clients failed: \(f)") }
        return summarize(results.value.flatMap { $0 }, elapsed: elapsed)
    }

    static func summarize(_ lat: [Double], elapsed: Double) -> Result {
        let s = lat.sorted()
        return Result(rate: Double(s.count) / elapsed, p50: s[s.count / 2], p99: s[min(s.count - 1, Int(Double(s.count) * 0.99))])
    }
}

final class UnsafeSendableBox<T>: @unchecked Sendable {
    var value: T
    init(_ v: T) { value = v }
}
