import API
import ArgumentParser
import Foundation
import Keyring
import Logging
import NIOPosix
import Raft
import RaftNIO
import RaftSimulation

/// A state machine that keeps every value (so snapshots are as large as the data written).
final class BenchStore: ReplicatedStateMachine, @unchecked Sendable {
    private var values: [UInt64: [UInt8]] = [:]
    private let lock = NSLock()
    func apply(_ command: [UInt8], index: LogIndex) -> [UInt8] {
        lock.lock(); values[index] = command; lock.unlock()
        return []
    }
    func query(_ request: [UInt8]) throws -> [UInt8] { [] }
    func snapshot() -> [UInt8] {
        lock.lock(); defer { lock.unlock() }
        var out: [UInt8] = []
        out.reserveCapacity(values.values.reduce(0) { $0 + $1.count + 8 })
        for (k, v) in values.sorted(by: { $0.key < $1.key }) {
            withUnsafeBytes(of: k) { out += $0 }
            withUnsafeBytes(of: UInt32(v.count)) { out += $0 }
            out += v
        }
        return out
    }
    func restore(_ snapshot: [UInt8]) {
        var v: [UInt64: [UInt8]] = [:]
        var i = 0
        while i + 12 <= snapshot.count {
            let k = snapshot[i..<i + 8].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            let n = Int(snapshot[i + 8..<i + 12].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
            v[k] = Array(snapshot[i + 12..<min(snapshot.count, i + 12 + n)])
            i += 12 + n
        }
        lock.lock(); values = v; lock.unlock()
    }
}

struct RaftBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raft",
        abstract: "Consensus: commit throughput and latency with fsync, catch-up, failover of real agents; elections in simulation.")

    @Option(help: "Simulated elections (5 servers, 150–300 ms timeouts).") var simSeeds: Int = 1000
    @Option(help: "Sequential writes of --value-bytes.") var writes: Int = 5000
    @Option(help: "Writes for the 64-proposer run.") var concurrentWrites: Int = 40000
    @Option(help: "Bytes per value.") var valueBytes: Int = 256
    @Option(help: "Commands (1 KiB) a stopped follower misses before it restarts.") var catchUp: Int = 50000
    @Option(help: "Leader SIGKILLs of real agents.") var kills: Int = 20
    @Option(help: "Graceful stops (SIGTERM) of the leader.") var stops: Int = 5
    @Option(help: "Directory on the disk to measure (fsync is real there).") var dir: String = "/var/tmp"
    @Option(help: "The caravan binary (default: next to this one).") var binary: String?
    @Flag(help: "Only the simulation.") var simOnly = false
    @Flag(help: "Print every failed write attempt during failover.") var verbose = false

    func run() async throws {
        say("# caravan-bench raft — \(Date())")
        say("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB, data in \(dir)\n")
        simulate()
        guard !simOnly else { return }
        try await inProcess()
        try await failover()
    }

    static func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
    static func pct(_ xs: [Duration], _ p: Double) -> Duration { xs.sorted()[min(xs.count - 1, Int(Double(xs.count) * p))] }
    static func f(_ d: Duration) -> String { String(format: "%.2f ms", ms(d)) }

    func simulate() {
        var times: [Duration] = []
        var failed = 0
        for seed in 0..<UInt64(simSeeds) {
            if let t = RaftSimulator.failoverTime(seed: seed) { times.append(t) } else { failed += 1 }
        }
        say("## elections in simulation (5 servers, 150–300 ms timeouts, leader crashed), \(simSeeds) seeds")
        say("median \(Self.f(Self.pct(times, 0.5))), p99 \(Self.f(Self.pct(times, 0.99))), max \(Self.f(times.max()!)), no leader in \(failed) runs\n")
    }

    // MARK: - In-process group over real TCP and real fsync

    struct Group {
        var nodes: [RaftNode?]
        var configs: [RaftNodeConfiguration]
        var stores: [BenchStore]
    }

    func startGroup(root: String) async throws -> Group {
        let keyring = SharedKeyring(Keyring(primary: try SecretKey(base64: "YmVuY2htYXJrLWtleS1mb3ItY2FyYXZhbi1yYWZ0LjE=")))
        var g = Group(nodes: [], configs: [], stores: [])
        let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
        let servers = (0..<3).map { Configuration.Server(id: ServerID("r\($0)"), address: "127.0.61.\($0 + 2):4681", voter: true) }
        for i in 0..<3 {
            let c = RaftNodeConfiguration(id: ServerID("r\(i)"), bindHost: "127.0.61.\(i + 2)", port: 4681,
                                          directory: "\(root)/r\(i)", keyring: keyring)
            let store = BenchStore()
            let n = try await RaftNode.start(c, stateMachine: store, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
            try await n.bootstrap(Configuration(servers: servers))
            g.nodes.append(n); g.configs.append(c); g.stores.append(store)
        }
        return g
    }

    func leader(_ g: Group) async -> Int? {
        for (i, n) in g.nodes.enumerated() { if let n, await n.status().role == .leader { return i } }
        return nil
    }

    func waitLeader(_ g: Group) async throws -> Int {
        for _ in 0..<500 {
            if let l = await leader(g) { return l }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw ValidationError("no leader")
    }

    func inProcess() async throws {
        let root = "\(dir)/caravan-bench-raft-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        defer { try? FileManager.default.removeItem(atPath: root) }
        var g = try await startGroup(root: root)
        let l = try await waitLeader(g)
        let leader = g.nodes[l]!
        let value = [UInt8](repeating: 0x61, count: valueBytes)
        // Warm up.
        for _ in 0..<100 { _ = try await leader.apply(value) }

        say("## commits through 3 in-process servers (real TCP on loopback, fsync on every server)")
        var lat: [Duration] = []
        let clock = ContinuousClock()
        let (f0, e0) = await leader.walCounters
        let t0 = clock.now
        for _ in 0..<writes {
            let s = clock.now
            _ = try await leader.apply(value)
            lat.append(clock.now - s)
        }
        let seqTime = clock.now - t0
        let (f1, e1) = await leader.walCounters
        say("sequential, \(valueBytes)-byte values: \(Int(Double(writes) / (Self.ms(seqTime) / 1000))) commits/s, p50 \(Self.f(Self.pct(lat, 0.5))), p99 \(Self.f(Self.pct(lat, 0.99))), \(String(format: "%.1f", Double(e1 - e0) / Double(max(1, f1 - f0)))) entries per leader fsync")

        let proposers = 64
        let per = concurrentWrites / proposers
        let t1 = clock.now
        let lats = try await withThrowingTaskGroup(of: [Duration].self) { tg in
            for _ in 0..<proposers {
                tg.addTask {
                    var mine: [Duration] = []
                    for _ in 0..<per {
                        let s = clock.now
                        _ = try await leader.apply(value)
                        mine.append(clock.now - s)
                    }
                    return mine
                }
            }
            var all: [Duration] = []
            for try await x in tg { all += x }
            return all
        }
        let conTime = clock.now - t1
        let (f2, e2) = await leader.walCounters
        say("64 proposers: \(Int(Double(per * proposers) / (Self.ms(conTime) / 1000))) commits/s, p50 \(Self.f(Self.pct(lats, 0.5))), p99 \(Self.f(Self.pct(lats, 0.99))), \(String(format: "%.1f", Double(e2 - e1) / Double(max(1, f2 - f1)))) entries per leader fsync")

        // Catch-up: stop a follower, write while it is down, restart it.
        FileHandle.standardError.write(Data("stopping a follower and writing \(catchUp) commands…\n".utf8))
        let follower = (0..<3).first { $0 != l }!
        await g.nodes[follower]!.shutdown(transferTimeout: .zero)
        g.nodes[follower] = nil
        let kib = [UInt8](repeating: 0x62, count: 1024)
        try await withThrowingTaskGroup(of: Void.self) { tg in
            for _ in 0..<64 {
                tg.addTask { for _ in 0..<(catchUp / 64) { _ = try await leader.apply(kib) } }
            }
            try await tg.waitForAll()
        }
        let target = await leader.status().commit
        FileHandle.standardError.write(Data("restarting the follower; it must apply up to \(target)…\n".utf8))
        let rssBefore = rssKiB(getpid())
        let t2 = clock.now
        let store = BenchStore()
        let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
        let restarted = try await RaftNode.start(g.configs[follower], stateMachine: store, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        g.nodes[follower] = restarted
        var peak = rssBefore
        while await restarted.status().applied < target {
            peak = max(peak, rssKiB(getpid()))
            try await Task.sleep(for: .milliseconds(5))
        }
        let caught = clock.now - t2
        say("catch-up: a follower that missed \(catchUp) × 1 KiB commands applied them all \(String(format: "%.2f s", Self.ms(caught) / 1000)) after restart; process RSS grew \((peak - rssBefore) / 1024) MiB meanwhile")
        say("")
        for n in g.nodes { await n?.shutdown(transferTimeout: .zero) }
    }

    // MARK: - Real agents

    func failover() async throws {
        let bin = binary ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("caravan").path
        let root = "\(dir)/caravan-bench-agents-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { if !verbose { try? FileManager.default.removeItem(atPath: root) } }
        var procs: [Process?] = [nil, nil, nil]
        func ip(_ i: Int) -> String { "127.0.62.\(i + 2)" }
        func start(_ i: Int) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bin)
            p.arguments = ["agent", "--name", "a\(i)", "--bind", ip(i), "--data-dir", "\(root)/a\(i)", "--join", ip(0), "--join", ip(1),
                           "--encrypt", "YmVuY2htYXJrLWtleS1mb3ItY2FyYXZhbi1yYWZ0LjE=", "--log-level", verbose ? "debug" : "warning"]
            if verbose {
                let path = "\(root)/a\(i).log"
                if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
                let h = FileHandle(forWritingAtPath: path)!
                h.seekToEndOfFile()
                p.standardOutput = h
                p.standardError = h
            } else {
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
            }
            try p.run()
            procs[i] = p
        }
        for i in 0..<3 { try start(i) }
        let clients = try (0..<3).map { try CaravanClient(address: "http://\(ip($0)):4680", timeout: .milliseconds(500)) }
        func leaderIndex() async -> Int? {
            for c in clients { if let s = try? await c.status(), let l = s.leader { return Int(l.dropFirst()) } }
            return nil
        }
        func settled() async throws -> Int {
            for _ in 0..<1000 {
                // Every agent follows the same leader and has applied a fresh write: the group is
                // whole again before the next kill.
                if let l = await leaderIndex(), procs[l]?.isRunning == true,
                   let w = try? await clients[l].putVariable("bench/warm", "1") {
                    var ok = true
                    for c in clients {
                        guard let st = try? await c.status(), st.leader == "a\(l)", st.appliedIndex >= w.modifyIndex else { ok = false; break }
                    }
                    if ok { return l }
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            throw ValidationError("agents did not settle")
        }
        func firstWrite(avoiding dead: Int) async -> Duration {
            let clock = ContinuousClock()
            let s = clock.now
            var k = 0
            while true {
                k += 1
                let a = clock.now
                do {
                    _ = try await clients[(dead + 1 + k % 2) % 3].putVariable("bench/k", "\(k)")
                    return clock.now - s
                } catch {
                    if verbose { FileHandle.standardError.write(Data("attempt \(k) via a\((dead + 1 + k % 2) % 3) failed after \(clock.now - a): \(error)\n".utf8)) }
                }
            }
        }
        say("## failover of 3 real agents on loopback (100 ms heartbeat, 1 s election timeout, fsync on)")
        var times: [Duration] = []
        for _ in 0..<kills {
            let l = try await settled()
            let pid = procs[l]!.processIdentifier
            if verbose { FileHandle.standardError.write(Data("killing a\(l) at \(Date())\n".utf8)) }
            kill(pid, SIGKILL)
            times.append(await firstWrite(avoiding: l))
            procs[l]!.waitUntilExit()
            try start(l)
        }
        say("SIGKILL of the leader → first write acknowledged by the new leader (\(kills) kills): p50 \(Self.f(Self.pct(times, 0.5))), p99 \(Self.f(Self.pct(times, 0.99))), max \(Self.f(times.max()!))")
        var graceful: [Duration] = []
        for _ in 0..<stops {
            let l = try await settled()
            kill(procs[l]!.processIdentifier, SIGTERM)
            graceful.append(await firstWrite(avoiding: l))
            procs[l]!.waitUntilExit()
            try start(l)
        }
        say("SIGTERM of the leader (leadership handed over first) → first write acknowledged: p50 \(Self.f(Self.pct(graceful, 0.5))), max \(Self.f(graceful.max()!))")
        for p in procs { if let p, p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        say("")
    }
}

/// Prints a line at once (unbuffered), so progress shows while a long benchmark runs.
func say(_ line: String = "") {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
