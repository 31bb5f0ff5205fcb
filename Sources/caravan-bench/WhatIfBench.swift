import ArgumentParser
import CaravanModel
import ClusterState
import Foundation
import LeaderCore

/// What `caravan operator what-if` costs on a large cluster: the leader's core settling a copy
/// of the state twice (with and without the change), in process (the API adds one HTTP call).
struct WhatIfBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "what-if", abstract: "what-if on a large cluster: build it through the leader's core, then lose a rack.")

    @Option(help: "Nodes (in 10 racks).") var nodes: Int = 1000
    @Option(help: "Jobs of --count instances each.") var jobs: Int = 100
    @Option(help: "Instances per job.") var count: Int = 100

    func run() async throws {
        say("# caravan-bench what-if — \(Date())")
        say("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores (one used)\n")
        let copy = StateCopy(ClusterState())
        for i in 0..<nodes { copy.apply(.upsertNode(SchedulerBench.node(i, cpu: 8000, mem: 16384, rack: "r\(i % 10)"))) }
        let clock = ContinuousClock()
        var t0 = clock.now
        for j in 0..<jobs { copy.apply(.register(SchedulerBench.job("j\(j)", count: count, cpu: 250, mem: 512))) }
        var core = LeaderCore()
        var at: Int64 = 1_800_000_000_000
        let ids = CountingIDs("a")
        await core.settle(copy, clock: &at, step: 60_000, newID: { ids.next() }) { $0.startPending() }
        let built = clock.now - t0
        say("built: \(nodes) nodes, \(copy.state.allocations.count) allocations of \(jobs) jobs placed and running through LeaderCore in \(Self.seconds(built)) s")
        var change = WhatIf.Change()
        change.killNodesWhere = ["meta.rack=r0"]
        t0 = clock.now
        let o = try await WhatIf.run(copy.state, change, now: at)
        let took = clock.now - t0
        say("what-if --kill-nodes-where meta.rack=r0: \(o.killed.count) nodes lost, \(o.moved.count) instances would move, \(o.stopped.count) stop, \(o.unplaced.count) groups not fit — answered in \(Self.seconds(took)) s")
    }

    static func seconds(_ d: Duration) -> String {
        String(format: "%.3f", Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }
}
