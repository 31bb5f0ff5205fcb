import API
import Foundation
import Testing

/// Real agents forming the Raft group by themselves, losing leaders and voters, and keeping
/// every acknowledged write.
@Suite struct RaftEndToEndTests {
    /// Waits until every listed agent names the same leader and returns its index.
    static func agreedLeader(_ c: LocalCluster, _ indices: [Int], within: Duration = .seconds(20), not excluded: Int? = nil) async throws -> Int {
        var leader: Int?
        try await c.eventually(within: within, every: .milliseconds(100), "agents \(indices) agree on a leader") {
            var seen: [Int?] = []
            for i in indices { seen.append(await c.leaderIndexAsync(via: i)) }
            guard let first = seen.first, let l = first, l != excluded, seen.allSatisfy({ $0 == l }) else { return false }
            leader = l
            return true
        }
        return leader!
    }

    static func voters(_ c: LocalCluster, via i: Int) -> Set<String>? {
        c.peers(i).map { Set($0.filter(\.voter).map(\.id)) }
    }

    @Test func threeAgentsElectALeaderThenSurviveTheDeathOfTheLeaderAndOfAVoter() async throws {
        let c = try await LocalCluster(subnet: 48)
        let grace = ["--raft-dead-grace", "2"]
        try c.start(0, extra: grace)
        for i in 1...3 { try c.start(i, join: [0], extra: grace) }
        let leader = try await Self.agreedLeader(c, [0, 1, 2, 3])
        // Three of the four become voters by themselves (normally the first three by name; an
        // agent slow to show up in gossip may be left out); the fourth is the spare.
        var voterNames: Set<String> = []
        try await c.eventually(within: .seconds(10), "three voters are chosen automatically") {
            voterNames = Self.voters(c, via: 0) ?? []
            return voterNames.count == 3
        }
        let spare = (0...3).first { !voterNames.contains("agent-\($0)") }!
        #expect(voterNames.contains("agent-\(leader)"))

        // A write through any agent (here the one outside the group) is committed.
        #expect(c.put(spare, "app/before", "1"))
        for i in 0...3 { #expect(c.get(i, "app/before") == "1") }
        // A stale read on the agent outside the group is answered by any member.
        #expect(c.get(spare, "app/before", stale: true) == "1")

        // SIGKILL the leader: a new one takes writes, nothing acknowledged is lost.
        c.kill(leader)
        let alive = (0...3).filter { $0 != leader }
        let start = ContinuousClock.now
        try await c.eventually(within: .seconds(10), every: .milliseconds(20), "a write succeeds after the leader died") {
            c.put(alive[0], "app/after", "2")
        }
        print("first write acknowledged \(ContinuousClock.now - start) after the leader's SIGKILL")
        let newLeader = try await Self.agreedLeader(c, alive)
        #expect(newLeader != leader)
        for i in alive {
            #expect(c.get(i, "app/before") == "1")
            #expect(c.get(i, "app/after") == "2")
        }

        // The dead voter is replaced by the spare agent once the grace period is over.
        let deadName = "agent-\(leader)"
        try await c.eventually(within: .seconds(30), every: .milliseconds(200), "the spare agent replaces the dead voter") {
            guard let v = Self.voters(c, via: alive[0]) else { return false }
            return v.count == 3 && !v.contains(deadName) && v.contains("agent-\(spare)")
        }
        #expect(c.log(newLeader).contains("removing a dead Raft member"))

        // The killed agent restarts on its data dir: it is no longer a voter and still serves
        // reads and writes by forwarding.
        try c.start(leader, join: [alive[0]], extra: grace)
        try await c.eventually(within: .seconds(20), every: .milliseconds(200), "the restarted agent reaches the group") {
            c.put(leader, "app/restarted", "3") && c.get(leader, "app/restarted") == "3"
        }
        #expect(c.get(leader, "app/before") == "1")
        #expect(Self.voters(c, via: leader)?.contains(deadName) == false)
    }

    @Test func aLeaderStoppedWithSIGTERMHandsOverFirst() async throws {
        let c = try await LocalCluster(subnet: 49)
        try c.start(0)
        for i in 1...2 { try c.start(i, join: [0]) }
        let leader = try await Self.agreedLeader(c, [0, 1, 2])
        #expect(c.put(leader, "k", "v"))
        let alive = (0...2).filter { $0 != leader }
        // What each follower had logged before (the first election may have had pre-candidates).
        var logged: [Int: Int] = [:]
        for i in alive { logged[i] = c.log(i).utf8.count }
        c.kill(leader, signal: SIGTERM)
        let newLeader = try await Self.agreedLeader(c, alive, within: .seconds(5))
        #expect(newLeader != leader)
        #expect(c.log(leader).contains("leaving the cluster"))
        // No election timeout was needed: the successor was told to take over.
        let since = String(decoding: c.log(newLeader).utf8.dropFirst(logged[newLeader] ?? 0), as: UTF8.self)
        #expect(!since.contains("pre-candidate"), "\(since)")
        #expect(c.get(alive[0], "k") == "v")
        // A follower stops promptly too: nothing it waits on (its blocking read of its
        // allocations on the leader) holds the shutdown back.
        let start = ContinuousClock.now
        c.kill(alive.first { $0 != newLeader }!, signal: SIGTERM)
        let took = ContinuousClock.now - start
        #expect(took < .milliseconds(4500), "SIGTERM → exit took \(took) (it waited out a 5 s read before)")
    }

    @Test func operatorCommandsShowAndMoveLeadership() async throws {
        let c = try await LocalCluster(subnet: 50)
        try c.start(0)
        for i in 1...2 { try c.start(i, join: [0]) }
        let leader = try await Self.agreedLeader(c, [0, 1, 2])
        let peers = try #require(c.peers(0))
        #expect(peers.count == 3)
        #expect(peers.filter(\.leader).map(\.id) == ["agent-\(leader)"])
        let target = (0...2).first { $0 != leader }!
        let r = try c.cli(0, ["operator", "raft", "transfer-leader", "agent-\(target)"])
        #expect(r.status == 0, "\(r.stderr) \(c.diagnostics())")
        #expect(r.stdout.contains("agent-\(target)"))
        _ = try await Self.agreedLeader(c, [0, 1, 2])
        #expect(c.leaderIndex(via: 0) == target)

        // Bad input is refused clearly.
        let bad = try c.cli(0, ["operator", "raft", "transfer-leader", "nobody"])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("nobody is not a voter"))
        let badPath = try c.cli(0, ["var", "put", "a/b$c", "x"])
        #expect(badPath.status == 2)
        #expect(badPath.stderr.contains("variable path"))
        let status = try c.cli(1, ["status"])
        #expect(status.stdout.contains("agent-\(target)"))
    }

