import CaravanModel
import CaravanTesting
@testable import ClusterState
import PropertyBased
import Testing

@Suite struct ClusterStateTests {
    static func jobText(_ id: String, count: Int = 2, cpu: String = "100m", canary: Int = 0) -> String {
        """
        id: \(id)
        \(canary > 0 ? "update: {canary: \(canary)}" : "")
        groups:
          - name: g
            count: \(count)
            tasks:
              - {name: t, driver: raw_exec, config: {command: /bin/true}, resources: {cpu: \(cpu), memory: 32Mi}}
        """
    }

    static func node(_ id: String) -> Node { Node(id: id, address: "127.0.0.1", cpuMillicores: 2000, memoryMiB: 4096, diskMiB: 10000) }

    static func alloc(_ id: String, node: String, job: String = "web") -> Allocation {
        Allocation(id: id, jobID: job, jobVersion: 0, group: "g", name: "\(job).g[0]", nodeID: node, cpuMillicores: 100, memoryMiB: 32, diskMiB: 300)
    }

    @Test func aStateAdoptedFromAnotherClusterIsNewAtItsIndexAndItsForeignNodesAreDown() throws {
        // The old cluster's indices run far past the new cluster's log.
        var s = ClusterState()
        for (i, n) in ["a", "b", "keep"].enumerated() { #expect(s.apply(.upsertNode(Self.node(n)), index: UInt64(900 + i)) == .applied) }
        #expect(s.apply(.nodeStatus(id: "b", status: .down), index: 950) == .applied)
        #expect(s.apply(.applyPlan(allocations: [Self.alloc("x", node: "a"), Self.alloc("y", node: "keep", job: "db")], evaluations: []), index: 990) == .applied)
        var adopted = try ClusterState.restore(s.snapshot())
        let rebase = ClusterState.Rebasing(adopted.objectIndexes, to: 40)
        adopted.adopt(at: 40, members: ["keep", "new"], rebase: rebase)
        #expect(adopted.lastIndex == 40 && ClusterState.Table.allCases.allSatisfy { adopted.index(of: [$0]) == 40 })
        #expect(adopted.nodes["a"]?.status == .down && adopted.nodes["b"]?.status == .down && adopted.nodes["keep"]?.status == .ready)
        // Every object's indexes renumbered in order, ending at the restore's: distinct values
        // 900, 901, 902, 950, 990 become 36…40.
        #expect(adopted.nodes["a"]?.createIndex == 36 && adopted.nodes["keep"]?.createIndex == 38)
        #expect(adopted.nodes["b"]?.modifyIndex == 39, "a node already down is left down, its index renumbered")
        #expect(adopted.allocations["y"]?.createIndex == 40)
        #expect(adopted.allocations["x"]?.clientStatus == .lost && adopted.allocations["x"]?.modifyIndex == 40)
        #expect(adopted.objectIndexes.max() == 40)
        // More distinct indexes than the restore's index: only the oldest share 1.
        let crowded = ClusterState.Rebasing([5, 6, 7, 8], to: 2)
        #expect([0, 5, 6, 7, 8].map { crowded($0) } == [0, 1, 1, 1, 2])
        // What comes next in the new log is newer than everything adopted.
        #expect(adopted.apply(.upsertNode(Self.node("new")), index: 41) == .applied && adopted.index(of: [.nodes]) == 41)
    }

    @Test func aRegistrationWithAnIdNoJobFileGivesIsRefusedAndPeriodicIdsLeaveRoomForLaunches() throws {
        var job = try JobFile.parse(Self.jobText("web"))
        job.id = String(repeating: "a", count: 129)
        var s = ClusterState()
        #expect(s.apply(.register(job), index: 1) == .rejected("job id \"\(job.id)\" is not 1-128 letters, digits, '-', '_' or '.'"))
        #expect(s.jobs.isEmpty)
        let periodic = { (id: String) in "id: \(id)\ntype: batch\nperiodic: {cron: \"* * * * *\"}\n" + Self.jobText("x").split(separator: "\n").dropFirst().joined(separator: "\n") }
        #expect(throws: JobFileError.self) { try JobFile.parse(periodic(String(repeating: "p", count: JobFile.maxPeriodicIDLength + 1))) }
        let longest = try JobFile.parse(periodic(String(repeating: "p", count: JobFile.maxPeriodicIDLength)))
        let child = Periodic.child(of: longest, at: 99_999_999_999)
        #expect(JobFile.isValidID(child.id) && s.registrationRefusal(child) == nil)
    }

    @Test func namespacesAreKeptRefusedWhileInUseAndInSnapshots() throws {
        var s = ClusterState()
        #expect(s.namespaceExists("default") && !s.namespaceExists("team-a"))
        let ns = Namespace(name: "team-a", description: "A", quota: Quota(cpuMillicores: 2000, memoryMiB: nil, instances: 4))
        #expect(s.apply(Command.upsertNamespace(ns).encode(), index: 3) == .applied)
        #expect(s.namespaces["team-a"]?.quota == ns.quota && s.namespaces["team-a"]?.createIndex == 3 && s.index(of: [.namespaces]) == 3)
        #expect(s.apply(.registerJob(text: Self.jobText("web").replacingOccurrences(of: "id: web", with: "id: web\nnamespace: team-a")), index: 4) == .applied)
        #expect(s.apply(.deleteNamespace("team-a"), index: 5) == .rejected("namespace team-a holds 1 job; stop and purge them first"))
        #expect(s.apply(.deleteNamespace("default"), index: 6) == .rejected("namespace default cannot be deleted"))
        #expect(s.apply(.deleteNamespace("nope"), index: 7) == .rejected("namespace nope does not exist"))
        let restored = try ClusterState.restore(s.snapshot())
        #expect(restored == s)
        _ = s.apply(.deregisterJob(namespace: "team-a", id: "web", purge: true), index: 8)
        #expect(s.apply(.deleteNamespace("team-a"), index: 9) == .applied && !s.namespaceExists("team-a"))
        // A register that lost the race with the delete is refused by the log itself.
        #expect(s.apply(.registerJob(text: Self.jobText("late").replacingOccurrences(of: "id: late", with: "id: late\nnamespace: team-a")), index: 10)
                == .rejected("namespace team-a does not exist"))
        // Before any namespace command (logs from before namespaces), any namespace goes.
        var old = ClusterState()
        #expect(old.apply(.registerJob(text: Self.jobText("legacy").replacingOccurrences(of: "id: legacy", with: "id: legacy\nnamespace: team-x")), index: 1) == .applied)
        for c in [Command.upsertNamespace(ns), .deleteNamespace("team-a")] { #expect(Command.decode(c.encode()) == .command(c)) }
    }

    @Test func aNamespaceDriverRuleRefusesJobsThatUseAnotherDriverAndIsKept() throws {
        var s = ClusterState()
        var ns = Namespace(name: "team-b", quota: Quota(instances: 3))
        ns.drivers = DriverRule(enabled: [.exec, .container])
        #expect(s.apply(Command.upsertNamespace(ns).encode(), index: 2) == .applied)
        let raw = Self.jobText("web").replacingOccurrences(of: "id: web", with: "id: web\nnamespace: team-b")
        #expect(s.apply(.registerJob(text: raw), index: 3) == .rejected("namespace team-b does not allow the raw_exec driver (task g.t)"))
        #expect(s.apply(.registerJob(text: raw.replacingOccurrences(of: "raw_exec", with: "exec")), index: 4) == .applied)
        // Another namespace (and default) is not bound by it.
        #expect(s.apply(.registerJob(text: Self.jobText("web")), index: 5) == .applied)
        // A disabled driver wins over an enabled one; the rule goes through the log and snapshots.
        ns.drivers = DriverRule(enabled: [.exec, .rawExec], disabled: [.exec])
        #expect(Command.decode(Command.upsertNamespace(ns).encode()) == .command(.upsertNamespace(ns)))
        #expect(s.apply(Command.upsertNamespace(ns).encode(), index: 6) == .applied)
        #expect(s.apply(.registerJob(text: raw.replacingOccurrences(of: "raw_exec", with: "exec").replacingOccurrences(of: "count: 2", with: "count: 1")), index: 7)
                == .rejected("namespace team-b does not allow the exec driver (task g.t)"))
        let restored = try ClusterState.restore(s.snapshot())
        #expect(restored == s && restored.namespaces["team-b"]?.drivers == ns.drivers && restored.namespaces["team-b"]?.quota?.instances == 3)
        // A version registered before the rule may not be promoted after it.
        let canary = Self.jobText("c", canary: 1).replacingOccurrences(of: "id: c", with: "id: c\nnamespace: team-c")
        #expect(s.apply(.upsertNamespace(Namespace(name: "team-c")), index: 10) == .applied)
        #expect(s.apply(.registerJob(text: canary), index: 11) == .applied)
        #expect(s.apply(.registerJob(text: canary.replacingOccurrences(of: "count: 2", with: "count: 3")), index: 12) == .applied)
        var locked = Namespace(name: "team-c")
        locked.drivers = DriverRule(disabled: [.rawExec])
        #expect(s.apply(.upsertNamespace(locked), index: 13) == .applied)
        #expect(s.apply(.promote(namespace: "team-c", id: "c", version: 1), index: 14) == .rejected("namespace team-c does not allow the raw_exec driver (task g.t)"))
    }

