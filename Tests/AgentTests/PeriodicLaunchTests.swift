import CaravanModel
import ClusterState
import LeaderCore
import Testing
@testable import Agent

/// Launches of periodic jobs do not pile up: the newest few are kept, older finished ones go.
@Suite struct PeriodicLaunchTests {
    @Test func onlyTheNewestLaunchesAndUnfinishedOnesAreKept() throws {
        var c = JobPlanGoldenTests.Cluster()
        c.node("n1", cpu: 4000, memory: 4096)
        let parent = try JobFile.parse("""
            id: nightly
            type: batch
            periodic: {cron: "0 2 * * *"}
            groups:
              - name: g
                tasks: [{name: t, driver: raw_exec, config: {command: /bin/true}, resources: {cpu: 10m, memory: 8Mi}}]
            """)
        c.apply(.registerJob(text: JobFile.render(parent)))
        // Eight launches; all but the third have run to completion.
        for k in 0..<8 {
            try c.run(JobFile.render(Periodic.child(of: parent, at: 1_800_000_000 + Int64(k) * 86400)))
            let child = "nightly-periodic-\(1_800_000_000 + k * 86400)"
            let allocs = c.state.allocations(ofJob: .init("default", child))
            if k != 2 { c.apply(.clientUpdate(allocs.map { .init(allocationID: $0.id, clientStatus: .complete, description: "") })) }
        }
        #expect(LeaderCore.expiredLaunches(c.state).map(\.id) == [0, 1].map { "nightly-periodic-\(1_800_000_000 + $0 * 86400)" },
                "the 5 newest stay, and the third still runs")
        // Without its periodic job, every finished launch goes.
        c.apply(.deregisterJob(namespace: "default", id: "nightly", purge: true))
        #expect(LeaderCore.expiredLaunches(c.state).count == 7)
    }
}

/// Rollouts with an update policy: a version all of whose instances have been healthy long
/// enough is marked stable, and with autoRevert a failing new version goes back to it.
@Suite struct RolloutTests {
    /// Job `web`, two instances running `command`, under `update`.
    static func job(_ command: String, update: String = "{maxParallel: 1, minHealthyTime: 10s, autoRevert: true}") -> String {
        """
        id: web
        update: \(update)
        groups:
          - name: g
            count: 2
            tasks: [{name: t, driver: raw_exec, config: {command: \(command)}, resources: {cpu: 10m, memory: 8Mi}}]
        """
    }

    /// A one-node cluster running `text`'s two instances, started at 1 000 000 ms and healthy.
    static func running(_ text: String) throws -> (cluster: JobPlanGoldenTests.Cluster, allocations: [Allocation]) {
        var c = JobPlanGoldenTests.Cluster()
        c.node("n1", cpu: 4000, memory: 4096)
        try c.run(text)
        var running = TaskState(state: .running)
        running.startedAt = 1_000_000
        let v0 = c.state.allocations(ofJob: .init("default", "web"))
        c.apply(.clientUpdate(v0.map { .init(allocationID: $0.id, clientStatus: .running, description: "", taskStates: ["t": running]) }))
        return (c, v0)
    }

    @Test func aHealthyVersionBecomesStableAndAFailingOneIsRevertedToIt() throws {
        var (c, _) = try Self.running(Self.job("/bin/v0"))
        #expect(LeaderCore.rolloutActions(c.state, now: 1_005_000).isEmpty, "healthy for 5 s only")
        let stable = LeaderCore.rolloutActions(c.state, now: 1_010_000)
        #expect(stable.map(\.0) == [.markStable(namespace: "default", id: "web", version: 0)])
        for (cmd, _) in stable { c.apply(cmd) }
        #expect(c.state.versions[.init("default", "web")]?.first?.stable == true)
        #expect(LeaderCore.rolloutActions(c.state, now: 2_000_000).isEmpty, "nothing more to do")

        // Version 1 starts rolling out and its first replacement fails: back to version 0's definition.
        let v1 = try JobFile.parse(Self.job("/bin/v1"))
        c.apply(.registerJob(text: JobFile.render(v1)))
        var failed = Allocation(id: "f1", jobID: "web", jobVersion: 1, group: "g", name: "web.g[0]", nodeID: "n1", cpuMillicores: 10, memoryMiB: 8, diskMiB: 300)
        failed.createIndex = c.index
        c.apply(.applyPlan(allocations: [failed], evaluations: []))
        c.apply(.clientUpdate([.init(allocationID: "f1", clientStatus: .failed, description: "exit 1")]))
        let revert = LeaderCore.rolloutActions(c.state, now: 3_000_000)
        #expect(revert.count == 1)
        guard case .register(let job)? = revert.first?.0 else { Issue.record("expected a register, got \(revert)"); return }
        #expect(job == c.state.versions[.init("default", "web")]?.last?.job, "version 0's definition")
        c.apply(.register(job))
        #expect(c.state.jobs[.init("default", "web")]?.version == 2)
        #expect(LeaderCore.rolloutActions(c.state, now: 3_000_000).isEmpty, "no second revert")
    }

