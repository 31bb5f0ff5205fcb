import CaravanModel
import CaravanTesting
import ClusterState
import LeaderCore
import Scheduler
import Testing

/// Seeded runs of a whole cluster's life: nodes join, die, come back and drain while jobs are
/// registered, updated and stopped. After every event the leader's real core (`LeaderCore`:
/// evaluation feed and broker, schedule, verify, commit) runs until nothing changes, an executor
/// stand-in marks new allocations running, and the properties users rely on are checked.
@Suite struct ClusterSimulationTests {
    /// The cluster: its state, changed by commands, and the leader's real core running on it.
    struct World {
        var copy = StateCopy(ClusterState())
        var core = LeaderCore()
        /// Unix ms; an hour passes between two leader passes, so delayed reschedules fall due.
        var clock: Int64 = 1_800_000_000_000
        let ids = CountingIDs("a")
        var state: ClusterState { copy.state }

        func apply(_ c: Command) {
            let ok = copy.apply(c)
            precondition(ok, "\(copy.refusals.last ?? "")")
        }

        /// Leader passes (and nodes starting what they are given) until nothing changes.
        mutating func settle() async {
            let ids = self.ids
            await core.settle(copy, clock: &clock, step: 3_600_000, newID: { ids.next() }, between: { $0.startPending() })
        }
    }

