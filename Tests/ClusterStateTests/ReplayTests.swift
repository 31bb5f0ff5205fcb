import CaravanModel
import CaravanTesting
@testable import ClusterState
import Foundation
import LeaderCore
import Primitives
import Testing

/// A log and a snapshot written by an earlier version of the agent (Fixtures/, made by
/// `CARAVAN_WRITE_FIXTURES=1 swift test --filter ReplayTests` on 2026-12-07, before job
/// registrations changed form) still load, and replaying the log gives the snapshot's state:
/// what an upgraded replica does with what an older one wrote.
@Suite struct ReplayTests {
    static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static let tag = "2026-12-07"

    /// A cluster's life through the leader's real core: nodes, varied jobs (every job-file
    /// field the generator knows), a namespace with a quota and a driver rule, placements,
    /// failures, a drain, a canary promotion, a periodic launch, a stop and a purge.
    static func life() async -> StateCopy {
        let copy = StateCopy(ClusterState())
        for i in 0..<6 {
            var n = Node(id: "n\(i)", address: "10.0.0.\(i)", cpuMillicores: 8000, memoryMiB: 16384, diskMiB: 1_000_000)
            n.meta = ["rack": "r\(i % 3)"]
            n.attributes = ["kernel.name": "linux", "unique.hostname": "n\(i)"]
            n.drivers = ["raw_exec", "exec", "container"]
            copy.apply(.upsertNode(n))
        }
        var ns = Namespace(name: "team-a", description: "A", quota: Quota(cpuMillicores: 20_000, memoryMiB: nil, instances: 40))
        ns.drivers = DriverRule(enabled: [.exec, .container])
        copy.apply(.upsertNamespace(ns))
        copy.apply(.schedulerConfig(algorithm: "spread"))
        var gen = JobGenerator(seed: 7)
        for _ in 0..<12 {
            var job = gen.job()
            job.periodic = nil
            for g in job.groups.indices { job.groups[g].count = min(job.groups[g].count, 3) }
            copy.apply(.registerJob(text: JobFile.render(job)))
        }
        func canaried(_ seconds: Int) -> Command {
            .registerJob(text: """
                id: canaried
                update: {canary: 1, maxParallel: 1}
                groups:
                  - name: g
                    count: 2
                    tasks: [{name: t, driver: raw_exec, config: {command: /bin/sleep, args: ["\(seconds)"]}, resources: {cpu: 100m, memory: 64Mi}}]
                """)
        }
        copy.apply(canaried(1))
        copy.apply(.registerJob(text: "id: nightly\ntype: batch\nperiodic: {cron: \"0 3 * * *\"}\ngroups:\n  - name: g\n    tasks: [{name: t, driver: raw_exec, config: {command: /bin/true}}]\n"))
        var core = LeaderCore()
        var clock: Int64 = 1_800_000_000_000
        let ids = CountingIDs("r")
        await core.settle(copy, clock: &clock, step: 60_000, newID: { ids.next() }) { $0.startPending() }
        if let a = copy.state.allocations.values.sorted(by: { $0.id < $1.id }).first {
            copy.apply(.clientUpdate([.init(allocationID: a.id, clientStatus: .failed, description: "exit 1")]))
        }
        copy.apply(.nodeDrain(id: "n1", draining: true))
        copy.apply(canaried(2))
        await core.settle(copy, clock: &clock, step: 60_000, newID: { ids.next() }) { $0.startPending() }
        copy.apply(.promote(namespace: "default", id: "canaried", version: 1))
        copy.apply(.periodicLaunch(namespace: "default", id: "nightly", time: 1_800_000_000))
        copy.apply(.nodeStatus(id: "n2", status: .down))
        await core.settle(copy, clock: &clock, step: 60_000, newID: { ids.next() }) { $0.startPending() }
        if let first = copy.state.jobs.keys.sorted().first { copy.apply(.deregisterJob(namespace: first.namespace, id: first.id, purge: false)) }
        await core.settle(copy, clock: &clock, step: 60_000, newID: { ids.next() }) { $0.startPending() }
        return copy
    }