    @Test func everyRegisterThatChangesTheJobMakesAVersion() {
        var s = ClusterState()
        #expect(s.apply(Command.registerJob(text: Self.jobText("web")).encode(), index: 5) == .applied)
        let key = ClusterState.JobKey("default", "web")
        #expect(s.jobs[key]?.version == 0 && s.jobs[key]?.createIndex == 5)
        _ = s.apply(.registerJob(text: Self.jobText("web")), index: 6)
        #expect(s.jobs[key]?.version == 0, "an unchanged job is not a new version")
        _ = s.apply(.registerJob(text: Self.jobText("web", count: 3)), index: 7)
        #expect(s.jobs[key]?.version == 1 && s.jobs[key]?.modifyIndex == 7 && s.jobs[key]?.createIndex == 5)
        #expect(s.versions[key]?.map(\.version) == [1, 0])
        #expect(s.index(of: [.jobs]) == 7)
        _ = s.apply(.deregisterJob(namespace: "default", id: "web", purge: false), index: 8)
        #expect(s.jobs[key]?.stopped == true)
        _ = s.apply(.deregisterJob(namespace: "default", id: "web", purge: true), index: 9)
        #expect(s.jobs[key] == nil && s.versions[key] == nil)
        #expect(s.apply(.deregisterJob(namespace: "default", id: "web", purge: true), index: 10) == .rejected("job web is not registered"))
    }

