import API
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
        var api: CaravanClient { try! CaravanClient(address: "http://\(ip):4680") }
    }

    let subnet: Int
    let root: String
    private(set) var agents: [String: Agent] = [:]

    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["CARAVAN_BIN"] { return b }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent().appendingPathComponent("caravan").path
    }

    init(subnet: Int) throws {
        self.subnet = subnet
        root = NSTemporaryDirectory() + "caravan-e2e-\(subnet)-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw HarnessError("caravan binary not found at \(Self.binary); run `swift build` first or set CARAVAN_BIN")
        }
    }

    deinit {
        for a in agents.values where a.process.isRunning {
            Foundation.kill(a.process.processIdentifier, SIGKILL)
            a.process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: root)
    }

    func ip(_ i: Int) -> String { "127.0.\(subnet).\(i + 1)" }

    /// Starts agent `i` (named `agent-i` on 127.0.subnet.(i+1)), optionally joining others.
    @discardableResult
    func start(_ i: Int, key: String? = nil, join: [Int] = [], extra: [String] = [], name: String? = nil) throws -> Agent {
        let agentName = name ?? "agent-\(i)"
        let dir = root + "/\(agentName)-\(i)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var args = ["agent", "--name", agentName, "--bind", ip(i), "--data-dir", dir + "/data", "--log-level", "debug"]
        if let key { args += ["--encrypt", key] }
        for j in join { args += ["--join", ip(j)] }
        args += extra
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = args
        let logPath = dir + "/agent.log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)!
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        let a = Agent(name: agentName, ip: ip(i), process: p, dataDir: dir + "/data", logPath: logPath)
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
        let r = try Self.run(["members", "--json", "--address", "http://\(ip(i)):4680"])
        guard r.status == 0 else { throw HarnessError("members failed: \(r.stderr)") }
        return try JSONDecoder().decode([MemberView].self, from: Data(r.stdout.utf8))
    }

    func members(_ i: Int) async -> [MemberView]? {
        try? await agent(i).api.members()
    }

    /// Statuses by member name as agent `i` sees them (nil while it does not answer).
    func view(_ i: Int) async -> [String: String]? {
        guard let ms = await members(i) else { return nil }
        return Dictionary(uniqueKeysWithValues: ms.map { ($0.name, $0.status) })
    }

    struct Output { var status: Int32; var stdout: String; var stderr: String }

    /// Runs the CLI to completion.
    static func run(_ args: [String], stdin: String? = nil) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let input = Pipe()
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
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
