import CaravanModel
import ClusterState
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
        #expect(ClusterLeader.expiredLaunches(c.state).map(\.id) == [0, 1].map { "nightly-periodic-\(1_800_000_000 + $0 * 86400)" },
                "the 5 newest stay, and the third still runs")
        // Without its periodic job, every finished launch goes.
        c.apply(.deregisterJob(namespace: "default", id: "nightly", purge: true))
        #expect(ClusterLeader.expiredLaunches(c.state).count == 7)
    }
}