    @Test func aNodeGoingDownLosesItsLiveAllocations() {
        var s = ClusterState()
        _ = s.apply(.upsertNode(Self.node("n1")), index: 1)
        _ = s.apply(.upsertNode(Self.node("n2")), index: 2)
        var done = Self.alloc("a3", node: "n1")
        done.clientStatus = .complete
        _ = s.apply(.applyPlan(allocations: [Self.alloc("a1", node: "n1"), Self.alloc("a2", node: "n2"), done], evaluations: []), index: 3)
        #expect(s.used(onNode: "n1") == (100, 32, 300))
        _ = s.apply(.nodeStatus(id: "n1", status: .down), index: 4)
        #expect(s.allocations["a1"]?.clientStatus == .lost)
        #expect(s.allocations["a2"]?.clientStatus == .pending)
        #expect(s.allocations["a3"]?.clientStatus == .complete)
        #expect(s.used(onNode: "n1") == (0, 0, 0))
        // A lost allocation stays lost whatever its old node reports later.
        _ = s.apply(.clientUpdate([.init(allocationID: "a1", clientStatus: .running, description: "")]), index: 5)
        #expect(s.allocations["a1"]?.clientStatus == .lost)
        // Re-registering a node keeps the operator's eligibility and drain.
        _ = s.apply(.nodeDrain(id: "n2", draining: true), index: 6)
        _ = s.apply(.upsertNode(Self.node("n2")), index: 7)
        #expect(s.nodes["n2"]?.draining == true && s.nodes["n2"]?.eligibility == .ineligible && s.nodes["n2"]?.createIndex == 2)
    }

