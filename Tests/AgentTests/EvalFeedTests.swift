import CaravanModel
import ClusterState
import LeaderCore
import Scheduler
import Testing
@testable import Agent

/// What the leader's broker is fed: each change in the state becomes an evaluation of the jobs
/// it concerns, and nothing else does.
@Suite struct EvalFeedTests {
    static func job(_ id: String, count: Int = 2, type: String = "service", memory: String = "64Mi") -> String {
        """
        id: \(id)
        type: \(type)
        groups:
          - name: g
        \(type == "system" ? "" : "    count: \(count)")
            tasks: [{name: t, driver: raw_exec, config: {command: /bin/sleep}, resources: {cpu: 100m, memory: \(memory)}}]
        """
    }

    struct Fed {
        var feed = EvalFeed()
        var n = 0
        mutating func next(_ state: ClusterState, now: Int64 = 1_000) -> (evals: [String: Evaluation.Trigger], unblock: Bool) {
            let out = feed.changes(in: state, now: now, newID: { n += 1; return "e\(n)" })
            #expect(Set(out.evaluations.map(\.jobID)).count == out.evaluations.count, "one evaluation per job and pass")
            return (Dictionary(uniqueKeysWithValues: out.evaluations.map { ($0.jobID, $0.triggeredBy) }), out.unblock)
        }
    }

    @Test func everyChangeBecomesAnEvaluationOfTheJobsItConcerns() throws {
        var c = JobPlanGoldenTests.Cluster()
        c.node("n1", cpu: 4000, memory: 4096)
        c.node("n2", cpu: 4000, memory: 4096)
        try c.run(Self.job("web"))
        try c.run(Self.job("api", count: 1))
        var f = Fed()
        // A new leader looks at every job once: here through the evaluations their registers
        // committed, still pending.
        #expect(f.next(c.state).evals == ["web": .jobRegister, "api": .jobRegister])
        #expect(f.next(c.state).evals.isEmpty, "nothing changed")

        // A register (with the evaluation the API commits) is enqueued once, as committed.
        let text = Self.job("db", count: 1)
        c.apply(.registerJob(text: JobFile.render(try JobFile.parse(text))))
        let out = f.feed.changes(in: c.state, now: 1_000, newID: { "x" })
        let committed = try #require(c.state.evaluations.values.first { $0.jobID == "db" && $0.status == .pending })
        #expect(out.evaluations.map(\.id) == [committed.id], "the committed evaluation itself, not a second one")
        #expect(f.next(c.state).evals.isEmpty)

        // An instance fails: that job only.
        let webAllocs = c.state.allocations(ofJob: .init("default", "web"))
        c.apply(.clientUpdate([.init(allocationID: webAllocs[0].id, clientStatus: .failed, description: "exit 1")]))
        #expect(f.next(c.state).evals == ["web": .allocFailure])

        // A node drains: the jobs with instances on it.
        let onN1 = Set(c.state.allocations.values.filter { $0.nodeID == "n1" }.map(\.jobID))
        c.apply(.nodeDrain(id: "n1", draining: true))
        let drained = f.next(c.state).evals
        #expect(Set(drained.keys) == onN1 && drained.values.allSatisfy { $0 == .nodeDrain })

        // A system job is evaluated when any node changes.
        try c.run(Self.job("agentd", type: "system"))
        _ = f.next(c.state)
        c.node("n3", cpu: 1000, memory: 1024)
        let joined = f.next(c.state)
        #expect(joined.evals == ["agentd": .nodeUpdate], "a new node concerns system jobs only")
        #expect(joined.unblock, "a node joining frees capacity")

        // The time a job asked for comes.
        f.feed.wakeAt[.init("default", "api")] = 5_000
        #expect(f.next(c.state, now: 4_999).evals.isEmpty)
        #expect(f.next(c.state, now: 5_000).evals == ["api": .scheduled])
        #expect(f.next(c.state, now: 6_000).evals.isEmpty, "once")

        // And a minute later, everything again.
        #expect(f.next(c.state, now: 61_000).evals.count == 4)
    }