    @Test func aLogAndASnapshotWrittenEarlierStillLoadAndAgree() async throws {
        let logPath = Self.dir + "/log-\(Self.tag).bin", snapPath = Self.dir + "/snapshot-\(Self.tag).bin"
        if ProcessInfo.processInfo.environment["CARAVAN_WRITE_FIXTURES"] == "1" {
            let copy = await Self.life()
            var w = ByteWriter()
            for c in copy.log { w.blob(c.encode()) }
            try FileManager.default.createDirectory(atPath: Self.dir, withIntermediateDirectories: true)
            try Data(w.bytes).write(to: URL(fileURLWithPath: logPath))
            try Data(copy.state.snapshot()).write(to: URL(fileURLWithPath: snapPath))
        }
        let log = try Data(contentsOf: URL(fileURLWithPath: logPath))
        var r = ByteReader(Array(log))
        var state = ClusterState()
        var index: UInt64 = 0
        var commands = 0
        while !r.atEnd {
            guard let bytes = r.blob(max: 64 << 20) else { Issue.record("a damaged log entry"); return }
            index += 1
            _ = state.apply(bytes, index: index)
            commands += 1
        }
        let restored = try ClusterState.restore(Array(try Data(contentsOf: URL(fileURLWithPath: snapPath))))
        #expect(commands > 40)
        // (Compared table by table: a mismatch names the table, not both whole states.)
        #expect(restored.jobs == state.jobs && restored.versions == state.versions, "jobs differ")
        #expect(restored.nodes == state.nodes && restored.allocations == state.allocations, "nodes or allocations differ")
        #expect(restored.evaluations == state.evaluations && restored.namespaces == state.namespaces, "evaluations or namespaces differ")
        #expect(restored == state, "the states differ elsewhere")
        #expect(state.jobs.count >= 5 && state.namespaces["team-a"]?.drivers.enabled == [.exec, .container])
        #expect(state.jobs[.init("default", "canaried")]?.promoted == true && state.schedulerAlgorithm == "spread")
        #expect(state.allocations.values.contains { $0.clientStatus == .lost } && state.nodes["n1"]?.draining == true)
    }
}

/// Jobs as the log now keeps them: every field, back exactly; a damaged record is refused, not
/// half-read.
@Suite struct JobCodecTests {
    @Test func everyGeneratedJobComesBackExactlyAndTheCommandToo() throws {
        var gen = JobGenerator(seed: 11)
        for _ in 0..<300 {
            let job = gen.job()
            let bytes = JobCodec.encode(job)
            #expect(JobCodec.decode(bytes) == job)
            #expect(Command.decode(Command.register(job).encode()) == .command(.register(job)))
            // Cut short anywhere, or another format: refused.
            #expect(JobCodec.decode(Array(bytes.dropLast())) == nil)
            var other = bytes
            other[0] = 9
            #expect(JobCodec.decode(other) == nil)
        }
    }

    @Test func longStringsAndListsComeBackWholeAndHostileBytesNeverTrap() throws {
        // What a job file may say is never cut: a long constraint value, meta, many args.
        var job = try JobFile.parse(ClusterStateTests.jobText("long"))
        job.constraints = [Constraint(attribute: "${meta.rack}", operator: .regexp, value: "^(" + Array(repeating: "r1", count: 300).joined(separator: "|") + ")$")]
        job.meta = [String(repeating: "k", count: 5000): String(repeating: "v", count: 70_000)]
        job.groups[0].tasks[0].config.args = (0..<120_000).map { "\($0 % 10)" }
        job.periodic = Periodic(cron: String(repeating: "* ", count: 200) + "*", timeZone: "UTC", prohibitOverlap: false)
        #expect(JobCodec.decode(JobCodec.encode(job)) == job)
        // Mutated records decode to nil or to a job that renders (nothing overflows).
        var gen = JobGenerator(seed: 13)
        var rng = SeededRandom(seed: 5)
        for _ in 0..<200 {
            var bytes = JobCodec.encode(gen.job())
            for _ in 0..<4 {
                let i = Int(rng.next() % UInt64(bytes.count))
                bytes[i] = rng.next() % 3 == 0 ? 0xFF : UInt8(truncatingIfNeeded: rng.next())
            }
            if let j = JobCodec.decode(bytes) { _ = JobFile.render(j) }
        }
        // The numbers that trapped before: Int.min attoseconds, huge seconds, huge counts.
        var w = ByteWriter()
        JobCodec.int(Int.min, &w)
        var r = ByteReader(w.bytes)
        #expect(JobCodec.int(&r) == nil)
        w = ByteWriter()
        JobCodec.int(Int.max / 2, &w); JobCodec.int(0, &w)
        r = ByteReader(w.bytes)
        #expect(JobCodec.ms(&r) == nil)
    }

    @Test func aRegisterAppliesWithoutParsingAndMatchesTheTextForm() throws {
        var gen = JobGenerator(seed: 12)
        var byText = ClusterState(), byJob = ClusterState()
        for i in 0..<50 {
            var job = gen.job()
            job.namespace = "default"
            let text = JobFile.render(job)
            let parsed = try JobFile.parse(text, file: "job", stored: true)
            #expect(byText.apply(.registerJob(text: text), index: UInt64(i + 1)) == byJob.apply(.register(parsed), index: UInt64(i + 1)))
        }
        #expect(byText == byJob, "the two forms of a registration give different states")
        #expect(try ClusterState.restore(byJob.snapshot()) == byJob)
    }
}
