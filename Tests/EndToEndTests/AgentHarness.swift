import API
import CaravanTesting
import Foundation
import Testing

/// Real `caravan agent` processes on loopback addresses, for end-to-end tests.
///
/// Each test uses its own 127.0.N.x range so suites can run in parallel. Agents log to files
/// under a temporary directory that is removed when the cluster is torn down.
final class LocalCluster: @unchecked Sendable {
    struct Agent {
        var name: String
        var ip: String
        var process: Process
        var dataDir: String
        var logPath: String
        var tls: TLSFiles? = nil
        var api: CaravanClient {
            guard let tls else { return try! CaravanClient(address: "http://\(ip):4680") }
            return try! CaravanClient(address: "https://\(ip):4680", tls: ClientTLS(caFile: tls.ca, certFile: tls.cert, keyFile: tls.key))
        }
    }

    /// The files a client of a cluster with TLS uses: its CA, a client certificate and key.
    struct TLSFiles {
        var ca: String
        var cert: String
        var key: String
    }

    /// Set when the agents serve https: `cli` and `api` use it.
    var tls: TLSFiles?

    let subnet: Int
    let root: String
    private(set) var agents: [String: Agent] = [:]
    /// A private network namespace the agents run in (held open by a `sleep` process).
    private(set) var namespace: Process?

    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["CARAVAN_BIN"] { return b }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent().appendingPathComponent("caravan").path
    }

    /// How many of ``ClusterSlots``' slots this cluster holds until it goes.
    let weight: Int

    /// Waits for a slot first: only a few clusters run at once (debug agents idle at a few
    /// percent of a core each, and the suite shares two cores with everything else).
    convenience init(subnet: Int, weight: Int = 1) async throws {
        await ClusterSlots.shared.acquire(weight, who: "cluster \(subnet)")
        do { try self.init(setUp: subnet, weight: weight) } catch {
            await ClusterSlots.shared.release(weight, who: "cluster \(subnet)")
            throw error
        }
    }

    private init(setUp subnet: Int, weight: Int) throws {
        self.weight = weight
        self.subnet = subnet
        root = NSTemporaryDirectory() + "caravan-e2e-\(subnet)-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw HarnessError("caravan binary not found at \(Self.binary); run `swift build` first or set CARAVAN_BIN")
        }
    }

    /// Set once ``close()`` gave the slot back.
    private var closed = false

    /// Tears the cluster down now and gives its slot back before returning: a test that goes on
    /// to make another cluster calls this first (holding one slot while waiting for the next
    /// can wait forever behind a test that needs them all).
    func close() async {
        tearDown()
        guard !closed else { return }
        closed = true
        await ClusterSlots.shared.release(weight, who: "cluster \(subnet)")
    }

    private func tearDown() {
        for a in agents.values where a.process.isRunning {
            Foundation.kill(a.process.processIdentifier, SIGKILL)
            a.process.waitUntilExit()
        }
        if let ns = namespace, ns.isRunning {
            Foundation.kill(ns.processIdentifier, SIGKILL)
            ns.waitUntilExit()
        }
        Self.killTasks(under: root)
        try? FileManager.default.removeItem(atPath: root)
    }

    deinit {
        tearDown()
        guard !closed else { return }
        let (w, who) = (weight, "cluster \(subnet)")
        Task { await ClusterSlots.shared.release(w, who: who) }
    }

    /// Tasks outlive their agents by design; a test's cluster takes its tasks with it.
    static func killTasks(under root: String) { TaskSweeper.killTasks(under: root) }

    func ip(_ i: Int) -> String { "127.0.\(subnet).\(i + 1)" }

    /// Moves this cluster into a fresh network namespace (loopback up, MTU 1500): faults injected
    /// there with nftables never touch the host. Call before starting agents.
    func isolate() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.tool("unshare"))
        // The holder exits when this test process does, and never holds the test's output open.
        p.arguments = ["-n", "sh", "-c", "while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        namespace = p
        // /proc/PID/ns/net exists at once, but names the host's namespace until unshare(2) has
        // run: wait until it differs from ours, or we would reconfigure the host.
        let mine = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        try eventuallySync("the namespace is created") {
            guard let theirs = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p.processIdentifier)/ns/net") else {
                return false
            }
            return theirs != mine
        }
        try inNamespace(["ip", "link", "set", "lo", "up", "mtu", "1500"])
    }

    /// The absolute path of a system tool, whatever PATH the tests run with.
    static func tool(_ name: String) -> String {
        for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return name
    }

    /// Runs a command inside the namespace and fails on a non-zero exit.
    @discardableResult
    func inNamespace(_ command: [String], stdin: String? = nil, allowFailure: Bool = false) throws -> Output {
        guard let ns = namespace else { throw HarnessError("not isolated") }
        var command = command
        if let first = command.first, !first.hasPrefix("/") { command[0] = Self.tool(first) }
        let r = try Self.run(["-t", "\(ns.processIdentifier)", "-n", "--"] + command, stdin: stdin, executable: Self.tool("nsenter"))
        guard r.status == 0 || allowFailure else { throw HarnessError("\(command.joined(separator: " ")) failed: \(r.stderr)") }
        return r
    }

    /// Replaces the namespace's fault rules (nftables syntax of the chain body; empty clears).
    func faults(_ rules: [String]) throws {
        let body = rules.map { "    \($0)\n" }.joined()
        let text = "table inet faults {\n  chain input {\n    type filter hook input priority 0;\n\(body)  }\n}\n"
        _ = try? inNamespace(["nft", "delete", "table", "inet", "faults"])
        try inNamespace(["nft", "-f", "-"], stdin: text)
    }

    /// Registers a job through agent `i` and waits until an allocation of it runs; returns it
    /// and the index of the agent running it.
    func runJob(_ text: String, id: String, via i: Int = 0, within: Duration = .seconds(20)) async throws -> (alloc: AllocationView, node: Int) {
        _ = try await agent(i).api.registerJob(text)
        var alloc: AllocationView?
        try await eventually(within: within, "an allocation of \(id) runs") {
            alloc = try? await self.agent(i).api.allocations().first { $0.jobID == id && $0.clientStatus == "running" }
            return alloc != nil
        }
        let a = try #require(alloc)
        let node = try #require(agents.values.first { $0.name == a.node }.flatMap { ag in (0..<agents.count).first { ip($0) == ag.ip } })
        return (a, node)
    }

    func eventuallySync(_ what: String, _ cond: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline { if cond() { return }; usleep(10_000) }
        throw HarnessError("timed out: \(what)")
    }

    /// The cluster key agents get unless a test names another (an agent refuses to start
    /// without one outside --dev).
    static let clusterKey = "dGVzdC1jbHVzdGVyLWtleS1mb3ItY2FyYXZhbi0wMDE="

    /// Starts agent `i` (named `agent-i` on 127.0.subnet.(i+1)), optionally joining others.
    @discardableResult
    /// Agents offer raw_exec (most tests' jobs are plain processes) unless `rawExec` is false.
    func start(_ i: Int, key: String? = LocalCluster.clusterKey, join: [Int] = [], extra: [String] = [], name: String? = nil,
               rawExec: Bool = true) throws -> Agent {
        let agentName = name ?? "agent-\(i)"
        let dir = root + "/\(agentName)-\(i)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var args = ["agent", "--name", agentName, "--bind", ip(i), "--data-dir", dir + "/data", "--log-level", "debug"]
        if let key { args += ["--encrypt", key] }
        if rawExec { args.append("--enable-raw-exec") }
        for j in join { args += ["--join", ip(j)] }
        args += extra
        let p = Process()
        if let ns = namespace {
            p.executableURL = URL(fileURLWithPath: Self.tool("nsenter"))
            p.arguments = ["-t", "\(ns.processIdentifier)", "-n", "--", Self.binary] + args
        } else {
            p.executableURL = URL(fileURLWithPath: Self.binary)
            p.arguments = args
        }
        let logPath = dir + "/agent.log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)!
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        let a = Agent(name: agentName, ip: ip(i), process: p, dataDir: dir + "/data", logPath: logPath, tls: tls)
        agents[agentName] = a
        return a
    }

    func agent(_ i: Int) -> Agent { agents.values.first { $0.ip == ip(i) }! }

    func kill(_ i: Int, signal: Int32 = SIGKILL) {
        let a = agent(i)
        Foundation.kill(a.process.processIdentifier, signal)
        if signal == SIGKILL || signal == SIGTERM { a.process.waitUntilExit() }
    }

    func log(_ i: Int) -> String { (try? String(contentsOfFile: agent(i).logPath, encoding: .utf8)) ?? "" }

    /// What `caravan members --json` prints against agent `i`, decoded.
    func membersViaCLI(_ i: Int) throws -> [MemberView] {
        let args = ["members", "--json", "--address", "http://\(ip(i)):4680"]
        let r = namespace == nil ? try Self.run(args) : try inNamespace([Self.binary] + args)
        guard r.status == 0 else { throw HarnessError("members failed: \(r.stderr)") }
        return try JSONDecoder().decode([MemberView].self, from: Data(r.stdout.utf8))
    }

    func members(_ i: Int) async -> [MemberView]? {
        if namespace != nil { return try? membersViaCLI(i) }
        return try? await agent(i).api.members()
    }

    /// Statuses by member name as agent `i` sees them (nil while it does not answer).
    func view(_ i: Int) async -> [String: String]? {
        guard let ms = await members(i) else { return nil }
        return Dictionary(uniqueKeysWithValues: ms.map { ($0.name, $0.status) })
    }

    /// True when each agent in `indices` lists exactly `alive` members as alive.
    func converged(_ indices: [Int], alive: Int) async -> Bool {
        for i in indices {
            guard let v = await view(i), v.values.filter({ $0 == "alive" }).count == alive else { return false }
        }
        return true
    }

    /// True when each agent in `indices` shows `name` with `status`.
    func all(_ indices: [Int], see name: String, as status: String) async -> Bool {
        for i in indices {
            guard let v = await view(i), v[name] == status else { return false }
        }
        return true
    }

    /// The last lines of every agent's log, for a failure message.
    func diagnostics(lines: Int = 12) -> String {
        agents.values.sorted { $0.name < $1.name }.map { a in
            let text = (try? String(contentsOfFile: a.logPath, encoding: .utf8)) ?? ""
            let tail = text.split(separator: "\n").suffix(lines).joined(separator: "\n")
            return "--- \(a.name) (running: \(a.process.isRunning))\n\(tail)"
        }.joined(separator: "\n")
    }

    /// Like the free `eventually`, but prints the agents' logs when it times out.
    @discardableResult
    func eventually(within timeout: Duration, every poll: Duration = .milliseconds(50), _ what: String,
                    _ condition: () async throws -> Bool) async throws -> Duration {
        do {
            return try await EndToEndTests.eventually(within: timeout, every: poll, what, condition)
        } catch {
            print(diagnostics())
            throw error
        }
    }

    struct Output { var status: Int32; var stdout: String; var stderr: String }

    /// Runs the CLI to completion.
    ///
    /// Its output goes to files, not pipes: an executor test in this same process may spawn a
    /// task at the same moment, and a task that inherits a pipe's write end keeps the pipe open
    /// (the read never sees its end). A file needs no end.
    /// The same, awaited without holding a thread (long runs must not take one of the test
    /// pool's few threads for their whole length).
    /// Past `limit` the process gets SIGTERM (and SIGKILL 10 s later).
    static func runAsync(_ args: [String], executable: String? = nil, limit: Duration = .seconds(600)) async throws -> Output {
        let base = NSTemporaryDirectory() + "caravan-run-\(getpid())-\(UUID().uuidString)"
        let fm = FileManager.default
        fm.createFile(atPath: base + ".out", contents: nil)
        fm.createFile(atPath: base + ".err", contents: nil)
        defer { for f in [".out", ".err"] { try? fm.removeItem(atPath: base + f) } }
        let out = FileHandle(forWritingAtPath: base + ".out")!, err = FileHandle(forWritingAtPath: base + ".err")!
        defer { try? out.close(); try? err.close() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable ?? binary)
        p.arguments = args
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        let status: Int32 = try await withCheckedThrowingContinuation { c in
            p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
            do { try p.run() } catch { p.terminationHandler = nil; c.resume(throwing: error); return }
            let pid = p.processIdentifier, seconds = Int(limit.components.seconds)
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(seconds)) { [p] in
                guard p.isRunning else { return }
                Foundation.kill(pid, SIGTERM)
                DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(10)) { if p.isRunning { Foundation.kill(pid, SIGKILL) } }
            }
        }
        let o = fm.contents(atPath: base + ".out") ?? Data(), e = fm.contents(atPath: base + ".err") ?? Data()
        return Output(status: status, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    static func run(_ args: [String], stdin: String? = nil, executable: String? = nil, environment: [String: String] = [:]) throws -> Output {
        let base = NSTemporaryDirectory() + "caravan-run-\(getpid())-\(UUID().uuidString)"
        let fm = FileManager.default
        fm.createFile(atPath: base + ".out", contents: nil)
        fm.createFile(atPath: base + ".err", contents: nil)
        fm.createFile(atPath: base + ".in", contents: Data((stdin ?? "").utf8))
        defer { for f in [".out", ".err", ".in"] { try? fm.removeItem(atPath: base + f) } }
        let out = FileHandle(forWritingAtPath: base + ".out")!, err = FileHandle(forWritingAtPath: base + ".err")!
        let input = FileHandle(forReadingAtPath: base + ".in")!
        defer { try? out.close(); try? err.close(); try? input.close() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable ?? binary)
        p.arguments = args
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
        p.standardOutput = out
        p.standardError = err
        p.standardInput = input
        try p.run()
        p.waitUntilExit()
        let o = fm.contents(atPath: base + ".out") ?? Data(), e = fm.contents(atPath: base + ".err") ?? Data()
        return Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}

/// At most ``limit`` slots' worth of agent clusters at once across the whole test run (a
/// cluster takes one, the fault harness's five agents three); the others wait their turn
/// without holding a thread.
actor ClusterSlots {
    static let shared = ClusterSlots(limit: 3)
    let limit: Int
    private var used = 0
    private var waiters: [(weight: Int, continuation: CheckedContinuation<Void, Never>)] = []

    init(limit: Int) { self.limit = limit }

    /// Who holds slots now (printed when a wait is long, to tell which test did not let go).
    private var holders: [String: Int] = [:]

    func acquire(_ weight: Int, who: String) async {
        let w = min(weight, limit)
        if waiters.isEmpty && used + w <= limit {
            used += w
            holders[who, default: 0] += w
            return
        }
        let waiting = Task {
            try await Task.sleep(for: .seconds(120))
            await self.report(who)
        }
        await withCheckedContinuation { waiters.append((w, $0)) }
        waiting.cancel()
        holders[who, default: 0] += w
    }

    private func report(_ who: String) {
        print("ClusterSlots: \(who) has waited 120 s; held by \(holders), \(waiters.count) waiting")
    }

    func release(_ weight: Int, who: String) {
        holders[who, default: 0] -= min(weight, limit)
        if holders[who] == 0 { holders[who] = nil }
        used -= min(weight, limit)
        while let next = waiters.first, used + next.weight <= limit {
            waiters.removeFirst()
            used += next.weight
            next.continuation.resume()
        }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Polls a condition until it holds or the deadline passes; returns how long it took.
@discardableResult
func eventually(within timeout: Duration, every poll: Duration = .milliseconds(50), _ what: String,
                _ condition: () async throws -> Bool) async throws -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    while clock.now - start < timeout {
        if try await condition() { return clock.now - start }
        try await Task.sleep(for: poll)
    }
    if try await condition() { return clock.now - start }
    throw HarnessError("timed out after \(timeout): \(what)")
}

extension LocalCluster {
    /// Runs `caravan ARGS --address http://<agent i>:4680` (inside the namespace if isolated).
    func cli(_ i: Int, _ args: [String], stdin: String? = nil, token: String? = nil) throws -> Output {
        let full = args + ["--address", "\(tls == nil ? "http" : "https")://\(ip(i)):4680"]
        var env = token.map { ["CARAVAN_TOKEN": $0] } ?? [:]
        if let tls { env.merge(["CARAVAN_CACERT": tls.ca, "CARAVAN_CLIENT_CERT": tls.cert, "CARAVAN_CLIENT_KEY": tls.key]) { a, _ in a } }
        return namespace == nil ? try Self.run(full, stdin: stdin, environment: env) : try inNamespace([Self.binary] + full, allowFailure: true)
    }

    func status(_ i: Int) -> StatusView? {
        guard let r = try? cli(i, ["status", "--json"]), r.status == 0 else { return nil }
        return try? JSONDecoder().decode(StatusView.self, from: Data(r.stdout.utf8))
    }

    func peers(_ i: Int) -> [RaftPeerView]? {
        guard let r = try? cli(i, ["operator", "raft", "peers", "--json"]), r.status == 0 else { return nil }
        return try? JSONDecoder().decode([RaftPeerView].self, from: Data(r.stdout.utf8))
    }

    /// Writes a variable through agent `i`; true when the write was acknowledged.
    func put(_ i: Int, _ path: String, _ value: String) -> Bool {
        (try? cli(i, ["var", "put", path, value]))?.status == 0
    }

    /// Reads a variable through agent `i` (linearizable unless `stale`); nil if absent or failed.
    func get(_ i: Int, _ path: String, stale: Bool = false) -> String? {
        guard let r = try? cli(i, ["var", "get", path] + (stale ? ["--stale"] : [])), r.status == 0 else { return nil }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `GET /v1/status` of agent `i` through the API (the CLI's view inside a namespace), without
    /// holding a thread of the test pool.
    func statusAsync(_ i: Int) async -> StatusView? {
        if namespace != nil { return status(i) }
        return try? await agent(i).api.status()
    }

    /// Which agent index leads, as agent `i` reports it.
    func leaderIndexAsync(via i: Int) async -> Int? {
        guard let name = await statusAsync(i)?.leader else { return nil }
        return agents.values.first { $0.name == name }.flatMap { a in (0..<256).first { ip($0) == a.ip } }
    }

    /// Which agent index leads, as agent `i` reports it.
    func leaderIndex(via i: Int) -> Int? {
        guard let name = status(i)?.leader else { return nil }
        return agents.values.first { $0.name == name }.flatMap { a in (0..<256).first { ip($0) == a.ip } }
    }
}
