import API
import CaravanModel
import ClusterState
import LeaderCore
import Scheduler
import Testing
@testable import Agent

/// Golden tests of `caravan job plan`: crafted clusters, a job file, and the exact text the
/// command prints (the leader's dry run, `ClusterViews.plan`, rendered as the CLI renders it).
@Suite struct JobPlanGoldenTests {
    /// A cluster state built the way Raft builds it: from commands.
    struct Cluster {
        var state = ClusterState()
        var index: UInt64 = 0
        /// Allocation ids handed out so far (`a1`, `a2`, …).
        var allocations = 0

        mutating func apply(_ c: Command) {
            index += 1
            let outcome = state.apply(c, index: index)
            #expect(outcome == .applied, "\(c) → \(outcome)")
        }

        mutating func node(_ id: String, cpu: Int = 1000, memory: Int = 1024, meta: [String: String] = [:], drivers: [String] = ["raw_exec"],
                           draining: Bool = false) {
            var n = Node(id: id, address: "10.0.0.\(id.filter(\.isNumber))", cpuMillicores: cpu, memoryMiB: memory, diskMiB: 10_000)
            n.attributes = ["kernel.name": "linux"]
            n.meta = meta
            n.drivers = drivers
            apply(.upsertNode(n))
            if draining { apply(.nodeDrain(id: id, draining: true)) }
        }

        /// Registers the job and commits what the scheduler would place (every instance running).
        mutating func run(_ text: String) throws {
            let job = try JobFile.parse(text, file: "job")
            apply(.registerJob(text: JobFile.render(job)))
            let key = ClusterState.JobKey(job.namespace, job.id)
            var n = allocations
            let plan = LeaderCore.schedule(key, in: SchedulingView(state), now: nil, newID: { n += 1; return "a\(n)" }).plan
            allocations = n
            apply(.applyPlan(allocations: plan.placements, evaluations: []))
            apply(.clientUpdate(plan.placements.map { ClientAllocationUpdate(allocationID: $0.id, clientStatus: .running, description: "") }))
        }

        func plan(_ text: String) throws -> String { try ClusterViews.plan(text, state).text }
    }

    static func job(_ id: String, count: Int, cpu: String = "100m", memory: String = "64Mi", driver: String = "raw_exec",
                    extra: String = "", command: String = "/bin/true") -> String {
        """
        id: \(id)
        groups:
          - name: g
            count: \(count)
        \(extra)    tasks:
              - name: t
                driver: \(driver)
                config: {\(driver == "container" ? "image: busybox, " : "")command: \(command)}
                resources: {cpu: \(cpu), memory: \(memory)}
        """
    }

    @Test func moreThanFitsPlacesWhatFitsAndSaysWhichDimensionRanOut() throws {
        var c = Cluster()
        for i in 1...3 { c.node("n\(i)") }
        #expect(try c.plan(Self.job("web", count: 4, cpu: "600m")) == """
            Job "web" (version 0): 3 to place, 0 to stop, 0 to update in place
            PLACE     NODE  WHY
            web.g[0]  n1    new
            web.g[1]  n2    new
            web.g[2]  n3    new
            ! 1 of group g not placed: cpu exhausted on 3 nodes (3 nodes evaluated)

            """)
    }

    @Test func constraintsDrainsAndDistinctHostsAreCountedPerReason() throws {
        var c = Cluster()
        c.node("n1", meta: ["rack": "r1"])
        c.node("n2", meta: ["rack": "r2"])
        c.node("n3", meta: ["rack": "r1"], draining: true)
        let extra = """
                constraints:
                  - {attribute: "${meta.rack}", operator: "=", value: r1}
                  - {operator: distinct_hosts}

            """
        #expect(try c.plan(Self.job("api", count: 2, extra: extra)) == """
            Job "api" (version 0): 1 to place, 0 to stop, 0 to update in place
            PLACE     NODE  WHY
            api.g[0]  n1    new
            ! 1 of group g not placed: constraint ${meta.rack} = r1 filtered 1, constraint distinct_hosts filtered 1, node draining filtered 1 (3 nodes evaluated)

            """)
    }

    @Test func aMissingDriverAndTooLittleMemoryAreBothNamed() throws {
        var c = Cluster()
        c.node("n1")
        c.node("n2", memory: 1024, drivers: ["raw_exec", "container"])
        c.node("n3")
        #expect(try c.plan(Self.job("box", count: 2, memory: "2Gi", driver: "container")) == """
            Job "box" (version 0): 0 to place, 0 to stop, 0 to update in place
            ! 2 of group g not placed: missing driver container filtered 2, memory exhausted on 1 node (3 nodes evaluated)

            """)
    }

    @Test func aChangedCountIsInPlaceAndAChangedCommandReplacesEveryInstance() throws {
        var c = Cluster()
        for i in 1...3 { c.node("n\(i)") }
        try c.run(Self.job("web", count: 2))
        #expect(try c.plan(Self.job("web", count: 3)) == """
            Job "web" (version 1): 1 to place, 0 to stop, 2 to update in place
            PLACE     NODE  WHY
            web.g[2]  n3    new
            IN PLACE  NODE  WHY
            web.g[0]  n1    same tasks; moved to version 1
            web.g[1]  n2    same tasks; moved to version 1

            """)
        #expect(try c.plan(Self.job("web", count: 2, command: "/bin/false")) == """
            Job "web" (version 1): 2 to place, 2 to stop, 0 to update in place
            PLACE     NODE  WHY
            web.g[0]  n1    replaces a1
            web.g[1]  n2    replaces a2
            STOP      NODE  WHY
            web.g[0]  n1    updated to job version 1
            web.g[1]  n2    updated to job version 1

            """)
        // Nothing changed: nothing to do.
        #expect(try c.plan(Self.job("web", count: 2)) == """
            Job "web" (version 0): 0 to place, 0 to stop, 0 to update in place

            """)
    }
}