    @Test func unknownCommandsAreIgnoredOnlyWhenMarkedIgnorable() {
        var s = ClusterState()
        #expect(s.apply([0xBE, 1, 2], index: 1) == .ignoredAsUnknown)
        #expect(s.apply([0x3E, 1, 2], index: 2) == .rejected("unknown command type 62"))
        #expect(s.apply([Command.Tag.upsertNode.rawValue, 9], index: 3) == .rejected("malformed upsertNode command"))
        #expect(s.apply(Command.registerJob(text: "id: x").encode(), index: 4) != .applied)
        #expect(s.jobs.isEmpty && s.nodes.isEmpty)
    }

    /// A random but valid sequence of commands.
    static func commands(seed: UInt64) -> [Command] {
        var r = SeededRandom(seed: seed)
        var out: [Command] = []
        var allocIDs: [String] = []
        for i in 0..<Int.random(in: 1...40, using: &r) {
            let nodeID = "n\(Int.random(in: 0..<4, using: &r))"
            switch Int.random(in: 0..<8, using: &r) {
            case 0: out.append(.registerJob(text: jobText("j\(Int.random(in: 0..<3, using: &r))", count: Int.random(in: 0...5, using: &r),
                                                          canary: r.chance(0.3) ? 1 : 0)))
            case 1: out.append(.deregisterJob(namespace: "default", id: "j\(Int.random(in: 0..<3, using: &r))", purge: r.chance(0.3)))
            case 2:
                var n = node(nodeID)
                n.attributes = ["kernel.name": "linux", "rack": "r\(i % 3)"]
                n.meta = r.chance(0.5) ? ["zone": "a"] : [:]
                n.drivers = ["raw_exec"]
                out.append(.upsertNode(n))
            case 3: out.append(.nodeStatus(id: nodeID, status: r.chance(0.5) ? .down : .ready))
            case 4: out.append(r.chance(0.5) ? .nodeDrain(id: nodeID, draining: r.chance(0.5)) : .nodeEligibility(id: nodeID, eligibility: .ineligible))
            case 5:
                let id = "a\(i)"
                allocIDs.append(id)
                var a = alloc(id, node: nodeID, job: "j\(i % 3)")
                a.ports = ["http": 20000 + i]
                var e = Evaluation(id: "e\(i)", jobID: "j\(i % 3)", priority: 50, triggeredBy: .jobRegister)
                e.failedPlacements = r.chance(0.5) ? ["g": "memory exhausted on 2 nodes"] : [:]
                out.append(.applyPlan(allocations: [a], evaluations: [e]))
            case 6:
                if let id = allocIDs.randomElement(using: &r) {
                    out.append(.clientUpdate([.init(allocationID: id, clientStatus: [.running, .complete, .failed].randomElement(using: &r)!, description: "x")]))
                }
            case 7 where r.chance(0.3):
                out.append(.periodicLaunch(namespace: "default", id: "j\(i % 3)", time: Int64(1_795_000_000 + i * 60)))
            case 7 where r.chance(0.3):
                out.append(.schedulerConfig(algorithm: r.chance(0.5) ? "spread" : "binpack"))
            case 7 where r.chance(0.3):
                out.append(.promote(namespace: "default", id: "j\(i % 3)", version: Int.random(in: 0...2, using: &r)))
            case 7 where r.chance(0.3):
                out.append(.markStable(namespace: "default", id: "j\(i % 3)", version: Int.random(in: 0...2, using: &r)))
            default:
                var e = Evaluation(id: "e\(i % 5)", jobID: "j0", priority: 70, triggeredBy: .nodeUpdate)
                e.status = .complete
                e.nodeID = nodeID
                out.append(.upsertEvaluations([e]))
            }
        }
        return out
    }