    @Test func capacityThatGrowsWakesBlockedEvaluations() throws {
        var c = JobPlanGoldenTests.Cluster()
        c.node("n1", cpu: 4000, memory: 1024)
        try c.run(Self.job("web", count: 2, memory: "256Mi"))
        var f = Fed()
        _ = f.next(c.state)
        // Instances starting to run change nothing in capacity.
        let allocs = c.state.allocations(ofJob: .init("default", "web"))
        var running = TaskState(state: .running)
        running.startedAt = 1
        c.apply(.clientUpdate(allocs.map { .init(allocationID: $0.id, clientStatus: .running, description: "", taskStates: ["t": running]) }))
        let healthy = f.next(c.state)
        #expect(healthy.evals == ["web": .allocUpdate] && !healthy.unblock)
        // One finishing frees its memory.
        c.apply(.clientUpdate([.init(allocationID: allocs[0].id, clientStatus: .complete, description: "")]))
        #expect(f.next(c.state).unblock)
        // A node turned ineligible takes capacity away: nothing to wake.
        c.apply(.nodeEligibility(id: "n1", eligibility: .ineligible))
        #expect(!f.next(c.state).unblock)
        c.apply(.nodeEligibility(id: "n1", eligibility: .eligible))
        #expect(f.next(c.state).unblock, "eligible again")
        #expect(!f.next(c.state).unblock)
        // New tags on a node may be what a blocked job's constraint wants.
        c.node("n1", cpu: 4000, memory: 1024, meta: ["zone": "b"])
        #expect(f.next(c.state).unblock, "a schedulable node changed")
    }

    /// The broker and the feed together, in the leader's own core: a job that does not fit is
    /// blocked, and placed once capacity grows — without a pass per job.
    @Test func aBlockedJobIsPlacedWhenANodeJoins() async throws {
        var c = JobPlanGoldenTests.Cluster()
        c.node("n1", cpu: 1000, memory: 512)
        let copy = StateCopy(c.state)
        var core = LeaderCore()
        let ids = CountingIDs("a")
        let env = LeaderCore.Environment(now: { 1_000 }, newID: { ids.next() })
        func pass() async -> [String] {
            let before = Set(copy.state.allocations.keys)
            _ = await core.pass(copy, members: nil, env)
            return copy.state.allocations.values.filter { !before.contains($0.id) }.map(\.name).sorted()
        }
        copy.apply(.registerJob(text: JobFile.render(try JobFile.parse(Self.job("big", count: 3, memory: "256Mi")))))
        #expect(await pass().count == 2, "two fit on n1")
        #expect(core.broker.stats.blocked == 1)
        #expect(await pass().isEmpty, "its own placements changed the job: evaluated again, still blocked")
        #expect(await pass().isEmpty)
        #expect(core.broker.stats.blocked == 1)
        c.node("n2", cpu: 1000, memory: 512)
        copy.apply(.upsertNode(c.state.nodes["n2"]!))
        #expect(await pass() == ["big.g[2]"], "the node joining wakes the blocked evaluation")
        #expect(core.broker.stats == EvalBroker.Stats())
        #expect(copy.refusals.isEmpty)
    }

    /// A system job that does not fit on two nodes fails once per node in one plan: the leader
    /// records both (it once built a dictionary of them by group and crashed).
    @Test func aSystemJobThatFitsNowhereIsRecordedNotACrash() async throws {
        var c = JobPlanGoldenTests.Cluster()
        c.node("n1", cpu: 1000, memory: 128)
        c.node("n2", cpu: 1000, memory: 128)
        let copy = StateCopy(c.state)
        var core = LeaderCore()
        let ids = CountingIDs("a")
        copy.apply(.registerJob(text: JobFile.render(try JobFile.parse(Self.job("everywhere", type: "system", memory: "256Mi")))))
        _ = await core.pass(copy, members: nil, LeaderCore.Environment(now: { 1_000 }, newID: { ids.next() }))
        let e = try #require(copy.state.evaluations.values.first { $0.jobID == "everywhere" })
        #expect(e.status == .blocked && e.failedPlacements["g"]?.contains("memory exhausted") == true, "\(e)")
        #expect(copy.refusals.isEmpty)
    }
}