    @Test func aRolloutWithoutProgressWithinProgressDeadlineIsRevertedOrSaidToHaveStalled() throws {
        func job(_ command: String, autoRevert: Bool) -> String {
            Self.job(command, update: "{maxParallel: 1, minHealthyTime: 10s, progressDeadline: 1m, autoRevert: \(autoRevert)}")
        }
        for autoRevert in [false, true] {
            var (c, v0) = try Self.running(job("/bin/v0", autoRevert: autoRevert))
            let key = ClusterState.JobKey("default", "web")
            for (cmd, _) in LeaderCore.rolloutActions(c.state, now: 1_010_000) { c.apply(cmd) }
            // Version 1: its first instance gets healthy, then nothing more happens (the next is
            // never placed) while one old instance still runs.
            c.apply(.registerJob(text: JobFile.render(try JobFile.parse(job("/bin/v1", autoRevert: autoRevert)))))
            var old = v0[0]
            old.desiredStatus = .stop
            var first = Allocation(id: "n1", jobID: "web", jobVersion: 1, group: "g", name: "web.g[0]", nodeID: "n1", cpuMillicores: 10, memoryMiB: 8, diskMiB: 300)
            first.createIndex = c.index
            c.apply(.applyPlan(allocations: [old, first], evaluations: []))
            var t = TaskState(state: .running)
            t.record(TaskEvent(time: 1_999_000, type: "Received", message: ""))
            t.startedAt = 2_000_000
            c.apply(.clientUpdate([.init(allocationID: "n1", clientStatus: .running, description: "", taskStates: ["t": t])]))
            #expect(LeaderCore.rolloutActions(c.state, now: 2_059_000).isEmpty, "within its progress deadline")
            let late = LeaderCore.rolloutActions(c.state, now: 2_061_000)
            #expect(late.count == 1, "\(late.map(\.1))")
            if autoRevert {
                #expect(late.first?.1.contains("made no progress within 1m") == true, "\(late.map(\.1))")
                guard case .register? = late.first?.0 else { Issue.record("expected a revert, got \(late.map(\.1))"); continue }
            } else {
                guard case .upsertEvaluations(let evals)? = late.first?.0, let e = evals.first else { Issue.record("expected an evaluation, got \(late.map(\.1))"); continue }
                #expect(e.status == .failed && e.triggeredBy == .rollingUpdate && e.statusDescription.contains("made no progress within 1m"))
                c.apply(.upsertEvaluations(evals))
                #expect(LeaderCore.rolloutActions(c.state, now: 2_100_000).isEmpty, "said once")
                #expect(ClusterViews.jobStatus(key, c.state, withAllocations: false).failedEvaluation?.contains("made no progress") == true,
                        "job status says so")
            }
        }
    }

    @Test func anInstanceNotHealthyWithinHealthyDeadlineIsRevertedToo() throws {
        var (c, _) = try Self.running(Self.job("/bin/v0"))
        for (cmd, _) in LeaderCore.rolloutActions(c.state, now: 1_010_000) { c.apply(cmd) }
        // Version 1's instance runs but its check never passes (healthyDeadline 5m by default).
        c.apply(.registerJob(text: JobFile.render(try JobFile.parse(Self.job("/bin/v1")))))
        var slow = Allocation(id: "s1", jobID: "web", jobVersion: 1, group: "g", name: "web.g[0]", nodeID: "n1", cpuMillicores: 10, memoryMiB: 8, diskMiB: 300)
        slow.createIndex = c.index
        c.apply(.applyPlan(allocations: [slow], evaluations: []))
        var t = TaskState(state: .running)
        t.record(TaskEvent(time: 2_000_000, type: "Received", message: ""))
        c.apply(.clientUpdate([.init(allocationID: "s1", clientStatus: .running, description: "", taskStates: ["t": t], checks: ["web.0.http": "critical"])]))
        #expect(LeaderCore.rolloutActions(c.state, now: 2_000_000 + 299_000).isEmpty, "still within its deadline")
        let revert = LeaderCore.rolloutActions(c.state, now: 2_000_000 + 301_000)
        #expect(revert.count == 1 && revert[0].1.contains("not healthy within 5m"), "\(revert.map(\.1))")
    }

    @Test func healthyCanariesAreAutoPromotedAndTheOldTwinsGo() throws {
        func job(_ command: String) -> String { Self.job(command, update: "{maxParallel: 1, canary: 1, autoPromote: true, minHealthyTime: 10s}") }
        var c = JobPlanGoldenTests.Cluster()
        c.node("n1", cpu: 4000, memory: 4096)
        try c.run(job("/bin/v0"))
        try c.run(job("/bin/v1"))  // places the canary only (Cluster.run marks it running)
        let key = ClusterState.JobKey("default", "web")
        let live = c.state.allocations(ofJob: key).filter(\.isLive)
        #expect(live.count == 3 && live.filter { $0.jobVersion == 1 }.map(\.name) == ["web.g[0]"])
        #expect(ClusterViews.jobStatus(key, c.state, withAllocations: false).awaitingPromotion)
        var running = TaskState(state: .running)
        running.startedAt = 1_000_000
        let canary = try #require(live.first { $0.jobVersion == 1 })
        c.apply(.clientUpdate([.init(allocationID: canary.id, clientStatus: .running, description: "", taskStates: ["t": running])]))
        #expect(LeaderCore.rolloutActions(c.state, now: 1_005_000).isEmpty, "healthy for 5 s only")
        let promote = LeaderCore.rolloutActions(c.state, now: 1_010_000)
        #expect(promote.map(\.0) == [.promote(namespace: "default", id: "web", version: 1)])
        for (cmd, _) in promote { c.apply(cmd) }
        let st = ClusterViews.jobStatus(key, c.state, withAllocations: false)
        #expect(!st.awaitingPromotion && st.groups[0].canaries == 0)
        // A promotion of a version that is not current, or of a job without canaries, is refused.
        c.index += 1
        #expect(c.state.apply(.promote(namespace: "default", id: "web", version: 0), index: c.index)
                == .rejected("job web version 0 is not its current version (1)"))
        try c.run(JobPlanGoldenTests.job("plain", count: 1))
        c.index += 1
        #expect(c.state.apply(.promote(namespace: "default", id: "plain", version: 0), index: c.index)
                == .rejected("job plain version 0 has no canaries to promote (update.canary is 0)"))
    }
}