    /// Writes `count` variables through agent `via`'s HTTP API, eight at a time; returns the paths
    /// written (every one acknowledged).
    static func writeMany(_ c: LocalCluster, via: Int, prefix: String, count: Int) async throws -> [String] {
        let api = c.agent(via).api
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<8 {
                group.addTask {
                    for i in stride(from: lane, to: count, by: 8) {
                        var attempts = 0
                        while true {
                            do { _ = try await api.putVariable("\(prefix)/\(i)", "v\(i)"); break } catch {
                                attempts += 1
                                if attempts > 50 { throw error }
                                try await Task.sleep(for: .milliseconds(100))
                            }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        return (0..<count).map { "\(prefix)/\($0)" }
    }

    /// The newest snapshot's index in agent `i`'s data dir (0 when none).
    static func snapshotIndex(_ c: LocalCluster, _ i: Int) -> UInt64 {
        let dir = c.agent(i).dataDir + "/raft/snapshots"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasSuffix(".snap") }.compactMap { n in UInt64(n.dropLast(5).split(separator: "-").last ?? "") }.max() ?? 0
    }

    /// The reproduction of a cluster that bricked itself: the log is compacted several times,
    /// then followers and leaders are SIGKILLed and restarted in turn. Every restarted agent must
    /// come back as a voter, every round must elect a leader, and nothing written is lost.
    @Test func aCompactedClusterSurvivesRollingRestartsAndLosingItsLeader() async throws {
        let c = try await LocalCluster(subnet: 76)
        let extra = ["--raft-snapshot-every", "100"]
        try c.start(0, extra: extra)
        for i in 1...2 { try c.start(i, join: [0], extra: extra) }
        var leader = try await Self.agreedLeader(c, [0, 1, 2])
        var written = try await Self.writeMany(c, via: leader, prefix: "r0", count: 450)
        try await c.eventually(within: .seconds(10), "every agent snapshotted at least twice") {
            (0...2).allSatisfy { Self.snapshotIndex(c, $0) >= 300 }
        }
        for round in 1...3 {
            let follower = (0...2).first { $0 != leader }!
            for victim in [follower, leader] {
                c.kill(victim)
                try c.start(victim, join: (0...2).filter { $0 != victim }, extra: extra)
                try await c.eventually(within: .seconds(15), "round \(round): agent-\(victim) is back as a voter") {
                    await c.statusAsync(victim)?.membership == "voter"
                }
                leader = try await Self.agreedLeader(c, [0, 1, 2])
                written += try await Self.writeMany(c, via: victim, prefix: "r\(round)-\(victim)", count: 120)
            }
        }
        for i in 0...2 {
            let s = try #require(await c.statusAsync(i))
            #expect(s.membership == "voter", "agent-\(i): \(s)")
        }
        // Every acknowledged write is there, read linearizably through each agent in turn.
        let api = c.agent(leader).api
        for (n, path) in written.enumerated() where n % 7 == 0 {
            let v = try await c.agent(n % 3).api.variable(path)
            #expect(v.value == "v\(path.split(separator: "/").last!)", "\(path)")
        }
        let all = try await api.variables(prefix: "r")
        #expect(all.count == written.count)
    }

    /// SIGTERM ends every long request at once — blocking reads, log follows (local and relayed
    /// through another agent), interactive exec — each with an end the client can tell from a
    /// broken connection, and the agent exits within 2 s (it waited out a 90 s read before).
    @Test func sigtermEndsEveryLongRequestAtOnceAndExitsWithinTwoSeconds() async throws {
        let c = try await LocalCluster(subnet: 77)
        try c.start(0)
        for i in 1...2 { try c.start(i, join: [0]) }
        _ = try await Self.agreedLeader(c, [0, 1, 2])
        let job = """
        id: ticker
        groups:
          - name: g
            tasks:
              - name: t
                driver: raw_exec
                config: {command: /bin/sh, args: ["-c", "while true; do echo tick; sleep 0.2; done"]}
                resources: {cpu: 50m, memory: 32Mi}
        """
        let (a, node) = try await c.runJob(job, id: "ticker")
        let other = (0...2).first { $0 != node }!
        let nodeAPI = c.agent(node).api, otherAPI = c.agent(other).api

        let (_, index) = try await nodeAPI.blocking("/v1/jobs", index: 0, wait: .zero, as: [JobStatusView].self)
        let blocking = Task { try await nodeAPI.blocking("/v1/jobs", index: index, wait: .seconds(90), as: [JobStatusView].self) }
        let local = try await nodeAPI.followLogs(allocation: a.id, task: "t", stderr: false, offset: 0)
        let relayed = try await otherAPI.followLogs(allocation: a.id, task: "t", stderr: false, offset: 0)
        let (upload, _) = AsyncStream<[UInt8]>.makeStream()
        let exec = try await nodeAPI.execStream(allocation: a.id, task: "t", command: ["/bin/sleep", "60"], tty: false, upload: upload)
        /// Drains a stream; returns the error it ended with (nil for a plain end).
        func end(of s: CaravanClient.Stream) -> Task<(any Error)?, Never> {
            Task {
                do { for try await _ in s.body {} } catch { return error }
                return nil
            }
        }
        let localEnd = end(of: local), relayedEnd = end(of: relayed)
        let execFrames = Task { () -> [ExecFrame] in
            var parser = ExecFrame.Parser(), frames: [ExecFrame] = []
            do { for try await piece in exec.body { frames += (try? parser.feed(piece)) ?? [] } } catch {}
            return frames
        }
        // A client that starts an upload and never finishes it.
        let stalled = Process()
        stalled.executableURL = URL(fileURLWithPath: "/bin/sh")
        stalled.arguments = ["-c", "sleep 30 | curl -s -X PUT -H 'Content-Length: 100000' --data-binary @- http://\(c.ip(node)):4680/v1/var/stalled"]
        stalled.standardOutput = FileHandle.nullDevice
        stalled.standardError = FileHandle.nullDevice
        try stalled.run()
        defer { if stalled.isRunning { stalled.terminate() } }
        try await Task.sleep(for: .milliseconds(500))
        let start = ContinuousClock.now
        c.kill(node, signal: SIGTERM)
        let took = ContinuousClock.now - start
        #expect(took < .seconds(2), "SIGTERM → exit took \(took)")

        let answered = try await blocking.value
        #expect(answered.1 >= index, "the blocking read is answered with the state as it was")
        let e1 = await localEnd.value as? ClientError, e2 = await relayedEnd.value as? ClientError
        #expect(e1?.isShutdown == true, "local follow ended with \(String(describing: e1))")
        #expect(e2?.isShutdown == true, "relayed follow ended with \(String(describing: e2))")
        let frames = await execFrames.value
        #expect(frames.contains { if case .error(let why) = $0 { why.contains("shutting down") } else { false } }, "exec frames: \(frames)")
        #expect(c.log(node).contains("shutting down: ending blocking reads"))
        #expect(c.log(node).contains("leaving the cluster"))
        #expect(c.agent(node).process.terminationStatus == 0)
    }
}