    static func job(_ id: String, type: Job.Kind, count: Int, cpu: Int, mem: Int, args: [String] = []) -> String {
        let countLine = type == .system || type == .sysbatch ? "" : "    count: \(count)\n"
        return "id: \(id)\ntype: \(type.rawValue)\ngroups:\n  - name: g\n\(countLine)    ephemeralDisk: {size: 10Mi}\n    tasks:\n      - {name: t, driver: raw_exec, config: {command: /bin/sleep, args: [\(args.map { "\"\($0)\"" }.joined(separator: ", "))]}, resources: {cpu: \(cpu)m, memory: \(mem)Mi}}\n"
    }

    @Test(arguments: 0..<10)
    func aClusterLivesThroughJoinsDeathsDrainsAndJobChanges(batch: Int) async {
        for seed in UInt64(batch * 20)..<UInt64(batch * 20 + 20) { await Self.live(seed: seed, pipelineDepth: 1) }
    }

    /// The same lives with the leader deciding up to 8 evaluations before their plans are
    /// applied (what the agent does, 64 ahead): each is scheduled against the state the plans
    /// before it leave, so nothing is over-committed and every property still holds.
    @Test(arguments: 0..<4)
    func theSameHoldsWithPlansDecidedAhead(batch: Int) async {
        for seed in UInt64(1000 + batch * 20)..<UInt64(1000 + batch * 20 + 20) { await Self.live(seed: seed, pipelineDepth: 8) }
    }

    static func live(seed: UInt64, pipelineDepth: Int) async {
        do {
            var r = SeededRandom(seed: seed)
            var w = World()
            w.copy = StateCopy(ClusterState(), pipelineDepth: pipelineDepth)
            var nodeCount = 0
            for _ in 0..<60 {
                let roll = Double.random(in: 0..<1, using: &r)
                let nodes = w.state.nodes.keys.sorted()
                let jobs = w.state.jobs.keys.sorted()
                if roll < 0.2 || nodes.isEmpty {
                    var n = Node(id: "n\(nodeCount)", address: "10.0.0.\(nodeCount)", cpuMillicores: [2000, 4000].randomElement(using: &r)!,
                                 memoryMiB: [2048, 8192].randomElement(using: &r)!, diskMiB: 100_000)
                    n.drivers = ["raw_exec"]
                    nodeCount += 1
                    w.apply(.upsertNode(n))
                } else if roll < 0.3 {
                    w.apply(.nodeStatus(id: nodes.randomElement(using: &r)!, status: .down))
                } else if roll < 0.35 {
                    let id = nodes.randomElement(using: &r)!
                    w.apply(.upsertNode(w.state.nodes[id]!))  // back from the dead
                } else if roll < 0.42 {
                    let id = nodes.randomElement(using: &r)!
                    w.apply(.nodeDrain(id: id, draining: !(w.state.nodes[id]!.draining)))
                    if !w.state.nodes[id]!.draining { w.apply(.nodeEligibility(id: id, eligibility: .eligible)) }
                } else if roll < 0.7 || jobs.isEmpty {
                    let type: Job.Kind = [.service, .service, .batch, .system].randomElement(using: &r)!
                    w.apply(.registerJob(text: Self.job("j\(Int.random(in: 0..<6, using: &r))", type: type, count: Int.random(in: 1...8, using: &r),
                                                        cpu: Int.random(in: 1...10, using: &r) * 100, mem: Int.random(in: 1...8, using: &r) * 128,
                                                        args: r.chance(0.5) ? ["1"] : ["2"])))
                } else if roll < 0.8 {
                    let k = jobs.randomElement(using: &r)!
                    w.apply(.deregisterJob(namespace: k.namespace, id: k.id, purge: r.chance(0.3)))
                } else {
                    // Some running work finishes or fails.
                    if let a = w.state.allocations.values.filter({ $0.clientStatus == .running }).sorted(by: { $0.id < $1.id }).randomElement(using: &r) {
                        w.apply(.clientUpdate([.init(allocationID: a.id, clientStatus: r.chance(0.5) ? .complete : .failed, description: "")]))
                    }
                }
                await w.settle()
                Self.check(w.state, seed: seed)
            }
        }
    }

    static func check(_ s: ClusterState, seed: UInt64) {
        // What the state keeps per node and namespace agrees with its allocations added up anew
        // (the "used" read below comes from the kept use).
        #expect(s.indexDrift() == [], "seed \(seed)")
        for n in s.nodes.values {
            let used = s.used(onNode: n.id)
            #expect(used.cpuMillicores <= n.cpuMillicores && used.memoryMiB <= n.memoryMiB, "seed \(seed): \(n.id) over-committed")
            if n.status == .down {
                #expect(s.liveAllocations(onNode: n.id).isEmpty, "seed \(seed): live allocations on down node \(n.id)")
            }
        }
        for (key, rec) in s.jobs {
            let live = s.allocations(ofJob: key).filter { $0.isLive }
            if rec.stopped {
                #expect(live.isEmpty, "seed \(seed): stopped job \(key.id) still has live allocations")
                continue
            }
            // (A drain in progress may keep an old version on its node until the move.)
            let stale = live.filter { $0.jobVersion != rec.version && s.nodes[$0.nodeID]?.draining != true }
            #expect(stale.isEmpty, "seed \(seed): \(key.id) (\(rec.job.type), v\(rec.version), count \(rec.job.groups[0].count)) runs an old version after settling: \(stale.map { "\($0.name) v\($0.jobVersion) on \($0.nodeID) draining=\(s.nodes[$0.nodeID]?.draining ?? false) \($0.clientStatus)" }) all: \(s.allocations(ofJob: key).map { "\($0.id) \($0.name) v\($0.jobVersion) \($0.desiredStatus)/\($0.clientStatus) prev=\($0.previousAllocation ?? "-") ci=\($0.createIndex)" })")
            let g = rec.job.groups[0]
            switch rec.job.type {
            case .service:
                let names = live.map(\.name)
                #expect(Set(names).count == names.count, "seed \(seed): \(key.id) has two live instances with one name")
                #expect(live.count <= g.count, "seed \(seed): \(key.id) has more than count instances")
                // Fewer than count only when no node can take one more.
                if live.count < g.count {
                    let ask = (g.tasks[0].resources.cpuMillicores, g.tasks[0].resources.memoryMiB)
                    let room = s.nodes.values.filter { n in
                        let u = s.used(onNode: n.id)
                        return n.isSchedulable && u.cpuMillicores + ask.0 <= n.cpuMillicores && u.memoryMiB + ask.1 <= n.memoryMiB
                    }
                    #expect(room.isEmpty, "seed \(seed): \(key.id) has \(live.count)/\(g.count) though \(room.map(\.id)) have room")
                }
            case .system:
                let perNode = Dictionary(grouping: live, by: \.nodeID)
                #expect(perNode.values.allSatisfy { $0.count == 1 }, "seed \(seed): \(key.id) runs twice on a node")
            default: break
            }
        }
    }

    /// A shell whose log commits something else first: another job's allocation takes the only
    /// node's room between the leader's decision and its plan's commit (a plan decided before an
    /// earlier commit had answered).
    final class Crowded: LeaderShell, @unchecked Sendable {
        let copy: StateCopy
        var first: Command?
        init(_ copy: StateCopy, first: Command) { (self.copy, self.first) = (copy, first) }
        var pipelineDepth: Int { 1 }
        func currentState() async -> ClusterState { copy.state }
        func note(_ level: LeaderCore.Level, _ message: String, _ metadata: [String: String]) {}
        func propose(_ command: Command, _ what: String) async -> Bool {
            if let f = first { first = nil; copy.apply(f) }
            return copy.apply(command)
        }
    }

    /// The state refuses the placement that no longer fits; the leader's report (the placement
    /// metrics) counts what the state made, not what the plan asked for, and the job is
    /// evaluated again and placed once there is room.
    @Test func placementsTheStateRefusedAreNotCountedAsPlaced() async {
        let copy = StateCopy(ClusterState())
        var n = Node(id: "n1", address: "10.0.0.1", cpuMillicores: 1000, memoryMiB: 1024, diskMiB: 100_000)
        n.drivers = ["raw_exec"]
        #expect(copy.apply(.upsertNode(n)))
        #expect(copy.apply(.registerJob(text: Self.job("web", type: .service, count: 1, cpu: 800, mem: 512))))
        let other = Allocation(id: "other", jobID: "batch", jobVersion: 0, group: "g", name: "batch.g[0]", nodeID: "n1",
                               cpuMillicores: 900, memoryMiB: 512, diskMiB: 10)
        let shell = Crowded(copy, first: .applyPlan(allocations: [other], evaluations: []))
        var core = LeaderCore()
        let ids = CountingIDs("p")
        let report = await core.pass(shell, members: nil, LeaderCore.Environment(now: { 1_800_000_000_000 }, newID: { ids.next() }))
        #expect(report.placements == 0, "\(report)")
        #expect(copy.state.allocations.values.filter { $0.jobID == "web" }.isEmpty)
        #expect(copy.state.evaluations.values.contains { $0.jobID == "web" && $0.status == .pending })
        // The other allocation stops: the next pass places the job and counts it.
        var stopped = other
        stopped.desiredStatus = .stop
        #expect(copy.apply(.applyPlan(allocations: [stopped], evaluations: [])))
        let again = await core.pass(shell, members: nil, LeaderCore.Environment(now: { 1_800_000_000_000 }, newID: { ids.next() }))
        #expect(again.placements == 1, "\(again)")
        #expect(copy.state.allocations.values.filter { $0.jobID == "web" && $0.isLive }.count == 1)
    }
}
