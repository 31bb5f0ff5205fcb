import CaravanModel
import CaravanTesting
import PropertyBased
@testable import Scheduler
import Testing

/// The scheduler as a pure function: plans applied to an in-memory cluster, checked for the
/// properties users rely on.
@Suite struct SchedulerTests {
    final class IDs: @unchecked Sendable {
        var n = 0
        func next() -> String { n += 1; return "a\(n)" }
    }

    static func scheduler(_ algorithm: SchedulingAlgorithm = .binpack) -> Scheduler {
        let ids = IDs()
        return Scheduler(algorithm: algorithm, newID: { ids.next() })
    }

    static func node(_ id: String, cpu: Int = 2000, mem: Int = 4096, attrs: [String: String] = ["kernel.name": "linux"],
                     drivers: [String] = ["raw_exec", "exec", "container"]) -> Node {
        var n = Node(id: id, address: "127.0.0.1", cpuMillicores: cpu, memoryMiB: mem, diskMiB: 100_000)
        n.attributes = attrs
        n.drivers = drivers
        return n
    }

    static func job(_ id: String = "web", type: Job.Kind = .service, count: Int = 3, cpu: Int = 500, mem: Int = 256,
                    constraints: [Constraint] = [], driver: TaskSpec.Driver = .rawExec) -> Job {
        var t = TaskSpec(name: "t", driver: driver, config: DriverConfig(image: driver == .container ? "img" : nil, command: "/bin/true"))
        t.resources = Resources(cpuMillicores: cpu, memoryMiB: mem)
        var g = TaskGroup(name: "g", count: type == .system || type == .sysbatch ? 1 : count, for: type, tasks: [t])
        g.ephemeralDiskMiB = 10
        var j = Job(id: id, groups: [g])
        j.type = type
        j.constraints = constraints
        return j
    }

