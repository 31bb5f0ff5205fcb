import Agent
import ArgumentParser
import CaravanModel
import CaravanTesting
import ClusterState
import Foundation
import LeaderCore
import RaftNIO
import Scheduler
import Synchronization

/// The C1M shape: many jobs of a few instances each on a large simulated cluster, registered,
/// then placed by the leader's own core (evaluations, scheduler, plan applier) with every plan
/// committed through a 3-voter Raft group (in-process servers, real TCP, fsync), until all three
/// servers have applied every allocation; then checked (each job at its count, no node over).
struct C1MBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "c1m",
        abstract: "Jobs placed by the leader's core and committed through 3 voters (C1M: --nodes 10000 --jobs 100000 --count 10).")

    @Option(help: "Simulated nodes registered in the state.") var nodes: Int = 10_000
    @Option(help: "Jobs registered.") var jobs: Int = 100_000
    @Option(help: "Instances per job.") var count: Int = 10
    @Option(help: "Directory on the disk to measure.") var dir: String = "/var/tmp"

    func run() async throws {
        say("# caravan-bench c1m — \(Date())")
        say("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; 3 in-process voters on 127.0.65.2–4, fsync, data in \(dir)\n")
        let group = try await InProcessGroup.start(subnet: "127.0.65", dir: dir, name: "c1m")
        defer { group.remove() }
        let clock = ContinuousClock()
        var r = SeededRandom(seed: 11)
        var t0 = clock.now
        try await group.commit(SchedulerBench.heterogeneous(nodes, &r).map(Command.upsertNode), inFlight: 64)
        say("\(nodes) nodes registered in \(Self.seconds(clock.now - t0)) s")
        t0 = clock.now
        let jobCommands = (0..<jobs).map { Command.register(SchedulerBench.job("j\($0)", count: count, cpu: 50, mem: 64)) }
        try await group.commit(jobCommands, inFlight: 64)
        say("\(jobs) jobs of \(count) instances registered (64 in flight) in \(Self.seconds(clock.now - t0)) s")

        // The leader's core, as the agent runs it, on the leader's store.
        let shell = RaftShell(raft: group.leader.0, store: group.leader.1)
        let ids = CountingIDs("a")
        let env = LeaderCore.Environment(now: { Int64(Date().timeIntervalSince1970 * 1000) }, newID: { ids.next() })
        var core = LeaderCore()
        let total = jobs * count
        let termBefore = await group.leader.0.status().term
        t0 = clock.now
        var passes = 0, evaluations = 0, rejections = 0
        while group.leader.1.current.allocations.count < total {
            let report = await core.pass(shell, members: nil, env)
            passes += 1
            evaluations += report.evaluations
            rejections += report.planRejections
            if report.evaluations == 0 { try await Task.sleep(for: .milliseconds(20)) }
            if clock.now - t0 > .seconds(1800) { throw ValidationError("not placed within 30 minutes") }
        }
        let placed = clock.now - t0
        try await group.waitAll { $0.allocations.count >= total }
        let applied = clock.now - t0
        let secs = Self.seconds(applied)
        say("\(total) allocations of \(jobs) jobs on \(nodes) nodes: placed and committed by the leader in \(Self.seconds(placed)) s, applied on all 3 in \(secs) s → \(Int(Double(total) / (Double(secs) ?? 1))) placements/s (\(evaluations) evaluations, \(passes) passes, \(rejections) plans refused in part)")
        // Checked on a follower's copy: every job at its count, no node over its capacity.
        let s = group.servers.first { $0.0 !== group.leader.0 }!.1.current
        let short = s.jobs.keys.filter { s.allocations(ofJob: $0).filter(\.isLive).count != count }
        let over = s.nodes.values.filter { n in let u = s.used(onNode: n.id); return u.cpuMillicores > n.cpuMillicores || u.memoryMiB > n.memoryMiB }
        say("check: \(short.count) jobs not at their count, \(over.count) nodes over capacity, \(s.indexDrift().count) index drifts; \(shell.failed.withLock { $0 }) proposals failed, term \(termBefore) → \(await group.leader.0.status().term)")
        await group.stop()
    }

    static func seconds(_ d: Duration) -> String {
        String(format: "%.2f", Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }
}

/// The leader's shell over an in-process Raft node: proposals go through the log, the state is the store's.
final class RaftShell: LeaderShell, @unchecked Sendable {
    let raft: RaftNode
    let store: ClusterStore
    init(raft: RaftNode, store: ClusterStore) {
        self.raft = raft
        self.store = store
    }

    func currentState() async -> ClusterState { store.current }

    /// Proposals that failed (not committed in time, leadership lost) or were refused.
    let failed = Mutex(0)

    func propose(_ command: Command, _ what: String) async -> Bool {
        guard let answer = try? await raft.apply(command.encode(), timeout: .seconds(30)), answer.first == 0 else {
            failed.withLock { $0 += 1 }
            return false
        }
        return true
    }

    func note(_ level: LeaderCore.Level, _ message: String, _ metadata: [String: String]) {}

    /// As the agent's shell: 64 plans decided ahead, proposed together.
    var pipelineDepth: Int { 64 }
    func proposeAll(_ commands: [(Command, String)]) async -> [Bool] { await proposeTogether(commands) }
}
