import API
import ArgumentParser
import CaravanTesting
import Foundation
import RaftSimulation

/// A fault harness on real agents: five agents in a private network namespace, clients writing
/// and reading variables and registering jobs through random agents, and a nemesis that
/// SIGKILLs and restarts agents (the leader too, and agents right after they wrote a
/// snapshot), freezes them with SIGSTOP and partitions them with nftables. After it heals
/// everything it checks that no acknowledged write was lost, that every key's history is
/// linearizable, that a leader is back within 2 s and every key is readable, and reports the
/// longest stretch without a leader and the failover time after leader SIGKILLs.
struct FaultBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "faults",
        abstract: "Five agents under SIGKILL/restart (after snapshots too), SIGSTOP and partitions; checks no lost writes, linearizable reads, liveness.")

    @Option(help: "Seconds of faults.") var duration: Int = 600
    @Option(help: "Agents (3 or 5).") var agents: Int = 5
    @Option(help: "Concurrent clients.") var clients: Int = 4
    @Option(help: "Seconds between faults (each lasts part of it).") var every: Double = 4
    @Option(help: "Raft entries between snapshots (small, so restarts after a snapshot happen often).") var snapshotEvery: Int = 200
    @Option(help: "Seed of the nemesis and the clients.") var seed: UInt64 = 1
    @Option(help: "The caravan binary (default: next to this one).") var binary: String?
    @Flag(help: "Print the report as one JSON line at the end.") var json = false
    @Flag(help: .hidden) var inNamespace = false

    static func ip(_ i: Int) -> String { "127.0.80.\(i + 2)" }

    func run() async throws {
        // Everything runs inside a fresh network namespace: the partitions never touch the host.
        // A SIGTERM (a test's time limit) goes on to the run inside, which stops its agents.
        guard inNamespace else { try rerunInNamespace() }
        guard [3, 5].contains(agents) else { throw ValidationError("--agents must be 3 or 5") }
        let bin = binary ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("caravan").path
        let cluster = Cluster(binary: bin, count: agents, snapshotEvery: snapshotEvery)
        defer { cluster.stop() }
        // Stopped from outside (a test's time limit): take the agents along.
        signal(SIGTERM, SIG_IGN)
        let onTerm = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        onTerm.setEventHandler {
            cluster.stop()
            Foundation.exit(3)
        }
        onTerm.resume()
        defer { onTerm.cancel() }
        if !json {
            print("# caravan-bench faults — \(Date())")
            print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; \(agents) agents on \(Self.ip(0))–\(Self.ip(agents - 1)) in a private network namespace; \(clients) clients; a fault every \(every) s for \(duration) s; snapshot every \(snapshotEvery) entries; seed \(seed)\n")
        }
        for i in 0..<agents { try cluster.start(i) }
        let run = Run(cluster: cluster, clients: clients, seed: seed)
        guard await run.waitForLeader(within: .seconds(60)) != nil else { throw ValidationError("no leader within 60 s:\n\(cluster.logTails())") }
        let report = try await run.go(duration: .seconds(duration), every: .milliseconds(Int64(every * 1000)))
        if json {
            let data = try JSONEncoder().encode(report)
            print(String(decoding: data, as: UTF8.self))
        } else {
            report.printTable()
        }
        if !report.passed { throw ExitCode(1) }
    }

    // MARK: - The cluster

    final class Cluster: @unchecked Sendable {
        let root = NSTemporaryDirectory() + "caravan-bench-faults-\(getpid())"
        let binary: String
        let count: Int
        let snapshotEvery: Int
        private let lock = NSLock()
        private var processes: [Int: Process] = [:]
        private var stopped: Set<Int> = []

        init(binary: String, count: Int, snapshotEvery: Int) {
            self.binary = binary
            self.count = count
            self.snapshotEvery = snapshotEvery
            try? FileManager.default.removeItem(atPath: root)
        }

        func start(_ i: Int) throws {
            let dir = "\(root)/\(i)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            var args = ["agent", "--name", "agent-\(i)", "--bind", FaultBench.ip(i), "--data-dir", "\(dir)/data",
                        "--encrypt", "ZmF1bHQtaGFybmVzcy1rZXktZm9yLWNhcmF2YW4tMDE=", "--bootstrap-expect", "\(count)",
                        "--raft-snapshot-every", "\(snapshotEvery)", "--log-level", "info", "--enable-raw-exec"]
            for j in 0..<count where j != i { args += ["--join", FaultBench.ip(j)] }
            p.arguments = args
            let log = dir + "/agent.log"
            if !FileManager.default.fileExists(atPath: log) { FileManager.default.createFile(atPath: log, contents: nil) }
            let h = FileHandle(forWritingAtPath: log)!
            h.seekToEndOfFile()
            p.standardOutput = h
            p.standardError = h
            try p.run()
            lock.withLock { processes[i] = p; stopped.remove(i) }
        }

        func kill(_ i: Int) {
            guard let p = lock.withLock({ processes[i] }) else { return }
            if lock.withLock({ stopped.contains(i) }) { Foundation.kill(p.processIdentifier, SIGCONT) }
            Foundation.kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            lock.withLock { processes[i] = nil; stopped.remove(i) }
        }

        func freeze(_ i: Int, _ on: Bool) {
            guard let p = lock.withLock({ processes[i] }) else { return }
            Foundation.kill(p.processIdentifier, on ? SIGSTOP : SIGCONT)
            lock.withLock { if on { stopped.insert(i) } else { stopped.remove(i) } }
        }

        func isRunning(_ i: Int) -> Bool { lock.withLock { processes[i] != nil } }

        /// The newest snapshot index in agent `i`'s data dir.
        func snapshotIndex(_ i: Int) -> UInt64 {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/\(i)/data/raft/snapshots")) ?? []
            return names.filter { $0.hasSuffix(".snap") }.compactMap { UInt64($0.dropLast(5).split(separator: "-").last ?? "") }.max() ?? 0
        }

        /// Cuts `side` off from everyone else (both ways), or heals with an empty side.
        func partition(_ side: Set<Int>) throws {
            let others = (0..<count).filter { !side.contains($0) }
            var rules = ""
            if !side.isEmpty && !others.isEmpty {
                let a = side.sorted().map(FaultBench.ip).joined(separator: ", "), b = others.map(FaultBench.ip).joined(separator: ", ")
                rules = "    ip saddr { \(a) } ip daddr { \(b) } drop\n    ip saddr { \(b) } ip daddr { \(a) } drop\n"
            }
            _ = try? Self.nft(["delete", "table", "inet", "faults"])
            guard !rules.isEmpty else { return }
            try Self.nft(["-f", "-"], stdin: "table inet faults {\n  chain input {\n    type filter hook input priority 0;\n\(rules)  }\n}\n")
        }

        static func nft(_ args: [String], stdin: String? = nil) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") ? "/usr/sbin/nft" : "/sbin/nft")
            p.arguments = args
            let input = Pipe()
            p.standardInput = input
            p.standardError = FileHandle.nullDevice
            try p.run()
            if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
            try input.fileHandleForWriting.close()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else { throw ValidationError("nft \(args.joined(separator: " ")) failed") }
        }

        func logTails() -> String {
            (0..<count).map { i in
                let text = (try? String(contentsOfFile: "\(root)/\(i)/agent.log", encoding: .utf8)) ?? ""
                return "--- agent-\(i)\n" + text.split(separator: "\n").suffix(10).joined(separator: "\n")
            }.joined(separator: "\n")
        }

        func stop() {
            _ = try? partition([])
            for i in 0..<count { kill(i) }
            TaskSweeper.killTasks(under: root)
            try? FileManager.default.removeItem(atPath: root)
        }
    }

    // MARK: - Report

    struct Report: Codable {
        var seconds: Double
        var agents: Int
        var faults: Int
        var faultKinds: [String: Int]
        var restartsAfterSnapshot: Int
        var writesAcknowledged: Int
        var writesUnknown: Int
        var readsAnswered: Int
        var jobsAcknowledged: Int
        var lostWrites: Int
        var lostJobs: Int
        /// Keys whose history of writes and linearizable reads has no legal order.
        var nonLinearizableKeys: [String]
        /// Longest stretch with no leader a majority follows, over the whole run (ms).
        var longestLeaderlessMs: Double
        /// The same, by the fault under way when the stretch began.
        var longestLeaderlessByFault: [String: Double]
        /// After each fault was healed, how long until a leader a majority follows (ms).
        var leaderAfterHealMaxMs: Double
        var leaderAfterHealMedianMs: Double
        /// After the final heal: a leader, and every key read.
        var finalLeaderMs: Double
        var finalKeysReadable: Bool
        /// Agents whose own view of their membership (voter, learner, none) disagrees with the
        /// leader's configuration after the final heal (a restarted voter that forgot it is one).
        var membershipMismatches: [String]
        /// From a leader's SIGKILL to the first acknowledged write through the API (ms).
        var failoverMedianMs: Double
        var failoverMaxMs: Double
        var failovers: Int

        var passed: Bool {
            lostWrites == 0 && lostJobs == 0 && nonLinearizableKeys.isEmpty && finalKeysReadable && finalLeaderMs <= 2000
                && leaderAfterHealMaxMs <= 2000 && membershipMismatches.isEmpty
        }

        func printTable() {
            print("| figure | value |\n|---|---|")
            print("| run | \(Int(seconds)) s, \(agents) agents, \(faults) faults (\(faultKinds.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))), \(restartsAfterSnapshot) restarts right after a snapshot |")
            print("| acknowledged writes | \(writesAcknowledged) (+\(writesUnknown) with unknown outcome), \(jobsAcknowledged) job registrations |")
            print("| linearizable reads answered | \(readsAnswered) |")
            print("| lost writes | \(lostWrites) (jobs: \(lostJobs)) |")
            print("| stale reads (keys not linearizable) | \(nonLinearizableKeys.count)\(nonLinearizableKeys.isEmpty ? "" : " \(nonLinearizableKeys)") |")
            print(String(format: "| longest stretch without a leader | %.0f ms |", longestLeaderlessMs))
            print("| … by the fault under way | \(longestLeaderlessByFault.sorted { $0.key < $1.key }.map { String(format: "%@ %.0f ms", $0.key, $0.value) }.joined(separator: ", ")) |")
            print(String(format: "| leader after a fault is healed | median %.0f ms, max %.0f ms |", leaderAfterHealMedianMs, leaderAfterHealMaxMs))
            print(String(format: "| after the final heal | leader in %.0f ms, every key readable: %@ |", finalLeaderMs, finalKeysReadable ? "yes" : "NO"))
            print("| members that disagree with the leader about their membership | \(membershipMismatches.isEmpty ? "none" : membershipMismatches.joined(separator: ", ")) |")
            print(String(format: "| failover: leader SIGKILL → first acknowledged API write | median %.0f ms, max %.0f ms (n=%d) |", failoverMedianMs, failoverMaxMs, failovers))
            print("| verdict | \(passed ? "pass" : "FAIL") |")
        }
    }

    // MARK: - The run

    actor History {
        var ops: [RaftSimulator.Operation] = []
        var jobs: [String] = []
        func begin(_ kind: RaftSimulator.Operation.Kind, at t: Duration) -> Int {
            ops.append(RaftSimulator.Operation(kind: kind, call: t))
            return ops.count - 1
        }
        func end(_ i: Int, at t: Duration?, value: String? = nil, failed: Bool = false) {
            ops[i].ret = t
            ops[i].readValue = value
            ops[i].failed = failed
        }
        func acknowledgedJob(_ id: String) { jobs.append(id) }
    }

    final class Run: @unchecked Sendable {
        let cluster: Cluster
        let clients: Int
        let history = History()
        let start = ContinuousClock.now
        var rng: SeededRandom
        let keys = (0..<24).map { "fault/k\($0)" }
        private let lock = NSLock()
        private var stopClients = false
        /// (from, to) of stretches without a leader, from the monitor.
        private var leaderless: [(Duration, Duration)] = []

        init(cluster: Cluster, clients: Int, seed: UInt64) {
            self.cluster = cluster
            self.clients = clients
            self.rng = SeededRandom(seed: seed)
        }

        var now: Duration { ContinuousClock.now - start }

        func api(_ i: Int, timeout: Duration = .seconds(3)) -> CaravanClient {
            var c = try! CaravanClient(address: "http://\(FaultBench.ip(i)):4680", timeout: timeout)
            c.retryWrites = .seconds(4)
            return c
        }

        /// The leader a majority of the agents follow right now, if any.
        func leader() async -> String? {
            let views = await withTaskGroup(of: StatusView?.self) { group in
                for i in 0..<cluster.count where cluster.isRunning(i) {
                    group.addTask { try? await self.api(i, timeout: .milliseconds(250)).status() }
                }
                var out: [StatusView] = []
                for await v in group { if let v { out.append(v) } }
                return out
            }
            let leaders = views.filter { $0.role == "leader" }.map(\.node)
            for l in Set(leaders) where views.filter({ $0.leader == l }).count > cluster.count / 2 { return l }
            return nil
        }

        func waitForLeader(within: Duration) async -> Duration? {
            let t0 = ContinuousClock.now
            while ContinuousClock.now - t0 < within {
                if await leader() != nil { return ContinuousClock.now - t0 }
                try? await Task.sleep(for: .milliseconds(25))
            }
            return nil
        }

        func leaderIndex() async -> Int? {
            guard let name = await leader() else { return nil }
            return Int(name.dropFirst("agent-".count))
        }

        // MARK: clients

        func client(_ n: Int, seed: UInt64) async {
            var rng = SeededRandom(seed: seed)
            var seq = 0
            // One client (one write-id sequence) talking to every agent, as a long-lived user of
            // the API would: its retries across leader changes are deduplicated by the cluster.
            let ids = WriteID()
            let apis = (0..<cluster.count).map { i -> CaravanClient in
                var c = api(i)
                c.writeIDs = ids
                return c
            }
            while !lock.withLock({ stopClients }) {
                let via = Int.random(in: 0..<cluster.count, using: &rng)
                let key = keys[Int.random(in: 0..<keys.count, using: &rng)]
                let roll = Double.random(in: 0..<1, using: &rng)
                let api = apis[via]
                if roll < 0.45 {
                    seq += 1
                    let value = "c\(n)-\(seq)"
                    let op = await history.begin(.write(key, value), at: now)
                    do {
                        _ = try await api.putVariable(key, value)
                        await history.end(op, at: now)
                    } catch {
                        // Refused for bad input: never applied. Anything else may have been.
                        await history.end(op, at: nil, failed: error.isBadInput)
                    }
                } else if roll < 0.9 {
                    let op = await history.begin(.read(key), at: now)
                    do {
                        let v = try await api.variable(key)
                        await history.end(op, at: now, value: v.value)
                    } catch let e where e.code == .api(status: 404, code: "variable_not_found") {
                        await history.end(op, at: now, value: nil)
                    } catch {
                        await history.end(op, at: nil, failed: true)
                    }
                } else {
                    seq += 1
                    let id = "fault-job-\(n)-\(seq)"
                    let text = "id: \(id)\ngroups:\n  - name: g\n    count: 0\n    tasks: [{name: t, driver: raw_exec, config: {command: /bin/true}}]\n"
                    if (try? await api.registerJob(text)) != nil { await history.acknowledgedJob(id) }
                }
                if Int.random(in: 0..<10, using: &rng) == 0 { try? await Task.sleep(for: .milliseconds(5)) }
            }
        }

        // MARK: monitor

        func monitor() async {
            var since: Duration?
            while !lock.withLock({ stopClients }) {
                let t = now
                if await leader() == nil {
                    if since == nil { since = t }
                } else if let s = since {
                    lock.withLock { leaderless.append((s, t)) }
                    since = nil
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
            if let s = since { lock.withLock { leaderless.append((s, now)) } }
        }

        // MARK: nemesis

        enum Fault: String, CaseIterable { case killRestart = "kill+restart", killLeader = "kill leader", killAfterSnapshot = "kill after snapshot",
                                           freeze = "SIGSTOP", partitionMinority = "partition minority", isolateLeader = "isolate leader" }

        func go(duration: Duration, every: Duration) async throws -> Report {
            let clientTasks = (0..<clients).map { n in Task { await self.client(n, seed: rng.next()) } }
            let monitorTask = Task { await self.monitor() }
            var faults: [String: Int] = [:]
            var healTimes: [Double] = []
            var failovers: [Double] = []
            var afterSnapshot = 0
            /// Each fault: its kind, when it began and when a leader was back after it.
            var windows: [(String, Duration, Duration)] = []
            let end = ContinuousClock.now + duration
            var round = 0
            var cycle = Fault.allCases
            while ContinuousClock.now < end {
                try await Task.sleep(for: every / 2)
                // Every kind once per cycle, in a random order, so even a short run has them all.
                if round % Fault.allCases.count == 0 { cycle = Fault.allCases.shuffled(using: &rng) }
                let fault = cycle[round % Fault.allCases.count]
                round += 1
                let hold = Duration.milliseconds(Int64.random(in: 800...2500, using: &rng))
                let began = now
                let victim = Int.random(in: 0..<cluster.count, using: &rng)
                switch fault {
                case .killRestart:
                    cluster.kill(victim)
                    try await Task.sleep(for: hold)
                    try cluster.start(victim)
                case .killLeader:
                    guard let l = await leaderIndex() else { continue }
                    let t0 = ContinuousClock.now
                    cluster.kill(l)
                    // Failover as a client sees it: the first write acknowledged through another agent.
                    let probe = (l + 1) % cluster.count
                    var c = api(probe, timeout: .seconds(2))
                    c.retryWrites = .seconds(10)
                    if (try? await c.putVariable("fault/probe", "p\(round)")) != nil {
                        failovers.append(Self.ms(ContinuousClock.now - t0))
                    }
                    try await Task.sleep(for: hold / 2)
                    try cluster.start(l)
                case .killAfterSnapshot:
                    // Wait (up to one fault period) for any agent to write a new snapshot, then kill it at once.
                    let before = (0..<cluster.count).map(cluster.snapshotIndex)
                    let until = ContinuousClock.now + every
                    var hit: Int?
                    while hit == nil && ContinuousClock.now < until {
                        hit = (0..<cluster.count).first { cluster.isRunning($0) && cluster.snapshotIndex($0) > before[$0] }
                        if hit == nil { try await Task.sleep(for: .milliseconds(10)) }
                    }
                    guard let h = hit else { continue }
                    cluster.kill(h)
                    afterSnapshot += 1
                    try await Task.sleep(for: hold / 2)
                    try cluster.start(h)
                case .freeze:
                    let target = Bool.random(using: &rng) ? (await leaderIndex() ?? victim) : victim
                    cluster.freeze(target, true)
                    try await Task.sleep(for: hold)
                    cluster.freeze(target, false)
                case .partitionMinority:
                    var side: Set<Int> = [victim]
                    if cluster.count == 5 && Bool.random(using: &rng) { side.insert((victim + 1 + Int.random(in: 0..<4, using: &rng)) % 5) }
                    try cluster.partition(side)
                    try await Task.sleep(for: hold)
                    try cluster.partition([])
                case .isolateLeader:
                    guard let l = await leaderIndex() else { continue }
                    try cluster.partition([l])
                    try await Task.sleep(for: hold)
                    try cluster.partition([])
                }
                faults[fault.rawValue, default: 0] += 1
                if let t = await waitForLeader(within: .seconds(10)) { healTimes.append(Self.ms(t)) } else { healTimes.append(10_000) }
                windows.append((fault.rawValue, began, now))
            }
            // Heal everything: a leader within 2 s (clients still running), then stop the clients
            // and read every key.
            try cluster.partition([])
            for i in 0..<cluster.count {
                if cluster.isRunning(i) { cluster.freeze(i, false) } else { try cluster.start(i) }
            }
            let finalLeader = Self.ms(await waitForLeader(within: .seconds(30)) ?? .seconds(30))
            lock.withLock { stopClients = true }
            for t in clientTasks { await t.value }
            await monitorTask.value
            var readable = true
            let readsUntil = ContinuousClock.now + .seconds(30)
            for key in keys {
                let op = await history.begin(.read(key), at: now)
                var done = false
                for attempt in 0..<50 where !done && ContinuousClock.now < readsUntil {
                    do {
                        let v = try await api((attempt + 1) % cluster.count).variable(key)
                        await history.end(op, at: now, value: v.value)
                        done = true
                    } catch let e where e.code == .api(status: 404, code: "variable_not_found") {
                        await history.end(op, at: now, value: nil)
                        done = true
                    } catch {
                        try? await Task.sleep(for: .milliseconds(100))
                    }
                }
                if !done { readable = false; await history.end(op, at: nil, failed: true) }
            }
            let mismatches = await membershipMismatches()
            let ops = await history.ops
            let jobs = await history.jobs
            var registered: Set<String> = []
            for attempt in 0..<20 {
                if let all = try? await api(attempt % cluster.count, timeout: .seconds(5)).jobs() { registered = Set(all.map(\.id)); break }
                try? await Task.sleep(for: .milliseconds(100))
            }
            let bad = Self.nonLinearizable(ops, keys: keys)
            let stretches = lock.withLock { leaderless }
            let longest = stretches.map { Self.ms($0.1 - $0.0) }.max() ?? 0
            // Which fault each leaderless stretch began under (the last one begun before it).
            var byKind: [String: Double] = [:]
            for (from, to) in stretches {
                let kind = windows.last { $0.1 <= from }?.0 ?? "start"
                byKind[kind] = max(byKind[kind] ?? 0, Self.ms(to - from))
            }
            healTimes.sort()
            failovers.sort()
            return Report(seconds: Self.ms(now) / 1000, agents: cluster.count, faults: faults.values.reduce(0, +), faultKinds: faults,
                          restartsAfterSnapshot: afterSnapshot,
                          writesAcknowledged: ops.filter { if case .write = $0.kind { $0.ret != nil } else { false } }.count,
                          writesUnknown: ops.filter { if case .write = $0.kind { $0.ret == nil && !$0.failed } else { false } }.count,
                          readsAnswered: ops.filter { if case .read = $0.kind { $0.ret != nil } else { false } }.count,
                          jobsAcknowledged: jobs.count, lostWrites: Self.lostWrites(ops), lostJobs: jobs.filter { !registered.contains($0) }.count,
                          nonLinearizableKeys: bad, longestLeaderlessMs: longest, longestLeaderlessByFault: byKind,
                          leaderAfterHealMaxMs: healTimes.last ?? 0, leaderAfterHealMedianMs: healTimes.isEmpty ? 0 : healTimes[healTimes.count / 2],
                          finalLeaderMs: finalLeader, finalKeysReadable: readable, membershipMismatches: mismatches,
                          failoverMedianMs: failovers.isEmpty ? 0 : failovers[failovers.count / 2], failoverMaxMs: failovers.last ?? 0,
                          failovers: failovers.count)
        }

        /// Each agent's own membership against the leader's configuration, given up to 15 s to
        /// agree (a restarted agent may be a learner being promoted for a moment).
        func membershipMismatches() async -> [String] {
            var last: [String] = ["no answer"]
            let until = ContinuousClock.now + .seconds(15)
            while ContinuousClock.now < until {
                if let l = await leaderIndex(), let config = try? await api(l).raftConfiguration() {
                    var wrong: [String] = []
                    for i in 0..<cluster.count {
                        let name = "agent-\(i)"
                        let expected = config.servers.first { $0.id == name }.map { $0.voter ? "voter" : "learner" } ?? "none"
                        let seen = (try? await api(i).status())?.membership ?? "no answer"
                        if seen != expected { wrong.append("\(name): \(seen), leader says \(expected)") }
                    }
                    last = wrong
                    if wrong.isEmpty { return [] }
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
            return last
        }

        static func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }

        /// Keys whose history has no linearization.
        static func nonLinearizable(_ ops: [RaftSimulator.Operation], keys: [String]) -> [String] {
            var bad: [String] = []
            var remaining = ops
            while let k = LinearizabilityChecker.check(remaining) {
                bad.append(k)
                remaining.removeAll { if case .write(let key, _) = $0.kind { key == k } else if case .read(let key) = $0.kind { key == k } else { false } }
            }
            return bad
        }

        /// Acknowledged writes the final read does not reflect: the final value was written by a
        /// write that returned before the acknowledged one was even called.
        static func lostWrites(_ ops: [RaftSimulator.Operation]) -> Int {
            var lost = 0
            var finals: [String: RaftSimulator.Operation] = [:]
            for o in ops where o.ret != nil { if case .read(let k) = o.kind { finals[k] = o } }
            for (k, final) in finals {
                let writes = ops.filter { if case .write(let key, _) = $0.kind { key == k && !$0.failed } else { false } }
                let source = writes.first { if case .write(_, let v) = $0.kind { v == final.readValue } else { false } }
                for w in writes where w.ret != nil && w.ret! < final.call {
                    if final.readValue == nil { lost += 1; continue }
                    if let s = source, let sr = s.ret, sr < w.call { lost += 1 }
                }
            }
            return lost
        }
    }
}
