import Agent
import ArgumentParser
import CaravanModel
import CaravanTesting
import ClusterState
import LeaderCore
import Foundation
import Keyring
import Logging
import NIOPosix
import Raft
import RaftNIO
import Scheduler

/// Placements committed end to end: the scheduler's plan for a big job, verified, committed
/// through a 3-voter Raft group (real TCP, fsync) and applied to every server's cluster state.
struct PlacementBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "placements",
        abstract: "Placements committed per second through a 3-voter Raft group (in-process servers, real TCP and fsync).")

    @Option(help: "Simulated nodes registered in the state.") var nodes: Int = 1000
    @Option(help: "Instances of the job.") var count: Int = 10000
    @Option(help: "Allocations per ApplyPlan command.") var chunk: Int = 500
    @Option(help: "Directory on the disk to measure.") var dir: String = "/var/tmp"

    func run() async throws {
        say("# caravan-bench placements — \(Date())")
        let group = try await InProcessGroup.start(subnet: "127.0.64", dir: dir, name: "placements")
        defer { group.remove() }
        // Register the nodes (8 commands in flight).
        var r = SeededRandom(seed: 7)
        try await group.commit(SchedulerBench.heterogeneous(nodes, &r).map(Command.upsertNode), inFlight: 8)
        let text = "id: big\ngroups:\n  - name: g\n    count: \(count)\n    ephemeralDisk: {size: 1Mi}\n    tasks:\n      - {name: t, driver: raw_exec, config: {command: /bin/true}, resources: {cpu: 100m, memory: 128Mi}}\n"
        try await group.commit([.registerJob(text: text)], inFlight: 1)

        let clock = ContinuousClock()
        let t0 = clock.now
        let state = group.leader.1.current
        let key = ClusterState.JobKey("default", "big")
        var k = 0
        // The leader's own schedule-and-verify step (its evaluations aside: one plan, committed in chunks).
        let verdict = LeaderCore.schedule(key, in: SchedulingView(state), now: nil, newID: { k += 1; return "alloc-\(k)" }).verdict
        let scheduled = clock.now - t0
        let placements = verdict.accepted.placements
        var commands: [Command] = []
        var i = 0
        while i < placements.count {
            commands.append(.applyPlan(allocations: Array(placements[i..<min(placements.count, i + chunk)]), evaluations: []))
            i += chunk
        }
        try await group.commit(commands, inFlight: 8)
        try await group.waitAll { $0.allocations.count >= placements.count }
        let took = clock.now - t0
        let secs = Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
        let sched = Double(scheduled.components.seconds) + Double(scheduled.components.attoseconds) / 1e18
        say("\(placements.count) placements of one job on \(nodes) nodes: scheduled and verified in \(String(format: "%.2f", sched)) s, committed through 3 voters and applied on all in \(String(format: "%.2f", secs)) s → \(Int(Double(placements.count) / secs)) placements/s (\(commands.count) commands of ≤ \(chunk))")
        await group.stop()
    }
}

/// Three in-process Raft servers, each with the agent's cluster store, on real TCP (three
/// loopback addresses) with fsync: the state's replication as agents run it, without HTTP.
struct InProcessGroup {
    let servers: [(RaftNode, ClusterStore)]
    let leader: (RaftNode, ClusterStore)
    let root: String

    static func start(subnet: String, dir: String, name: String, snapshotEvery: Int = 10_000) async throws -> InProcessGroup {
        let root = "\(dir)/caravan-bench-\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        let keyring = SharedKeyring(Keyring(primary: try SecretKey(base64: "YmVuY2htYXJrLWtleS1mb3ItY2FyYXZhbi1yYWZ0LjE=")))
        let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
        let members = (0..<3).map { Configuration.Server(id: ServerID("p\($0)"), address: "\(subnet).\($0 + 2):4681", voter: true) }
        var servers: [(RaftNode, ClusterStore)] = []
        for i in 0..<3 {
            let store = ClusterStore()
            var c = RaftNodeConfiguration(id: ServerID("p\(i)"), bindHost: "\(subnet).\(i + 2)", port: 4681, directory: "\(root)/p\(i)", keyring: keyring)
            c.snapshotEvery = snapshotEvery
            let n = try await RaftNode.start(c, stateMachine: store, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
            try await n.bootstrap(Configuration(servers: members))
            servers.append((n, store))
        }
        for _ in 0..<500 {
            for g in servers where await g.0.status().role == .leader { return InProcessGroup(servers: servers, leader: g, root: root) }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw ValidationError("no leader")
    }

    /// Commits `cmds` through the leader, `inFlight` at a time; a refused command is an error.
    func commit(_ cmds: [Command], inFlight: Int) async throws {
        let raft = leader.0
        try await withThrowingTaskGroup(of: Void.self) { tg in
            var next = 0
            func add() {
                guard next < cmds.count else { return }
                let c = cmds[next]
                next += 1
                tg.addTask {
                    let answer = try await raft.apply(c.encode(), timeout: .seconds(30))
                    guard answer.first == 0 else { throw ValidationError("refused: \(String(decoding: answer.dropFirst(), as: UTF8.self))") }
                }
            }
            for _ in 0..<inFlight { add() }
            while try await tg.next() != nil { add() }
        }
    }

    /// Waits until every server's state passes `done`.
    func waitAll(_ done: (ClusterState) -> Bool) async throws {
        for g in servers {
            while !done(g.1.current) { try await Task.sleep(for: .milliseconds(5)) }
        }
    }

    func stop() async {
        for g in servers { await g.0.shutdown(transferTimeout: .zero) }
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }
}
