import Testing
@testable import Raft

/// The core driven by hand: one message at a time, no network.
@Suite struct CoreTests {
    static func cluster(_ n: Int, settings: RaftSettings = RaftSettings(heartbeatTicks: 1, electionTicks: 10)) -> [ServerID: RaftCore] {
        let ids = (1...n).map { ServerID("n\($0)") }
        let config = Configuration(servers: ids.map { .init(id: $0, address: "a-\($0)", voter: true) })
        var out: [ServerID: RaftCore] = [:]
        for (i, id) in ids.enumerated() {
            out[id] = RaftCore(id: id, settings: settings, seed: UInt64(i + 1), hardState: HardState(term: 1),
                               entries: [RaftCore.bootstrapEntry(config)])
        }
        return out
    }

    /// Delivers every message until the cluster is quiet — a leader that still owes followers
    /// the commit index is given the tick it sends it at — and returns what each server applied.
    @discardableResult
    static func settle(_ c: inout [ServerID: RaftCore], drop: (Message) -> Bool = { _ in false }) -> [ServerID: [Entry]] {
        var applied: [ServerID: [Entry]] = [:]
        var queue: [Message] = []
        for _ in 0..<10_000 {
            for id in c.keys.sorted() where c[id]!.hasReady {
                let r = c[id]!.ready()
                queue += r.messages.filter { !drop($0) }
                applied[id, default: []] += r.committed
                c[id]!.advance(r)
            }
            if queue.isEmpty {
                if c.values.contains(where: \.hasReady) { continue }
                let owing = c.keys.filter { c[$0]!.commitNoticeDue }
                if owing.isEmpty { break }
                for id in owing { c[id]!.tick() }
                continue
            }
            let m = queue.removeFirst()
            c[m.to]?.step(m)
        }
        return applied
    }

    static func elect(_ c: inout [ServerID: RaftCore], _ id: ServerID) {
        for _ in 0..<30 where c[id]!.role != .leader {
            c[id]!.tick()
            settle(&c)
        }
    }

    static func failure(_ body: () throws(RaftCore.ProposalError) -> Void) -> RaftCore.ProposalError? {
        do { try body() } catch { return error }
        return nil
    }

    @Test func aSingleServerElectsItselfAndCommitsAtOnce() throws {
        var c = Self.cluster(1)
        Self.elect(&c, "n1")
        #expect(c["n1"]!.role == .leader)
        #expect(c["n1"]!.term == 2)
        let (index, _) = try c["n1"]!.propose([1, 2, 3])
        let applied = Self.settle(&c)
        #expect(applied["n1"]!.last?.index == index)
        #expect(applied["n1"]!.last?.data == [1, 2, 3])
    }

    @Test func threeServersElectOneLeaderAndReplicate() throws {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        #expect(c["n1"]!.role == .leader)
        #expect(c["n2"]!.leader == "n1" && c["n3"]!.leader == "n1")
        try c["n1"]!.propose(Array("hello".utf8))
        let applied = Self.settle(&c)
        for id in ["n1", "n2", "n3"] as [ServerID] {
            #expect(applied[id]?.contains { $0.data == Array("hello".utf8) } == true, "\(id) did not apply")
        }
    }

    /// Sequential writes: each follower gets one append per entry — the next append carries the
    /// previous entry's commit index — not an append and a commit notice; a follower left
    /// behind on the commit index when writes stop is told at the leader's next tick.
    @Test func commitIndexesRideOnTheNextAppendAndIdleFollowersHearAtTheNextTick() throws {
        var c = Self.cluster(3, settings: RaftSettings(heartbeatTicks: 1_000, electionTicks: 10))
        Self.elect(&c, "n1")
        Self.settle(&c)
        var sent: [Message] = []
        func deliver() {
            var queue: [Message] = []
            repeat {
                for id in c.keys.sorted() where c[id]!.hasReady {
                    let r = c[id]!.ready()
                    sent += r.messages
                    queue += r.messages
                    c[id]!.advance(r)
                }
                if !queue.isEmpty { let m = queue.removeFirst(); c[m.to]!.step(m) }
            } while !queue.isEmpty || c.values.contains(where: \.hasReady)
        }
        for i in 0..<10 {
            try c["n1"]!.propose([UInt8(i)])
            deliver()
        }
        let appends = sent.filter { if case .append = $0.body { true } else { false } }
        #expect(appends.count == 20, "one append per entry and follower: \(appends.count)")
        #expect(c["n1"]!.commitNoticeDue)
        #expect(c["n2"]!.commitIndex < c["n1"]!.commitIndex)
        sent = []
        c["n1"]!.tick()
        deliver()
        let notices = sent.filter { if case .append(_, _, let entries, let commit) = $0.body { entries.isEmpty && commit == c["n1"]!.commitIndex } else { false } }
        #expect(Set(notices.map(\.to)) == ["n2", "n3"])
        #expect(c["n2"]!.commitIndex == c["n1"]!.commitIndex && c["n3"]!.commitIndex == c["n1"]!.commitIndex)
    }