    /// Nodes alike but for their identity share a scheduling class, and node-only checks are
    /// decided once per class; a constraint on what is unique to a node is checked per node.
    @Test func constraintsOnUniqueAttributesAreCheckedNodeByNodeNotPerClass() {
        var nodes = (1...6).map { Self.node("n\($0)") }
        for i in nodes.indices { nodes[i].attributes["unique.hostname"] = "host-\(i + 1)" }
        let cluster = ClusterUse(nodes: nodes, allocations: [])
        #expect(cluster.classCount == 1)
        for (attribute, value, expected) in [("${node.unique.name}", "n4", "n4"), ("${node.unique.id}", "n2", "n2"),
                                             ("${attr.unique.hostname}", "host-5", "n5")] {
            let job = Self.job(count: 2, constraints: [Constraint(attribute: attribute, operator: .equal, value: value)])
            let plan = Self.scheduler().schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: []))
            #expect(plan.placements.map(\.nodeID) == [expected, expected], "\(attribute)")
        }
        // A constraint on the class's own attributes is decided once and holds for every node alike.
        let linux = Self.job(count: 6, cpu: 1500, constraints: [Constraint(attribute: "${attr.kernel.name}", operator: .equal, value: "linux")])
        let plan = Self.scheduler().schedule(SchedulerInput(job: linux, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: []))
        #expect(Set(plan.placements.map(\.nodeID)).count == 6)
        let none = Self.job(count: 1, constraints: [Constraint(attribute: "${attr.kernel.name}", operator: .equal, value: "darwin")])
        let refused = Self.scheduler().schedule(SchedulerInput(job: none, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: []))
        #expect(refused.failures.first?.description.contains("filtered 6") == true, "\(refused.failures)")
    }

    /// In a large cluster the walk passes blocks of 64 nodes none of which has the room, and a
    /// group's next instance re-scores only the node chosen last instead of walking again; the
    /// plans must be exactly those of walking node by node for every instance, as the cluster
    /// fills, with plans that stop and place on the same nodes (destructive updates), and when
    /// nothing fits (same reasons). Over 1,024 nodes (not a multiple of 64) each instance walks
    /// from a rotating start, so walks start mid-block and wrap past the short last block; there
    /// the ranking is walked per instance in both (a kept ranking chooses from one window).
    @Test(arguments: [640, 1_100])
    func passingFullBlocksChoosesExactlyWhatTheNodeByNodeWalkChooses(nodeCount: Int) {
        var r = SeededRandom(seed: 17)
        let nodes = (0..<nodeCount).map { i in
            // Memory to spare: nodes fill up on CPU, so whole blocks end up with none free.
            Self.node("n\(i)", cpu: [2000, 4000].randomElement(using: &r)!, mem: [16384, 32768].randomElement(using: &r)!,
                      attrs: ["kernel.name": "linux", "rack": "r\(i % 7)"])
        }
        var cluster = ClusterUse(nodes: nodes, allocations: [])
        var byJob: [String: [Allocation]] = [:]
        var (blockwise, nodewise) = (Self.scheduler(), Self.scheduler())
        nodewise.passBlocksFrom = .max
        nodewise.keepsRankings = false
        if nodeCount > nodewise.maxCandidates { blockwise.keepsRankings = false }
        var (passed, failures) = (0, 0)
        for step in 0..<(nodeCount > 1_024 ? 340 : 200) {
            // New jobs, and now and then a new version of an earlier one (its instances replaced).
            let id = step % 5 == 4 ? "j\(step - 4)" : "j\(step)"
            var job = Self.job(id, count: Int.random(in: 1...30, using: &r), cpu: [500, 1000].randomElement(using: &r)!,
                               mem: [512, 1024].randomElement(using: &r)!)
            if step % 3 == 0 { job.spreads = [Spread(attribute: "${attr.rack}")] }
            let version = step % 5 == 4 ? 1 : 0
            let input = SchedulerInput(job: job, jobVersion: version, jobStopped: false, cluster: cluster, jobAllocations: byJob[id] ?? [])
            let a = blockwise.schedule(input), b = nodewise.schedule(input)
            #expect(a.placements.map(\.nodeID) == b.placements.map(\.nodeID), "step \(step)")
            #expect(Set(a.stops.map(\.id)) == Set(b.stops.map(\.id)), "step \(step)")
            #expect(a.failures.map(\.description) == b.failures.map(\.description), "step \(step)")
            if !a.failures.isEmpty { failures += 1 }
            for s in a.stops {
                cluster.add(s, sign: -1)
                byJob[id]?.removeAll { $0.id == s.id }
            }
            for p in a.placements {
                cluster.add(p)
                byJob[id, default: []].append(p)
            }
            // Blocks where no node has room for even the smallest ask: the walk passes them.
            passed += cluster.blockFree.filter { $0.cpuMillicores < 500 || $0.memoryMiB < 512 }.count
        }
        // The run reached the cases that matter: full blocks passed, and placements that failed.
        #expect(passed > 0)
        #expect(failures > 0)
        // The blocks' figures are what their nodes have free.
        for b in cluster.blockFree.indices {
            let slots = (b * 64)..<min(nodes.count, b * 64 + 64)
            #expect(cluster.blockFree[b].cpuMillicores == slots.map { cluster.capacity[$0].cpuMillicores - cluster.use[$0].cpuMillicores }.max())
            #expect(cluster.blockFree[b].memoryMiB == slots.map { cluster.capacity[$0].memoryMiB - cluster.use[$0].memoryMiB }.max())
        }
    }

    /// A node whose attributes keep changing leaves a class behind each time; the table drops
    /// classes no node is in, and constraints still see each node's current class.
    @Test func schedulingClassesNoNodeIsInAreDropped() {
        var cluster = ClusterUse(nodes: (1...4).map { Self.node("n\($0)") }, allocations: [])
        var n1 = Self.node("n1")
        for k in 0..<500 {
            n1.attributes["build"] = "b\(k)"
            cluster.upsert(n1, holding: [])
        }
        #expect(cluster.classCount <= 2 * 4 + 16)
        let job = Self.job(count: 1, constraints: [Constraint(attribute: "${attr.build}", operator: .equal, value: "b499")])
        let plan = Self.scheduler().schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, cluster: cluster, jobAllocations: []))
        #expect(plan.placements.map(\.nodeID) == ["n1"])
        let others = Self.job(count: 3, constraints: [Constraint(attribute: "${attr.build}", operator: .equal, value: "b498")])
        #expect(Self.scheduler().schedule(SchedulerInput(job: others, jobVersion: 0, jobStopped: false, cluster: cluster, jobAllocations: [])).placements.isEmpty)
    }

    @Test func aNamespaceQuotaRefusesTheInstanceOverItAndThePlanApplierToo() {
        var job = Self.job(count: 3, cpu: 500, mem: 256)
        job.namespace = "team-a"
        let nodes = [Self.node("n1"), Self.node("n2")]
        // Another job of the namespace already holds 256Mi; the quota is 768Mi.
        var other = Allocation(id: "o1", jobID: "other", jobVersion: 0, group: "g", name: "other.g[0]", nodeID: "n1", cpuMillicores: 100,
                               memoryMiB: 256, diskMiB: 10)
        other.namespace = "team-a"
        var elsewhere = other
        elsewhere.id = "o2"
        elsewhere.namespace = "team-b"
        var input = SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: [other, elsewhere])
        input.quota = Quota(memoryMiB: 768)
        let plan = Self.scheduler().schedule(input)
        #expect(plan.placements.count == 2)
        #expect(plan.failures.map(\.description) == ["1 of group g not placed: namespace team-a: memory 768Mi of 768Mi used"])
        input.quota = Quota(instances: 2)
        #expect(Self.scheduler().schedule(input).failures.map(\.description) == ["2 of group g not placed: namespace team-a: instances 2 of 2 used"])
        // A plan made without the quota is cut back by the applier.
        input.quota = nil
        let unchecked = Self.scheduler().schedule(input)
        #expect(unchecked.placements.count == 3)
        let verdict = PlanApplier.verify(unchecked, nodes: nodes, allocations: [other, elsewhere], quotas: ["team-a": Quota(memoryMiB: 768)])
        #expect(verdict.accepted.placements.isEmpty && verdict.rejectedNamespaces == ["team-a"])
        #expect(PlanApplier.verify(unchecked, nodes: nodes, allocations: [other], quotas: ["team-b": Quota(instances: 0)]).accepted.placements.count == 3)
        // An instance told to stop whose task still runs (it ignores SIGTERM) still counts.
        var lingering = other
        lingering.id = "o3"
        lingering.desiredStatus = .stop
        lingering.clientStatus = .running
        var withLingering = SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: [other, lingering])
        withLingering.quota = Quota(memoryMiB: 768)
        #expect(Self.scheduler().schedule(withLingering).placements.count == 1)
        #expect(PlanApplier.verify(unchecked, nodes: nodes, allocations: [other, lingering], quotas: ["team-a": Quota(memoryMiB: 1024)])
            .rejectedNamespaces == ["team-a"])
    }

    /// Applies a plan to an allocation list (what the plan applier and Raft would do).
    static func apply(_ plan: Plan, to allocs: inout [Allocation], index: inout UInt64) {
        for s in plan.stops { if let i = allocs.firstIndex(where: { $0.id == s.id }) { allocs[i] = s } }
        for var p in plan.placements { index += 1; p.createIndex = index; allocs.append(p) }
    }

    static func overCommitted(_ nodes: [Node], _ allocs: [Allocation]) -> [String] {
        nodes.filter { n in
            let live = allocs.filter { $0.nodeID == n.id && $0.isLive }
            return live.reduce(0) { $0 + $1.cpuMillicores } > n.cpuMillicores || live.reduce(0) { $0 + $1.memoryMiB } > n.memoryMiB
        }.map(\.id)
    }

    @Test func aServiceJobGetsExactlyCountInstancesAndThenNothingMoreToDo() {
        let s = Self.scheduler()
        let nodes = (0..<3).map { Self.node("n\($0)") }
        let job = Self.job(count: 4)
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        let plan = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        #expect(plan.placements.count == 4 && plan.failures.isEmpty)
        #expect(Set(plan.placements.map(\.name)) == ["web.g[0]", "web.g[1]", "web.g[2]", "web.g[3]"])
        Self.apply(plan, to: &allocs, index: &index)
        let again = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        #expect(again.isEmpty, "a stable cluster needs no changes")
        // Instances of one group spread over the nodes (anti-affinity) while there is room.
        #expect(Set(plan.placements.map(\.nodeID)).count == 3)
    }

    @Test func binPackingFillsTheFullestNodeThatFits() {
        let s = Self.scheduler()
        let nodes = [Self.node("empty"), Self.node("busy")]
        var other = Allocation(id: "x", jobID: "other", jobVersion: 0, group: "g", name: "other.g[0]", nodeID: "busy",
                               cpuMillicores: 1000, memoryMiB: 2048, diskMiB: 10)
        other.clientStatus = .running
        let plan = s.schedule(SchedulerInput(job: Self.job(count: 1), jobVersion: 0, jobStopped: false, nodes: nodes, allocations: [other]))
        #expect(plan.placements.map(\.nodeID) == ["busy"])
        let spread = Self.scheduler(.spread).schedule(SchedulerInput(job: Self.job(count: 1), jobVersion: 0, jobStopped: false, nodes: nodes, allocations: [other]))
        #expect(spread.placements.map(\.nodeID) == ["empty"])
    }

    @Test func aFailedPlacementSaysWhyPerDimension() {
        let s = Self.scheduler()
        let nodes = [Self.node("a", mem: 512), Self.node("b", mem: 512), Self.node("mac", attrs: ["kernel.name": "darwin"]),
                     Self.node("old", drivers: ["raw_exec"])]
        let job = Self.job(count: 2, mem: 1024, constraints: [Constraint(attribute: "${attr.kernel.name}", operator: .equal, value: "linux")],
                           driver: .container)
        let plan = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: []))
        #expect(plan.placements.isEmpty)
        let f = try! #require(plan.failures.first)
        #expect(f.unplaced == 2 && f.nodesEvaluated == 4)
        #expect(f.description == "2 of group g not placed: memory exhausted on 2 nodes, constraint ${attr.kernel.name} = linux filtered 1, missing driver container filtered 1 (4 nodes evaluated)")
    }

    @Test func lostAllocationsAreReplacedOnTheSurvivors() {
        let s = Self.scheduler()
        var nodes = (0..<3).map { Self.node("n\($0)") }
        let job = Self.job(count: 3)
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        Self.apply(s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs)), to: &allocs, index: &index)
        let victim = allocs[0].nodeID
        nodes[nodes.firstIndex { $0.id == victim }!].status = .down
        for i in allocs.indices where allocs[i].nodeID == victim { allocs[i].clientStatus = .lost }
        let plan = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        #expect(plan.placements.count == 1)
        #expect(plan.placements[0].nodeID != victim)
        #expect(plan.placements[0].previousAllocation == allocs[0].id)
        #expect(plan.placements[0].name == allocs[0].name)
    }

    @Test func aFailedInstanceIsReplacedAfterItsRescheduleDelayGrowingPerAttemptUntilAttemptsRunOut() throws {
        let s = Self.scheduler()
        let nodes = (0..<2).map { Self.node("n\($0)") }
        var job = Self.job(count: 1)
        job.groups[0].reschedule = ReschedulePolicy(attempts: 3, interval: .seconds(3600), delay: .seconds(10), delayFunction: .exponential,
                                                    maxDelay: .seconds(25), unlimited: false)
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        Self.apply(s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs)), to: &allocs, index: &index)
        let failedAt: Int64 = 1_000_000
        func fail(_ i: Int) {
            allocs[i].clientStatus = .failed
            var t = TaskState()
            t.state = .dead
            t.failed = true
            t.finishedAt = failedAt
            allocs[i].taskStates = ["t": t]
        }
        fail(0)
        // Delays 10 s, 20 s, then 25 s (capped); nothing before, a replacement when due.
        for (attempt, delay) in [(0, 10_000), (1, 20_000), (2, 25_000)] as [(Int, Int64)] {
            let last = allocs.count - 1
            let early = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs, now: failedAt + delay - 1))
            #expect(early.placements.isEmpty, "attempt \(attempt) placed before its delay")
            #expect(early.delayed[allocs[last].name] == failedAt + delay)
            let due = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs, now: failedAt + delay))
            let replacement = try #require(due.placements.first)
            #expect(replacement.previousAllocation == allocs[last].id && replacement.rescheduleAttempts == attempt + 1)
            Self.apply(due, to: &allocs, index: &index)
            fail(allocs.count - 1)
        }
        // Three attempts used within the hour: the last failure stays failed.
        let done = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs, now: failedAt + 3_600_000))
        #expect(done.placements.isEmpty && done.delayed.isEmpty)
        // The window slides: once those failures are more than `interval` ago, it is tried again.
        let later = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs, now: failedAt + 3_600_001))
        #expect(later.placements.count == 1 && later.placements[0].rescheduleAttempts == 4)
        // Without the chain in the state (collected), every attempt counts: none left.
        let collected = allocs.filter { $0.id == allocs.last!.id }
        #expect(!Scheduler.mayReschedule(allocs.last!, job.groups[0].reschedule, now: failedAt + 3_600_001, lookup: { id in collected.first { $0.id == id } }))
        // Failures spread out (+0 s, +1 s, +3000 s, and the one looked at, +3500 s): an hour and
        // 1.5 s after the first, only the reschedule after +3000 s's failure is in the window.
        var spread = allocs.suffix(4).map { $0 }
        for (i, at) in [0, 1_000, 3_000_000, 3_500_000].enumerated() { spread[i].taskStates["t"]?.finishedAt = failedAt + Int64(at) }
        func policy(_ n: Int) -> ReschedulePolicy {
            ReschedulePolicy(attempts: n, interval: .seconds(3600), delay: .seconds(1), delayFunction: .constant, maxDelay: .seconds(1), unlimited: false)
        }
        let lookup = { (id: String) in spread.first { $0.id == id } }
        #expect(Scheduler.mayReschedule(spread[3], policy(2), now: failedAt + 3_601_500, lookup: lookup))
        #expect(!Scheduler.mayReschedule(spread[3], policy(1), now: failedAt + 3_601_500, lookup: lookup))
        #expect(!Scheduler.mayReschedule(spread[3], policy(2), now: failedAt + 3_600_500, lookup: lookup), "+1 s still inside")
        // A new version of the job tries again at once, with a fresh count.
        var v1 = job
        v1.groups[0].tasks[0].config.args = ["--fixed"]
        let fixed = s.schedule(SchedulerInput(job: v1, jobVersion: 1, jobStopped: false, nodes: nodes, allocations: allocs, previousVersions: [0: job],
                                              now: failedAt + 1))
        #expect(fixed.placements.count == 1 && fixed.placements[0].rescheduleAttempts == 0 && fixed.placements[0].jobVersion == 1)
        // Fibonacci growth: 5 s, 5 s, 10 s, 15 s, …
        #expect(Scheduler.rescheduleDelay(attempt: 3, .init(attempts: 0, interval: .zero, delay: .seconds(5), delayFunction: .fibonacci,
                                                            maxDelay: .seconds(60), unlimited: true)) == .seconds(15))
    }

    @Test func batchWorkThatFinishedIsNotRunAgain() {
        let s = Self.scheduler()
        let nodes = [Self.node("n0")]
        let job = Self.job(type: .batch, count: 2)
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        Self.apply(s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs)), to: &allocs, index: &index)
        for i in allocs.indices { allocs[i].clientStatus = .complete }
        #expect(s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs)).isEmpty)
    }

    @Test func systemJobsRunOncePerEligibleNodeIncludingNewOnes() {
        let s = Self.scheduler()
        var nodes = [Self.node("n0"), Self.node("n1"), Self.node("mac", attrs: ["kernel.name": "darwin"])]
        nodes[1].eligibility = .ineligible
        let job = Self.job(type: .system, constraints: [Constraint(attribute: "${attr.kernel.name}", operator: .equal, value: "linux")])
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        let plan = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        #expect(plan.placements.map(\.nodeID) == ["n0"])
        #expect(plan.failures.isEmpty, "nodes a system job does not fit are not failures")
        Self.apply(plan, to: &allocs, index: &index)
        nodes.append(Self.node("n3"))
        let next = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        #expect(next.placements.map(\.nodeID) == ["n3"])
    }

    @Test func stoppingAJobStopsItsAllocationsAndCountDownStopsTheHighest() {
        let s = Self.scheduler()
        let nodes = [Self.node("n0"), Self.node("n1")]
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        Self.apply(s.schedule(SchedulerInput(job: Self.job(count: 3), jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs)), to: &allocs, index: &index)
        let down = s.schedule(SchedulerInput(job: Self.job(count: 1), jobVersion: 1, jobStopped: false, nodes: nodes, allocations: allocs))
        #expect(Set(down.stops.filter { $0.desiredDescription.hasPrefix("count") }.map(\.name)) == ["web.g[1]", "web.g[2]"])
        let stopped = s.schedule(SchedulerInput(job: Self.job(count: 3), jobVersion: 0, jobStopped: true, nodes: nodes, allocations: allocs))
        #expect(stopped.stops.count == 3 && stopped.placements.isEmpty)
    }

    @Test func drainingMovesAllocationsAwayAtMostMaxParallelAtATime() {
        let s = Self.scheduler()
        var nodes = [Self.node("n0"), Self.node("n1")]
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        var job = Self.job(count: 4, cpu: 100, mem: 64)
        job.groups[0].migrate.maxParallel = 1
        Self.apply(s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs)), to: &allocs, index: &index)
        nodes[0].draining = true
        let plan = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        #expect(plan.stops.count == 1 && plan.stops[0].desiredStatus == .evict)
        #expect(plan.placements.count == 1 && plan.placements[0].nodeID == "n1")
    }

    @Test func aNewVersionThatRunsTheSameWorkIsAppliedInPlaceOtherwiseDestructively() {
        let s = Self.scheduler()
        let nodes = [Self.node("n0"), Self.node("n1")]
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        let v0 = Self.job(count: 2)
        Self.apply(s.schedule(SchedulerInput(job: v0, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs)), to: &allocs, index: &index)
        var v1 = Self.job(count: 3)
        v1.meta = ["owner": "ops"]
        let inPlace = s.schedule(SchedulerInput(job: v1, jobVersion: 1, jobStopped: false, nodes: nodes, allocations: allocs, previousVersions: [0: v0]))
        #expect(inPlace.updates.count == 2 && inPlace.updates.allSatisfy { $0.jobVersion == 1 })
        #expect(inPlace.stops.isEmpty && inPlace.placements.count == 1)
        var v2 = Self.job(count: 2)
        v2.groups[0].tasks[0].config.args = ["--new"]
        v2.update = UpdateStrategy()
        let destructive = s.schedule(SchedulerInput(job: v2, jobVersion: 1, jobStopped: false, nodes: nodes, allocations: allocs, previousVersions: [0: v0]))
        #expect(destructive.updates.isEmpty)
        #expect(destructive.stops.count == 1 && destructive.placements.count == 1, "update.maxParallel = 1 replaces one at a time")
    }

    /// Three running instances of version 0, and a version 1 that runs something else under an
    /// update policy (maxParallel 1, minHealthyTime 10 s, `canary` canaries).
    static func updateScenario(_ s: Scheduler, nodes: [Node], canary: Int = 0) -> (allocs: [Allocation], index: UInt64, v0: Job, v1: Job) {
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        let v0 = Self.job(count: 3)
        var first = s.schedule(SchedulerInput(job: v0, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        for i in first.placements.indices { first.placements[i].clientStatus = .running }
        Self.apply(first, to: &allocs, index: &index)
        var v1 = Self.job(count: 3)
        v1.groups[0].tasks[0].config.args = ["--v1"]
        var u = UpdateStrategy()
        u.maxParallel = 1
        u.canary = canary
        u.minHealthyTime = .seconds(10)
        v1.update = u
        return (allocs, index, v0, v1)
    }

    @Test func aRollingUpdateWaitsForEachReplacementToBeHealthyForMinHealthyTime() throws {
        let s = Self.scheduler()
        let nodes = [Self.node("n0"), Self.node("n1")]
        let scenario = Self.updateScenario(s, nodes: nodes)
        var (allocs, index) = (scenario.allocs, scenario.index)
        let (v0, v1) = (scenario.v0, scenario.v1)
        func pass(now: Int64) -> Plan {
            s.schedule(SchedulerInput(job: v1, jobVersion: 1, jobStopped: false, nodes: nodes, allocations: allocs, previousVersions: [0: v0], now: now))
        }
        let step1 = pass(now: 0)
        #expect(step1.stops.count == 1 && step1.placements.count == 1)
        Self.apply(step1, to: &allocs, index: &index)
        #expect(pass(now: 1_000).stops.isEmpty, "the replacement is still pending")
        let new = try #require(allocs.firstIndex { $0.id == step1.placements[0].id })
        allocs[new].clientStatus = .running
        allocs[new].checks = ["web.0.http": "critical"]
        var t = TaskState(state: .running)
        t.startedAt = 2_000
        allocs[new].taskStates = ["t": t]
        #expect(pass(now: 60_000).stops.isEmpty, "its check fails")
        allocs[new].checks = ["web.0.http": "passing"]
        #expect(pass(now: 11_999).stops.isEmpty, "healthy for less than minHealthyTime")
        let step2 = pass(now: 12_000)
        #expect(step2.stops.count == 1 && step2.placements.count == 1, "healthy long enough: the next one goes")
        // A replacement that fails holds the update where it is.
        Self.apply(step2, to: &allocs, index: &index)
        let second = try #require(allocs.firstIndex { $0.id == step2.placements[0].id })
        allocs[second].clientStatus = .failed
        #expect(pass(now: 100_000).stops.isEmpty)
    }

    @Test func canariesRunBesideTheOldInstancesUntilPromotedThenTheRestRollsOver() throws {
        let s = Self.scheduler()
        let nodes = [Self.node("n0"), Self.node("n1")]
        let scenario = Self.updateScenario(s, nodes: nodes, canary: 1)
        var (allocs, index) = (scenario.allocs, scenario.index)
        let (v0, v1) = (scenario.v0, scenario.v1)
        func pass(promoted: Bool, now: Int64 = 100_000) -> Plan {
            var input = SchedulerInput(job: v1, jobVersion: 1, jobStopped: false, nodes: nodes, allocations: allocs, previousVersions: [0: v0], now: now)
            input.promoted = promoted
            return s.schedule(input)
        }
        let canary = pass(promoted: false)
        #expect(canary.stops.isEmpty, "the old instances keep running")
        #expect(canary.placements.map(\.name) == ["web.g[0]"] && canary.placements[0].jobVersion == 1)
        Self.apply(canary, to: &allocs, index: &index)
        #expect(Scheduler.awaitingPromotion(v1, v1.groups[0], allocs, SchedulerInput(job: v1, jobVersion: 1, jobStopped: false, nodes: nodes,
                                                                                    allocations: allocs, previousVersions: [0: v0])))
        let c = try #require(allocs.firstIndex { $0.id == canary.placements[0].id })
        allocs[c].clientStatus = .running
        var t = TaskState(state: .running)
        t.startedAt = 1_000
        allocs[c].taskStates = ["t": t]
        #expect(pass(promoted: false).isEmpty, "healthy or not, nothing more until promoted")
        #expect(allocs.filter(\.isLive).count == 4, "three old instances and the canary")
        // Promoted: the old instance beside the canary stops, and the rolling update goes on.
        let step = pass(promoted: true)
        let oldG0 = try #require(allocs.first { $0.name == "web.g[0]" && $0.jobVersion == 0 })
        #expect(step.stops.contains { $0.id == oldG0.id && $0.desiredDescription.hasPrefix("replaced by promoted canary") })
        #expect(step.stops.count == 2 && step.placements.count == 1, "the canary's old twin, and one more (maxParallel 1)")
        #expect(step.placements[0].name != "web.g[0]")
        // A version whose instances run the same work needs no canaries: updated in place.
        var v2 = v1
        v2.groups[0].count = 3
        v2.meta = ["note": "x"]
        var input = SchedulerInput(job: v2, jobVersion: 2, jobStopped: false, nodes: nodes, allocations: allocs.map { var a = $0; a.jobVersion = 1; return a },
                                   previousVersions: [1: v1])
        input.promoted = false
        #expect(!Scheduler.awaitingPromotion(v2, v2.groups[0], input.allocations, input))
    }

    @Test func aDrainWaitsForMigratedInstancesToRunBeforeEvictingMore() {
        let s = Self.scheduler()
        var nodes = [Self.node("n0"), Self.node("n1")]
        var allocs: [Allocation] = []
        var index: UInt64 = 0
        var job = Self.job(count: 4, cpu: 100, mem: 64)
        job.groups[0].migrate.maxParallel = 1
        var first = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: [nodes[0]], allocations: allocs))
        for i in first.placements.indices { first.placements[i].clientStatus = .running }
        Self.apply(first, to: &allocs, index: &index)
        nodes[0].draining = true
        let step1 = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        Self.apply(step1, to: &allocs, index: &index)
        let step2 = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        #expect(step2.stops.isEmpty, "the replacement is not running yet")
        for i in allocs.indices where allocs[i].nodeID == "n1" { allocs[i].clientStatus = .running }
        let step3 = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
        #expect(step3.stops.count == 1 && step3.placements.count == 1)
    }

    @Test func thePlanApplierNeverOverCommitsWhenPlansRace() {
        let nodes = [Self.node("n0", cpu: 1000, mem: 1024)]
        // Two plans made from the same (empty) view, each fitting alone.
        let p1 = Self.scheduler().schedule(SchedulerInput(job: Self.job("a", count: 1, cpu: 600), jobVersion: 0, jobStopped: false, nodes: nodes, allocations: []))
        let p2 = Self.scheduler().schedule(SchedulerInput(job: Self.job("b", count: 1, cpu: 600), jobVersion: 0, jobStopped: false, nodes: nodes, allocations: []))
        let v1 = PlanApplier.verify(p1, nodes: nodes, allocations: [])
        #expect(v1.accepted.placements.count == 1)
        let v2 = PlanApplier.verify(p2, nodes: nodes, allocations: v1.accepted.placements)
        #expect(v2.accepted.placements.isEmpty && v2.rejectedNodes == ["n0"])
    }

    @Test func randomClustersAreNeverOverCommittedAndEveryPlacementSatisfiesItsConstraints() async {
        await propertyCheck(count: 300, input: Gen.uint64()) { seed in
            var r = SeededRandom(seed: seed)
            let racks = ["r1", "r2", "r3"]
            let nodes = (0..<Int.random(in: 1...20, using: &r)).map { i in
                Self.node("n\(i)", cpu: [1000, 2000, 4000].randomElement(using: &r)!, mem: [1024, 4096, 8192].randomElement(using: &r)!,
                          attrs: ["kernel.name": r.chance(0.8) ? "linux" : "darwin", "rack": racks.randomElement(using: &r)!])
            }
            var allocs: [Allocation] = []
            var index: UInt64 = 0
            let s = Self.scheduler()
            for j in 0..<Int.random(in: 1...6, using: &r) {
                let cons: [Constraint] = r.chance(0.5) ? [Constraint(attribute: "${attr.kernel.name}", operator: .equal, value: "linux")] : []
                var job = Self.job("j\(j)", count: Int.random(in: 1...15, using: &r), cpu: Int.random(in: 1...8, using: &r) * 100,
                                   mem: Int.random(in: 1...16, using: &r) * 128, constraints: cons)
                if r.chance(0.3) { job.constraints.append(Constraint(attribute: "", operator: .distinctHosts, value: "")) }
                if r.chance(0.3) { job.spreads = [Spread(attribute: "${attr.rack}")] }
                let plan = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: allocs))
                let verdict = PlanApplier.verify(plan, nodes: nodes, allocations: allocs)
                #expect(verdict.rejectedNodes.isEmpty, "a fresh plan must fit (seed \(seed))")
                Self.apply(verdict.accepted, to: &allocs, index: &index)
                let byNode = Dictionary(uniqueKeysWithValues: nodes.map { ($0.id, $0) })
                for p in plan.placements {
                    for c in job.constraints where c.operator == .equal {
                        #expect(Feasibility.holds(c, on: byNode[p.nodeID]!), "seed \(seed): \(p.nodeID) violates \(c)")
                    }
                }
                if job.constraints.contains(where: { $0.operator == .distinctHosts }) {
                    let mine = plan.placements.map(\.nodeID)
                    #expect(Set(mine).count == mine.count, "seed \(seed): distinct_hosts violated")
                }
                // Placed + unplaced = count.
                #expect(plan.placements.count + plan.failures.reduce(0) { $0 + $1.unplaced } == job.groups[0].count)
            }
            #expect(Self.overCommitted(nodes, allocs).isEmpty, "seed \(seed)")
        }
    }

    @Test func constraintOperators() {
        let n = Self.node("n", attrs: ["kernel.name": "linux", "kernel.version": "6.1.0", "cpu.cores": "8", "features": "avx,sse4"])
        func holds(_ a: String, _ op: Constraint.Operator, _ v: String) -> Bool { Feasibility.holds(Constraint(attribute: a, operator: op, value: v), on: n) }
        #expect(holds("${attr.kernel.name}", .equal, "linux") && !holds("${attr.kernel.name}", .notEqual, "linux"))
        #expect(holds("${attr.cpu.cores}", .greater, "4") && !holds("${attr.cpu.cores}", .less, "4"))
        #expect(holds("${attr.kernel.version}", .version, ">= 5.10, < 7"))
        #expect(!holds("${attr.kernel.version}", .version, "< 6"))
        #expect(holds("${attr.kernel.name}", .regexp, "^lin"))
        #expect(holds("${attr.features}", .setContains, "avx"))
        #expect(holds("${attr.features}", .isSet, "") && holds("${attr.gpu}", .isNotSet, ""))
        #expect(holds("${node.unique.name}", .equal, "n"))
    }
}