    @Test func commandsRoundTripThroughTheirEncoding() async {
        await propertyCheck(count: 200, input: Gen.uint64()) { seed in
            for c in Self.commands(seed: seed) { #expect(Command.decode(c.encode()) == .command(c)) }
        }
    }

    @Test func applyIsDeterministicAndSnapshotsRoundTripExactly() async {
        await propertyCheck(count: 200, input: Gen.uint64()) { seed in
            let cmds = Self.commands(seed: seed)
            var a = ClusterState(), b = ClusterState()
            for (i, c) in cmds.enumerated() {
                let held = a  // a reader holding the state while the next command applies
                _ = a.apply(c.encode(), index: UInt64(i + 1))
                _ = b.apply(c.encode(), index: UInt64(i + 1))
                // The kept indexes (use per node and namespace, allocations by job and node,
                // evaluations by job) always agree with the tables added up from scratch.
                #expect(a.indexDrift() == [], "after \(c)")
                #expect(held.indexDrift() == [])
            }
            #expect(a == b)
            #expect(a.snapshot() == b.snapshot(), "the same state must encode to the same bytes")
            let restored = try? ClusterState.restore(a.snapshot())
            #expect(restored == a)
            #expect(restored?.indexDrift() == [])
        }
    }

    /// The state has the last word on capacity: a plan decided while an earlier one's fate was
    /// unknown, applied after that one, places only what still fits; the rest is not made, the
    /// plan's evaluation says so, and a new pending evaluation asks for the job to be looked at again.
    @Test func aPlacementThatNoLongerFitsWhenAppliedIsNotMadeAndItsJobIsEvaluatedAgain() {
        var s = ClusterState()
        _ = s.apply(.upsertNode(Self.node("n1")), index: 1)  // 2000m, 4096Mi
        var first: [Allocation] = []
        for i in 0..<15 { first.append(Self.alloc("x\(i)", node: "n1", job: "web")) }  // 1500m
        #expect(s.apply(.applyPlan(allocations: first, evaluations: []), index: 2) == .applied)
        var second: [Allocation] = []
        for i in 0..<8 { second.append(Self.alloc("y\(i)", node: "n1", job: "api")) }  // 800m more: 5 fit
        var e = Evaluation(id: "e1", jobID: "api", priority: 50, triggeredBy: .jobRegister)
        e.status = .complete
        #expect(s.apply(.applyPlan(allocations: second, evaluations: [e]), index: 3) == .applied)
        #expect(s.used(onNode: "n1").cpuMillicores == 2000)
        #expect(s.allocations(ofJob: .init("default", "api")).count == 5)
        let evals = s.evaluations(ofJob: .init("default", "api"))
        #expect(evals.contains { $0.id == "e1" && $0.statusDescription.contains("no longer fit") })
        #expect(evals.contains { $0.status == .pending && $0.triggeredBy == .queued })
        // A stop in the same plan frees room for its placements.
        var stop = s.allocations["x0"]!
        stop.desiredStatus = .stop
        #expect(s.apply(.applyPlan(allocations: [stop, Self.alloc("z0", node: "n1", job: "web")], evaluations: []), index: 4) == .applied)
        #expect(s.allocations["z0"] != nil && s.used(onNode: "n1").cpuMillicores == 2000)
        #expect(s.indexDrift() == [])

        // A port a live allocation holds is not given to another.
        _ = s.apply(.upsertNode(Self.node("n2")), index: 5)
        var web = Self.alloc("p1", node: "n2", job: "web")
        web.ports = ["http": 8080]
        var clash = Self.alloc("p2", node: "n2", job: "api")
        clash.ports = ["http": 8080]
        #expect(s.apply(.applyPlan(allocations: [web, clash], evaluations: []), index: 6) == .applied)
        #expect(s.allocations["p1"] != nil && s.allocations["p2"] == nil)

        // A plan decided before its allocation was lost does not bring it back to life.
        _ = s.apply(.nodeStatus(id: "n2", status: .down), index: 7)
        #expect(s.allocations["p1"]?.clientStatus == .lost)
        var update = web
        update.jobVersion = 1
        #expect(s.apply(.applyPlan(allocations: [update], evaluations: []), index: 8) == .applied)
        #expect(s.allocations["p1"]?.clientStatus == .lost && s.allocations["p1"]?.jobVersion == 1 && s.liveAllocations(onNode: "n2").isEmpty)
        #expect(s.indexDrift() == [])

        // A second instance of a name and version that already runs (a plan decided again after
        // its first commit timed out, then landed) is not made.
        _ = s.apply(.register(try! JobFile.parse("id: svc\ngroups:\n  - name: g\n    tasks: [{name: t, driver: raw_exec, config: {command: /bin/true}}]\n")), index: 9)
        _ = s.apply(.upsertNode(Self.node("n3")), index: 10)
        var first1 = Self.alloc("s1", node: "n3", job: "svc")
        first1.name = "svc.g[0]"
        var again = first1
        again.id = "s2"
        #expect(s.apply(.applyPlan(allocations: [first1], evaluations: []), index: 11) == .applied)
        #expect(s.apply(.applyPlan(allocations: [again], evaluations: []), index: 12) == .applied)
        #expect(s.allocations["s1"] != nil && s.allocations["s2"] == nil)
        var newer = again
        newer.jobVersion = 1  // a canary of a newer version beside it is made
        #expect(s.apply(.applyPlan(allocations: [newer], evaluations: []), index: 13) == .applied)
        #expect(s.allocations["s2"] != nil)

        // A plan in an older log (written before plans were checked) is applied as it was then,
        // so a log replays to the same state.
        var old = ClusterState()
        _ = old.apply(.upsertNode(Self.node("n1")), index: 1)
        var bytes = Command.applyPlan(allocations: (0..<25).map { Self.alloc("o\($0)", node: "n1") }, evaluations: []).encode()
        bytes[0] = 0x07
        #expect(old.apply(bytes, index: 2) == .applied)
        #expect(old.allocations.count == 25 && old.used(onNode: "n1").cpuMillicores == 2500)
    }

    @Test func onlyTheNewestEvaluationsOfAJobAreKept() {
        var s = ClusterState()
        for i in 0..<25 {
            _ = s.apply(.upsertEvaluations([Evaluation(id: "e\(i)", jobID: "web", priority: 50, triggeredBy: .jobRegister)]), index: UInt64(i + 1))
        }
        _ = s.apply(.upsertEvaluations([Evaluation(id: "other", jobID: "db", priority: 50, triggeredBy: .jobRegister)]), index: 100)
        #expect(s.evaluations.values.filter { $0.jobID == "web" }.count == ClusterState.evaluationsKept)
        #expect(s.evaluations["e24"] != nil && s.evaluations["e0"] == nil && s.evaluations["other"] != nil)
    }

    @Test func finishedAllocationsAreCollectedButLiveOnesAndTheirPredecessorsStay() {
        var s = ClusterState()
        _ = s.apply(.upsertNode(Self.node("n1")), index: 1)
        var index: UInt64 = 2
        var live = Self.alloc("live", node: "n1")
        live.previousAllocation = "a0"
        _ = s.apply(.applyPlan(allocations: [live], evaluations: []), index: index)
        for i in 0..<80 {
            index += 1
            var a = Self.alloc("a\(i)", node: "n1")
            a.clientStatus = .complete
            _ = s.apply(.applyPlan(allocations: [a], evaluations: []), index: index)
        }
        let finished = s.allocations.values.filter(\.isTerminal)
        #expect(finished.count == ClusterState.finishedAllocationsKept + 1, "the newest 50, plus a0 which a live one replaces")
        #expect(s.allocations["a0"] != nil && s.allocations["a79"] != nil && s.allocations["a5"] == nil && s.allocations["live"] != nil)
    }

    @Test func theSchedulerAlgorithmIsClusterWideValidatedAndKeptInSnapshots() throws {
        var s = ClusterState()
        #expect(s.schedulerAlgorithm == "binpack")
        #expect(s.apply(Command.schedulerConfig(algorithm: "spread").encode(), index: 1) == .applied)
        #expect(s.schedulerAlgorithm == "spread" && s.index(of: [.config]) == 1)
        #expect(s.apply(Command.schedulerConfig(algorithm: "fastest").encode(), index: 2) != .applied)
        #expect(s.schedulerAlgorithm == "spread", "a refused change leaves the configuration as it was")
        #expect(try ClusterState.restore(s.snapshot()).schedulerAlgorithm == "spread")
    }

    @Test func aDamagedSnapshotIsRefused() {
        var s = ClusterState()
        _ = s.apply(.upsertNode(Self.node("n1")), index: 1)
        let bytes = s.snapshot()
        #expect(throws: ClusterState.RestoreError.self) { try ClusterState.restore(Array(bytes.dropLast())) }
        #expect(throws: ClusterState.RestoreError.self) { try ClusterState.restore([9] + bytes.dropFirst()) }
    }
}