    @Test func aFollowerRefusesWritesAndNamesTheLeader() {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        let failed1 = Self.failure { () throws(RaftCore.ProposalError) in try c["n2"]!.propose([1]) }
        #expect(failed1 == RaftCore.ProposalError.notLeader("n1"))
    }

    @Test func preVoteKeepsAReturningServerFromRaisingTheTerm() {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        let term = c["n1"]!.term
        // n3 is cut off and times out many times; with PreVote its term never moves.
        for _ in 0..<100 {
            c["n3"]!.tick()
            c["n3"]!.advance(c["n3"]!.ready())  // its messages are lost
        }
        #expect(c["n3"]!.term == term)
        #expect(c["n3"]!.role == .preCandidate)
        settle(&c)
        c["n1"]!.tick()
        Self.settle(&c)
        #expect(c["n1"]!.role == .leader && c["n1"]!.term == term)
        #expect(c["n3"]!.role == .follower)
    }

    private func settle(_ c: inout [ServerID: RaftCore]) { Self.settle(&c) }

    @Test func aLeaderThatHearsNoQuorumStepsDown() {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        for _ in 0..<10 {
            c["n1"]!.tick()
            c["n1"]!.advance(c["n1"]!.ready())  // its messages are lost
        }
        #expect(c["n1"]!.role == .follower)
    }

    @Test func readIndexWaitsForAQuorumHeartbeat() throws {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        settle(&c)
        try c["n1"]!.readIndex(context: 42)
        var r = c["n1"]!.ready()
        #expect(r.readStates.isEmpty, "a read must not be answered before a quorum confirms leadership")
        let heartbeats = r.messages.filter { if case .heartbeat = $0.body { true } else { false } }
        #expect(heartbeats.count == 2)
        c["n1"]!.advance(r)
        c["n2"]!.step(heartbeats.first { $0.to == "n2" }!)
        let answer = c["n2"]!.ready()
        c["n2"]!.advance(answer)
        for m in answer.messages { c["n1"]!.step(m) }
        r = c["n1"]!.ready()
        #expect(r.readStates == [ReadState(context: 42, index: c["n1"]!.commitIndex)])
    }

    @Test func aFollowerForwardsReadsToItsLeader() throws {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        settle(&c)
        try c["n2"]!.readIndex(context: 7)
        var got: [ReadState] = []
        var queue: [Message] = []
        for _ in 0..<100 {
            for id in c.keys.sorted() where c[id]!.hasReady {
                let r = c[id]!.ready()
                if id == "n2" { got += r.readStates }
                queue += r.messages
                c[id]!.advance(r)
            }
            if queue.isEmpty { break }
            let m = queue.removeFirst()
            c[m.to]!.step(m)
        }
        #expect(got.map(\.context) == [7])
    }

    @Test func leadershipTransferHandsOverWithoutAnElectionTimeout() throws {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        settle(&c)
        try c["n1"]!.transferLeadership(to: "n3")
        settle(&c)
        #expect(c["n3"]!.role == .leader)
        #expect(c["n1"]!.role == .follower)
        let failed2 = Self.failure { () throws(RaftCore.ProposalError) in try c["n1"]!.propose([1]) }
        #expect(failed2 == RaftCore.ProposalError.notLeader("n3"))
    }

    @Test func configurationChangesAreOneAtATime() throws {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        settle(&c)
        try c["n1"]!.proposeChange(.addLearner("n4", address: "a-n4"))
        let failed3 = Self.failure { () throws(RaftCore.ProposalError) in try c["n1"]!.proposeChange(.addLearner("n5", address: "a-n5")) }
        #expect(failed3 == RaftCore.ProposalError.configurationChangePending)
        #expect(c["n1"]!.configuration.learners == ["n4"])
        let failed4 = Self.failure { () throws(RaftCore.ProposalError) in try c["n1"]!.proposeChange(.remove("nobody")) }
        #expect(failed4 != nil)
    }

    @Test func theLastVoterCannotBeRemoved() throws {
        var c = Self.cluster(1)
        Self.elect(&c, "n1")
        Self.settle(&c)
        let failed5 = Self.failure { () throws(RaftCore.ProposalError) in try c["n1"]!.proposeChange(.remove("n1")) }
        #expect(failed5 == RaftCore.ProposalError.invalidChange("the last voter cannot be removed"))
    }

