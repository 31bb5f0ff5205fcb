import CaravanTesting
import Testing
@testable import Gossip
import GossipSimulation

/// Whole clusters in virtual time. Each test prints its seed on failure (it is in the test name).
@Suite struct SimulationTests {
    /// Deaths declared about nodes that were running at the time.
    static func falseDeaths(_ sim: GossipSimulator, running: Set<String>) -> [String] {
        sim.events.compactMap { e in
            if case .memberDied(let m, _) = e.event, running.contains(m.name) { return "\(e.node) declared \(m.name) dead at \(e.at)" }
            return nil
        }
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func hundredNodesJoiningOneSeedConverge(seed: UInt64) {
        var sim = GossipSimulator(seed: seed, faults: .init(latency: .microseconds(200) ... .milliseconds(2)))
        sim.startCluster(100)
        let took = sim.run(until: .seconds(15)) { $0.converged() }
        #expect(took != nil, "seed \(seed): not converged")
        #expect(took! < .seconds(5), "seed \(seed): convergence took \(took!)")
    }

    @Test(arguments: [11, 12, 13] as [UInt64])
    func aCrashedNodeIsDeclaredDeadByEveryLiveNode(seed: UInt64) {
        var sim = GossipSimulator(seed: seed, faults: .init(latency: .microseconds(200) ... .milliseconds(2)))
        sim.startSettled(50)
        sim.run(for: .seconds(3))
        sim.crash(17)
        let took = sim.run(until: .seconds(20)) { $0.everyone(sees: "node-17", as: .dead) }
        #expect(took != nil, "seed \(seed)")
        // The crashed process's port refuses connections: the verdict comes fast.
        #expect(took! <= .seconds(2), "seed \(seed): took \(took!)")
    }

    @Test(arguments: [21, 22] as [UInt64])
    func aVanishedHostIsDeclaredDeadThroughSuspicion(seed: UInt64) {
        var sim = GossipSimulator(seed: seed, faults: .init(latency: .microseconds(200) ... .milliseconds(2)))
        sim.crashesRefuse = false
        sim.startSettled(50)
        sim.run(for: .seconds(3))
        sim.crash(5)
        let took = sim.run(until: .seconds(30)) { $0.everyone(sees: "node-5", as: .dead) }
        #expect(took != nil, "seed \(seed)")
        #expect(took! <= .seconds(6), "seed \(seed): took \(took!)")
    }

    /// With and without the TCP fallback ping: UDP probing alone must hold at 5% loss too.
    @Test(arguments: [(31, true), (32, true), (33, false), (34, false)] as [(UInt64, Bool)])
    func noLiveNodeIsDeclaredDeadAtFivePercentLoss(seed: UInt64, tcpPing: Bool) {
        var sim = GossipSimulator(seed: seed, faults: .init(loss: 0.05, latency: .microseconds(200) ... .milliseconds(3)))
        sim.tcpPing = tcpPing
        sim.startSettled(50)
        sim.run(for: .seconds(120))
        let running = Set(sim.order.map { sim.nodes[$0]!.name })
        #expect(Self.falseDeaths(sim, running: running).isEmpty, "seed \(seed)")
        #expect(sim.converged())
    }

    @Test(arguments: [41, 42] as [UInt64])
    func aStallingNodeIsNotDeclaredDead(seed: UInt64) {
        // Lifeguard: one node stalls 500 ms every 2 s (a GC pause, an overloaded host).
        var sim = GossipSimulator(seed: seed, faults: .init(latency: .microseconds(200) ... .milliseconds(2)))
        sim.startSettled(30)
        for _ in 0..<30 {
            sim.stall(7, for: .milliseconds(500))
            sim.run(for: .seconds(2))
        }
        let running = Set(sim.order.map { sim.nodes[$0]!.name })
        #expect(Self.falseDeaths(sim, running: running).isEmpty, "seed \(seed)")
        #expect(sim.converged())
    }

    @Test(arguments: [45] as [UInt64])
    func aNodeFrozenTwoAndAHalfSecondsOfEveryFiveRefutes(seed: UInt64) {
        var sim = GossipSimulator(seed: seed, faults: .init(latency: .microseconds(200) ... .milliseconds(2)))
        sim.startSettled(20)
        for _ in 0..<12 {
            sim.stall(3, for: .milliseconds(2500))
            sim.run(for: .seconds(5))
        }
        let running = Set(sim.order.map { sim.nodes[$0]!.name })
        #expect(Self.falseDeaths(sim, running: running).isEmpty, "seed \(seed)")
    }

    @Test(arguments: [51, 52] as [UInt64])
    func aPartitionHealsAndConverges(seed: UInt64) {
        var sim = GossipSimulator(seed: seed, faults: .init(latency: .microseconds(200) ... .milliseconds(2)))
        sim.startSettled(20)
        sim.run(for: .seconds(2))
        let left = Set((0..<10).map(GossipSimulator.address))
        sim.net.partition([left])
        // Each side declares the other dead.
        let split = sim.run(until: .seconds(30)) { s in
            s.order.allSatisfy { a in
                let v = s.view(of: a)
                return v.filter { $0.value == .alive }.count == 10
            }
        }
        #expect(split != nil, "seed \(seed): sides did not separate")
        sim.net.heal()
        let healed = sim.run(until: .seconds(60)) { $0.converged() }
        #expect(healed != nil, "seed \(seed): did not converge after heal")
    }

    @Test func aGracefulLeaveShowsLeftEverywhere() {
        var sim = GossipSimulator(seed: 61)
        sim.startSettled(20)
        sim.run(for: .seconds(1))
        let a = GossipSimulator.address(4)
        var inst = sim.nodes[a]!
        let ds = inst.leave(now: sim.now)
        sim.nodes[a] = inst
        #expect(!ds.isEmpty)
        sim.run(for: .milliseconds(500))
        sim.crash(4)
        let took = sim.run(until: .seconds(5)) { $0.everyone(sees: "node-4", as: .left) }
        #expect(took != nil)
        #expect(!sim.events.contains { if case .memberDied(let m, _) = $0.event { m.name == "node-4" } else { false } })
    }

    @Test func metadataChangesReachEveryNode() {
        var sim = GossipSimulator(seed: 71, faults: .init(loss: 0.02, latency: .microseconds(200) ... .milliseconds(2)))
        sim.startSettled(40)
        sim.run(for: .seconds(2))
        let a = GossipSimulator.address(9)
        _ = sim.nodes[a]!.updateMetadata([1, 2, 3, 4], now: sim.now)
        let took = sim.run(until: .seconds(10)) { s in
            s.order.allSatisfy { s.nodes[$0]!.member(named: "node-9")?.metadata == [1, 2, 3, 4] }
        }
        #expect(took != nil)
        #expect(took! < .seconds(1))
    }

    @Test func metadataChurnIsRateLimited() {
        var sim = GossipSimulator(seed: 72)
        sim.startSettled(5)
        let a = GossipSimulator.address(1)
        let before = sim.nodes[a]!.incarnation
        for i in 0..<50 {
            _ = sim.nodes[a]!.updateMetadata([UInt8(i)], now: sim.now)
            sim.run(for: .milliseconds(20))
        }
        // 50 changes over one second are announced at most twice (one per metadataMinInterval).
        #expect(sim.nodes[a]!.incarnation.value - before.value <= 2)
        sim.run(for: .seconds(2))
        #expect(sim.nodes[GossipSimulator.address(2)]!.member(named: "node-1")?.metadata == [49])
    }

    @Test func aRestartedNodeWithTheSameNameRejoinsAndSupersedesItsOldIncarnation() {
        var sim = GossipSimulator(seed: 81, faults: .init(latency: .microseconds(200) ... .milliseconds(2)))
        sim.startSettled(10)
        sim.run(for: .seconds(1))
        sim.crash(6)
        #expect(sim.run(until: .seconds(10)) { $0.everyone(sees: "node-6", as: .dead) } != nil)
        let oldIncarnation = sim.nodes[GossipSimulator.address(0)]!.member(named: "node-6")!.incarnation
        sim.add(6, joining: [2])
        let took = sim.run(until: .seconds(10)) { $0.converged() }
        #expect(took != nil)
        #expect(sim.nodes[GossipSimulator.address(0)]!.member(named: "node-6")!.incarnation > oldIncarnation)
    }

    @Test func aNameConflictIsReported() {
        var sim = GossipSimulator(seed: 91)
        sim.startSettled(5)
        sim.run(for: .seconds(1))
        // A second process claims "node-2" from another address.
        var impostor = Instance(name: "node-2", address: GossipSimulator.address(99), settings: .lan, seed: 1)
        let ds = impostor.join([GossipSimulator.address(0)], now: sim.now)
        guard case .connect(_, let msg) = ds.first else { Issue.record("no join"); return }
        let (_, out) = sim.nodes[GossipSimulator.address(0)]!.onStreamRequest(msg, from: GossipSimulator.address(99), now: sim.now)
        #expect(out.contains { if case .event(.nameConflict("node-2", _, _)) = $0 { true } else { false } })
        #expect(sim.nodes[GossipSimulator.address(0)]!.member(named: "node-2")!.address == GossipSimulator.address(2))
    }

    @Test func joinRetriesWithBackoffUntilASeedAnswers() {
        var sim = GossipSimulator(seed: 101)
        sim.add(1, joining: [0])   // node 0 is not running yet
        sim.run(for: .seconds(3))
        let failures = sim.events.filter { if case .joinFailed = $0.event { true } else { false } }
        #expect(failures.count >= 2)
        sim.add(0)
        let took = sim.run(until: .seconds(60)) { $0.converged() && $0.order.count == 2 }
        #expect(took != nil)
    }

    @Test func deadMembersAreReaped() {
        var s = Settings.lan
        s.reapAfter = .seconds(20)
        var sim = GossipSimulator(seed: 111, settings: s)
        sim.startSettled(5)
        sim.run(for: .seconds(1))
        sim.crash(3)
        sim.run(for: .seconds(30))
        #expect(sim.nodes[GossipSimulator.address(0)]!.member(named: "node-3") == nil)
    }
}
