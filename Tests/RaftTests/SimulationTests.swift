import CaravanTesting
import Testing
@testable import Raft
import RaftSimulation

/// Whole Raft groups in virtual time with faults; every run checks the safety properties as it
/// goes (one leader per term, commit never moves back, one applied sequence) and the client
/// history for linearizability. Seeds are in the test arguments and in every failure message.
@Suite struct SimulationTests {
    static func expectSafe(_ sim: inout RaftSimulator, seed: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
        sim.checkLogMatching()
        #expect(sim.violations.isEmpty, "seed \(seed): \(sim.violations.prefix(3))", sourceLocation: sourceLocation)
        let bad = LinearizabilityChecker.check(sim.history)
        #expect(bad == nil, "seed \(seed): history of key \(bad ?? "") is not linearizable", sourceLocation: sourceLocation)
    }

    @Test(arguments: [3, 5])
    func aGroupElectsALeaderAndEveryServerAppliesTheSameWrites(size: Int) {
        var sim = RaftSimulator(servers: size, seed: UInt64(size))
        sim.run(for: .seconds(2)) { $0.leader != nil }
        let leader = sim.leader!
        for i in 0..<50 { sim.write("k\(i % 5)", "v\(i)", via: leader) }
        sim.run(for: .seconds(2))
        for id in sim.ids { #expect(sim.servers[id]!.kv["k4"] == "v49", "\(id)") }
        Self.expectSafe(&sim, seed: UInt64(size))
    }

    /// Many seeds of random faults: loss, duplication, reordering, partitions, crashes with
    /// restarts, and clients writing and reading through random servers throughout.
    @Test(arguments: 0..<40)
    func randomFaultsNeverBreakSafety(batch: Int) {
        for seed in UInt64(batch * 25)..<UInt64(batch * 25 + 25) {
            var rng = SeededRandom(seed: seed)
            let size = rng.chance(0.5) ? 3 : 5
            // Half the seeds with the agent's narrower election spread (half the timeout).
            var sim = RaftSimulator(servers: size, seed: seed,
                                    settings: RaftSettings(heartbeatTicks: 5, electionTicks: 50, electionSpreadTicks: seed % 2 == 0 ? 50 : 25),
                                    faults: .init(loss: 0.05, duplication: 0.02, latency: .microseconds(100) ... .milliseconds(4)))
            sim.snapshotEvery = 30
            var value = 0
            for _ in 0..<40 {
                let r = Double.random(in: 0..<1, using: &rng)
                let id = sim.ids[Int.random(in: 0..<size, using: &rng)]
                if r < 0.05 {
                    sim.crash(id)
                } else if r < 0.15 {
                    sim.restart(id)
                } else if r < 0.2 {
                    var side: Set<ServerID> = []
                    for x in sim.ids where rng.chance(0.4) { side.insert(x) }
                    sim.network.partition([side])
                } else if r < 0.25 {
                    sim.network.heal()
                }
                for _ in 0..<Int.random(in: 0...4, using: &rng) {
                    let via = sim.leader.flatMap { rng.chance(0.7) ? $0 : nil } ?? sim.ids[Int.random(in: 0..<size, using: &rng)]
                    value += 1
                    let key = "k\(Int.random(in: 0..<3, using: &rng))"
                    if rng.chance(0.5) { sim.write(key, "v\(value)", via: via) } else { sim.read(key, via: via) }
                }
                sim.run(for: .milliseconds(Int64.random(in: 10...300, using: &rng)))
            }
            // Heal everything, and restart every server from its disk (snapshots taken above):
            // the group must elect a leader within a bound and commit a last write everywhere.
            sim.network.heal()
            for id in sim.ids { sim.crash(id) }
            for id in sim.ids { sim.restart(id) }
            let healed = sim.now
            sim.run(for: .seconds(3)) { $0.leader != nil }
            #expect(sim.leader != nil && sim.now - healed < Self.livenessBound, "seed \(seed): no leader within \(Self.livenessBound) of healing")
            for id in sim.ids {
                #expect(sim.core(id)!.configuration.isVoter(id), "seed \(seed): \(id) forgot it is a voter after restarting")
            }
            if let l = sim.leader { sim.write("final", "yes", via: l) }
            sim.run(for: .seconds(2))
            #expect(sim.leader != nil, "seed \(seed): no leader after healing")
            for id in sim.ids {
                #expect(sim.servers[id]!.kv["final"] == "yes", "seed \(seed): \(id) did not apply the final write")
            }
            Self.expectSafe(&sim, seed: seed)
        }
    }

    /// Election timeouts are 100–200 ms here: a healed group has a leader well within this.
    static let livenessBound: Duration = .seconds(1)

    /// Rolling restarts after the log was compacted several times, then losing the leader: every
    /// round must elect a leader within the bound and keep every write (a restarted member once
    /// came back from its snapshot without its configuration, and the group went leaderless).
    @Test(arguments: [3, 5])
    func rollingRestartsAfterSnapshotsKeepTheGroupLive(size: Int) {
        let seed = UInt64(90 + size)
        var sim = RaftSimulator(servers: size, seed: seed)
        sim.snapshotEvery = 25
        sim.run(for: .seconds(2)) { $0.leader != nil }
        var written = 0
        for round in 0..<6 {
            guard let leader = sim.leader else { Issue.record("round \(round): no leader"); break }
            for _ in 0..<60 {
                written += 1
                sim.write("k\(written % 4)", "v\(written)", via: leader)
            }
            sim.run(for: .milliseconds(300))
            // Restart one follower, then the leader, each from its disk.
            let follower = sim.ids.first { $0 != leader && sim.core($0) != nil }!
            for victim in [follower, leader] {
                sim.crash(victim)
                sim.run(for: .milliseconds(50))
                sim.restart(victim)
                let start = sim.now
                sim.run(for: .seconds(3)) { $0.leader != nil && $0.core($0.leader!)!.commitIndex >= $0.core($0.leader!)!.lastIndex }
                #expect(sim.leader != nil && sim.now - start < Self.livenessBound, "round \(round): no leader within \(Self.livenessBound) after restarting \(victim)")
                #expect(sim.core(victim)!.configuration.isVoter(victim), "round \(round): \(victim) forgot it is a voter")
            }
        }
        guard let l = sim.leader else { Issue.record("no leader at the end"); return }
        sim.write("last", "yes", via: l)
        sim.run(for: .seconds(1))
        for id in sim.ids { #expect(sim.servers[id]!.kv["last"] == "yes", "\(id)") }
        Self.expectSafe(&sim, seed: seed)
    }

    @Test func aServerReturningFromAPartitionDoesNotDeposeTheLeader() {
        var sim = RaftSimulator(servers: 5, seed: 77)
        sim.run(for: .seconds(2)) { $0.leader != nil }
        let leader = sim.leader!, term = sim.core(leader)!.term
        let loner = sim.ids.first { $0 != leader }!
        sim.network.partition([[loner]])
        sim.run(for: .seconds(5))
        sim.network.heal()
        sim.run(for: .seconds(2))
        #expect(sim.leader == leader)
        #expect(sim.core(leader)!.term == term, "PreVote must keep the term unchanged")
        Self.expectSafe(&sim, seed: 77)
    }

    @Test func aLeaderCutOffFromItsQuorumStepsDownAndItsWritesNeverCommit() {
        var sim = RaftSimulator(servers: 5, seed: 78)
        sim.run(for: .seconds(2)) { $0.leader != nil }
        let old = sim.leader!
        sim.network.partition([[old]])
        sim.write("x", "lost", via: old)  // accepted by the cut-off leader, can never commit
        let timeout = sim.tick * (sim.settings.electionTicks * 2 + 2)
        sim.run(for: timeout)
        #expect(sim.core(old)!.role != .leader, "the old leader must step down within an election timeout")
        let new = sim.leader!
        #expect(new != old)
        sim.write("x", "kept", via: new)
        sim.network.heal()
        sim.run(for: .seconds(2))
        for id in sim.ids { #expect(sim.servers[id]!.kv["x"] == "kept") }
        Self.expectSafe(&sim, seed: 78)
    }

    @Test func aLearnerCatchesUpFromASnapshotIsPromotedAndAVoterIsRemoved() {
        var sim = RaftSimulator(servers: 3, seed: 79)
        sim.snapshotEvery = 20
        sim.run(for: .seconds(2)) { $0.leader != nil }
        var leader = sim.leader!
        for i in 0..<200 { sim.write("k\(i % 7)", "v\(i)", via: leader) }
        sim.run(for: .seconds(1))
        let spare = sim.addSpare("s4")
        let ok1 = sim.propose(.addLearner(spare, address: "sim:s4"), via: leader)
        #expect(ok1)
        sim.run(for: .seconds(1))
        #expect(sim.servers[spare]!.kv == sim.servers[leader]!.kv, "the learner must catch up (from a snapshot)")
        #expect(sim.core(spare)!.configuration.learners == [spare])
        let ok2 = sim.propose(.addVoter(spare, address: "sim:s4"), via: leader)
        #expect(ok2)
        sim.run(for: .milliseconds(500))
        let victim = sim.ids.first { $0 != leader }!
        sim.crash(victim)
        let ok3 = sim.propose(.remove(victim), via: leader)
        #expect(ok3)
        sim.run(for: .milliseconds(500))
        leader = sim.leader!
        #expect(Set(sim.core(leader)!.configuration.voters) == Set(sim.ids.filter { $0 != victim } + [spare]))
        sim.write("after", "change", via: leader)
        sim.run(for: .milliseconds(500))
        #expect(sim.servers[spare]!.kv["after"] == "change")
        Self.expectSafe(&sim, seed: 79)
    }

    @Test func aLeaderThatRemovesItselfHandsOver() {
        var sim = RaftSimulator(servers: 3, seed: 80)
        sim.run(for: .seconds(2)) { $0.leader != nil }
        let old = sim.leader!
        sim.run(for: .milliseconds(100))
        let ok4 = sim.propose(.remove(old), via: old)
        #expect(ok4)
        sim.run(for: .seconds(1))
        let new = sim.leader
        #expect(new != nil && new != old)
        #expect(sim.core(new!)!.configuration.voters.count == 2)
        Self.expectSafe(&sim, seed: 80)
    }

    @Test func transferLeadershipMovesTheLeaderQuickly() {
        var sim = RaftSimulator(servers: 3, seed: 81)
        sim.run(for: .seconds(2)) { $0.leader != nil }
        let old = sim.leader!
        let target = sim.ids.first { $0 != old }!
        let ok5 = sim.transferLeadership(from: old, to: target)
        #expect(ok5)
        let start = sim.now
        sim.run(for: .seconds(1)) { $0.leader == target }
        #expect(sim.leader == target)
        #expect(sim.now - start < .milliseconds(50))
    }

    /// The Raft paper's figure: 5 servers, election timeouts 150–300 ms, the leader crashes;
    /// how long until a new one is elected, over many seeds.
    @Test func electionsAfterALeaderCrashAreFast() {
        var times: [Duration] = []
        for seed in 0..<UInt64(200) {
            let t = RaftSimulator.failoverTime(seed: seed)
            #expect(t != nil, "seed \(seed): no new leader")
            if let t { times.append(t) }
        }
        times.sort()
        let median = times[times.count / 2], worst = times.last!
        #expect(median < .milliseconds(300), "median \(median)")
        #expect(worst <= .milliseconds(513), "max \(worst)")
    }
}
