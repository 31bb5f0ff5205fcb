import CaravanModel
import ClusterState
import LeaderCore
import Testing
@testable import Agent

/// `caravan operator what-if` runs the leader's real core on a copy: what it predicts is what
/// the same core does when the change happens for real.
@Suite struct WhatIfTests {
    /// Three racks of one node, a service spread over them, one pinned to r1, one on every host.
    static func cluster() throws -> JobPlanGoldenTests.Cluster {
        var c = JobPlanGoldenTests.Cluster()
        for (i, rack) in ["r1", "r2", "r3"].enumerated() { c.node("n\(i + 1)", cpu: 2000, memory: 2048, meta: ["rack": rack]) }
        try c.run(JobPlanGoldenTests.job("web", count: 3, extra: "    constraints: [{operator: distinct_hosts}]\n"))
        try c.run(JobPlanGoldenTests.job("pinned", count: 1, extra: "    constraints: [{attribute: \"${meta.rack}\", value: r1}]\n"))
        try c.run(JobPlanGoldenTests.job("cache", count: 2, memory: "1024Mi"))
        return c
    }

    @Test func losingARackNamesWhatMovesAndWhatNoLongerFitsAndRealityAgrees() async throws {
        let c = try Self.cluster()
        var change = WhatIf.Change()
        change.killNodesWhere = ["meta.rack=r1"]
        let o = try await WhatIf.run(c.state, change, now: 1_000_000)
        #expect(o.killed == ["n1"])
        let onN1 = c.state.allocations.values.filter { $0.nodeID == "n1" && $0.isLive }.map(\.name).sorted()
        // Everything on n1 either moves or stops; nothing elsewhere is touched.
        #expect((o.moved + o.stopped).map(\.name).sorted() == onN1, "\(o)")
        #expect(o.moved.allSatisfy { $0.from == "n1" && $0.to != "n1" })
        #expect(o.stopped.map(\.name).contains("pinned.g[0]"))
        #expect(o.unplaced.contains { $0.job == "pinned" && $0.reason.contains("constraint") }, "\(o.unplaced)")
        #expect(o.unplaced.contains { $0.job == "web" && $0.reason.contains("distinct_hosts") }, "\(o.unplaced)")
        // The same change for real, through the same core: the same instances end where predicted.
        let real = StateCopy(c.state)
        real.apply(.nodeStatus(id: "n1", status: .down))
        var core = LeaderCore()
        var clock: Int64 = 1_000_000
        let ids = CountingIDs("r")
        await core.settle(real, clock: &clock, step: 60_000, newID: { ids.next() }, between: { _ in })
        for m in o.moved {
            #expect(real.state.allocations.values.contains { $0.name == m.name && $0.nodeID == m.to && $0.desiredStatus == .run && $0.isLive },
                    "\(m.name) → \(m.to ?? "-")")
        }
        for s in o.stopped {
            #expect(!real.state.allocations.values.contains { $0.name == s.name && $0.desiredStatus == .run && $0.isLive })
        }
    }

    /// A system job's instances share one name on every node: losing a node stops its one,
    /// adding nodes places one on each, the same answer every time.
    @Test func systemJobsStartAndStopPerNode() async throws {
        var c = try Self.cluster()
        try c.run("type: system\n" + JobPlanGoldenTests.job("sys", count: 1, memory: "16Mi"))
        #expect(c.state.allocations.values.filter { $0.jobID == "sys" && $0.isLive }.count == 3)
        var kill = WhatIf.Change()
        kill.killNodes = ["n2"]
        let lost = try await WhatIf.run(c.state, kill, now: 1_000_000)
        #expect(lost.stopped.contains { $0.job == "sys" && $0.from == "n2" } && !lost.moved.contains { $0.job == "sys" }, "\(lost)")
        var add = WhatIf.Change()
        add.addNodes = 2
        add.addNodesLike = "n1"
        for _ in 0..<3 {
            let o = try await WhatIf.run(c.state, add, now: 1_000_000)
            #expect(o.placed.filter { $0.job == "sys" }.compactMap(\.to).sorted() == ["n1-what-if-1", "n1-what-if-2"], "\(o)")
            #expect(!o.moved.contains { $0.job == "sys" })
        }
        add.addNodes = WhatIf.maxAddedNodes + 1
        await #expect(throws: WhatIf.Problem.self) { try await WhatIf.run(c.state, add, now: 1_000_000) }
    }

    @Test func addedNodesDrainsAndAJobAreSupposedAndBadInputIsNamed() async throws {
        let c = try Self.cluster()
        var change = WhatIf.Change()
        change.addNodes = 2
        change.addNodesLike = "n2"
        change.drainNodes = ["n3"]
        change.job = try JobFile.parse(JobPlanGoldenTests.job("big", count: 4, memory: "1536Mi"))
        let o = try await WhatIf.run(c.state, change, now: 1_000_000)
        #expect(o.added == ["n2-what-if-1", "n2-what-if-2"] && o.drained == ["n3"])
        #expect(o.placed.filter { $0.job == "big" }.count + (o.unplaced.contains { $0.job == "big" } ? 1 : 0) >= 2, "\(o)")
        #expect(o.moved.allSatisfy { $0.from == "n3" }, "only the drained node's work moves: \(o.moved)")
        // Nothing about the real state changed.
        #expect(c.state.nodes.count == 3 && c.state.jobs[.init("default", "big")] == nil)
        for (bad, message) in [({ (x: inout WhatIf.Change) in x.killNodes = ["nope"] }, "no node nope"),
                               ({ (x: inout WhatIf.Change) in x.killNodesWhere = ["rack=r1"] }, "write meta.KEY=VALUE"),
                               ({ (x: inout WhatIf.Change) in x.killNodesWhere = ["meta.rack=r9"] }, "no node has meta.rack=r9"),
                               ({ (x: inout WhatIf.Change) in x.addNodes = 3 }, "needs a node to copy")] {
            var x = WhatIf.Change()
            bad(&x)
            do { _ = try await WhatIf.run(c.state, x, now: 0); Issue.record("\(message) accepted") } catch {
                #expect(error.description.contains(message), "\(error)")
            }
        }
    }
}