    @Test func aRestartedServerKeepsItsTermVoteAndLog() throws {
        let config = Configuration(servers: [.init(id: "n1", address: "a", voter: true)])
        var entries = [RaftCore.bootstrapEntry(config)]
        var hs = HardState(term: 1)
        var n1 = RaftCore(id: "n1", settings: RaftSettings(heartbeatTicks: 1, electionTicks: 10), seed: 3, hardState: hs, entries: entries)
        func drain() {
            while n1.hasReady {
                let r = n1.ready()
                if let first = r.entries.first { entries.removeAll { $0.index >= first.index }; entries += r.entries }
                if let h = r.hardState { hs = h }
                n1.advance(r)
            }
        }
        for _ in 0..<30 where n1.role != .leader { n1.tick(); drain() }
        try n1.propose([9])
        drain()
        let again = RaftCore(id: "n1", seed: 9, hardState: hs, entries: entries)
        #expect(again.term == n1.term)
        #expect(again.vote == "n1")
        #expect(again.lastIndex == n1.lastIndex)
        #expect(again.commitIndex == n1.commitIndex)
        #expect(again.role == .follower)
    }

    /// Compacting twice (entries kept behind each snapshot) must keep the configuration in every
    /// snapshot's metadata: a member restarted from such a snapshot still knows it is a voter.
    /// (The first compaction once read the configuration after dropping entries, so the second
    /// snapshot carried an empty configuration and a restarted voter never campaigned again.)
    @Test(arguments: [0, 5, 20])
    func snapshotsKeepTheConfigurationAcrossRepeatedCompactions(keep: Int) throws {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        Self.settle(&c)
        try c["n1"]!.proposeChange(.addLearner("n4", address: "a-n4"))
        Self.settle(&c)
        let expected = c["n1"]!.configuration
        #expect(expected.learners == ["n4"])
        var metas: [SnapshotMetadata] = []
        for round in 0..<3 {
            for i in 0..<40 { try c["n1"]!.propose([UInt8(round), UInt8(i)]) }
            Self.settle(&c)
            let applied = c["n1"]!.appliedIndex
            for id in c.keys.sorted() {
                let compacted = c[id]!.compact(index: applied, keep: keep)
                let meta = try #require(compacted, "\(id) round \(round)")
                #expect(meta.configuration == expected, "\(id) round \(round): the snapshot's configuration")
                metas.append(meta)
            }
        }
        // Restart n2 from its newest snapshot alone: it is a voter and campaigns.
        let meta = metas[metas.count - 2]
        let n2 = RaftCore(id: "n2", settings: RaftSettings(heartbeatTicks: 1, electionTicks: 10), seed: 5,
                          hardState: HardState(term: c["n2"]!.term, commit: meta.index), snapshot: meta)
        #expect(n2.configuration == expected)
        #expect(n2.configuration.isVoter("n2"))
    }

    /// A snapshot an earlier version wrote without its configuration: a voter restarted from it
    /// knows no group and never campaigns. A leader whose own configuration is known only from
    /// its snapshot restates it as its first entry, and the forgetful voter learns it again.
    @Test func aLeaderRestatesASnapshotOnlyConfigurationSoAForgetfulVoterRecovers() throws {
        var c = Self.cluster(3)
        Self.elect(&c, "n1")
        for i in 0..<30 { try c["n1"]!.propose([UInt8(i)]) }
        Self.settle(&c)
        let applied = c["n1"]!.appliedIndex
        var metas: [ServerID: SnapshotMetadata] = [:]
        for id in c.keys.sorted() {
            let m = c[id]!.compact(index: applied, keep: 0)
            metas[id] = try #require(m)
        }
        let settings = RaftSettings(heartbeatTicks: 1, electionTicks: 10)
        // n1 and n2 restart from good snapshots (configuration known only from them); n3 from
        // a broken one with no configuration.
        var broken = metas["n3"]!
        broken.configuration = Configuration()
        var restarted: [ServerID: RaftCore] = [:]
        for id in ["n1", "n2"] as [ServerID] {
            restarted[id] = RaftCore(id: id, settings: settings, seed: 11, hardState: HardState(term: c[id]!.term, commit: applied), snapshot: metas[id]!)
        }
        restarted["n3"] = RaftCore(id: "n3", settings: settings, seed: 12, hardState: HardState(term: c["n3"]!.term, commit: applied), snapshot: broken)
        #expect(restarted["n3"]!.configuration.voters.isEmpty)
        Self.elect(&restarted, "n1")
        #expect(restarted["n1"]!.role == .leader)
        Self.settle(&restarted)
        #expect(restarted["n3"]!.configuration.isVoter("n3"), "n3 learns the configuration from the leader's first entry")
        // And it can now lead: n1 and n2 go, n3 campaigns with n2 back.
        restarted["n1"] = nil
        for _ in 0..<60 where restarted["n3"]!.role != .leader && restarted["n2"]!.role != .leader {
            for id in restarted.keys.sorted() { restarted[id]!.tick() }
            Self.settle(&restarted)
        }
        #expect(restarted["n3"]!.role == .leader || restarted["n2"]!.role == .leader)
    }
}
