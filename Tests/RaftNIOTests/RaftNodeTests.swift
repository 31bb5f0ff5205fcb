import Foundation
import Keyring
import Logging
import NIOCore
import NIOPosix
import Framing
import Primitives
import Raft
@testable import RaftNIO
import Synchronization
import Testing

/// A key-value state machine for the shell tests.
final class KV: ReplicatedStateMachine, @unchecked Sendable {
    private var data: [String: String] = [:]
    /// The index of the last write to each key (what a blocking read of it waits on).
    private var changed: [String: LogIndex] = [:]
    private let lock = NSLock()
    /// How long encoding a snapshot takes (a large state's), off the loop.
    let encodeDelay: Duration
    /// Snapshots encoded so far.
    let encoded = Atomic<Int>(0)
    /// Slow reads answered so far.
    let slowBuilt = Atomic<Int>(0)
    init(encodeDelay: Duration = .zero) { self.encodeDelay = encodeDelay }
    func captureSnapshot() -> @Sendable () -> [UInt8] {
        let copy = { lock.lock(); defer { lock.unlock() }; return data }()
        return { [self] in
            if encodeDelay > .zero { Thread.sleep(forTimeInterval: Double(encodeDelay.components.seconds) + Double(encodeDelay.components.attoseconds) / 1e18) }
            encoded.add(1, ordering: .relaxed)
            return Array(copy.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n").utf8)
        }
    }
    func apply(_ command: [UInt8], index: LogIndex) -> [UInt8] {
        let s = String(decoding: command, as: UTF8.self).split(separator: "=", maxSplits: 1).map(String.init)
        lock.lock(); defer { lock.unlock() }
        if s.count == 2 { data[s[0]] = s[1]; changed[s[0]] = index }
        return Array("ok@\(index)".utf8)
    }
    func changeIndex(of request: [UInt8]) -> (@Sendable () -> LogIndex)? {
        let key = String(decoding: request, as: UTF8.self)
        return { [self] in lock.lock(); defer { lock.unlock() }; return changed[key] ?? 0 }
    }
    /// Slow reads are the large kind: built on the bulk worker.
    func prepareQuery(_ request: [UInt8]) throws -> PreparedRead {
        PreparedRead(bulk: request.starts(with: Array("slow".utf8))) { [self] in try self.query(request) }
    }
    func lastChange(_ key: String) -> LogIndex { lock.lock(); defer { lock.unlock() }; return changed[key] ?? 0 }
    func query(_ request: [UInt8]) throws -> [UInt8] {
        // A read that takes long to answer (a list of thousands of large values).
        if request.starts(with: Array("slow".utf8)) {
            slowBuilt.add(1, ordering: .relaxed)
            Thread.sleep(forTimeInterval: 2.5)
        }
        lock.lock(); defer { lock.unlock() }
        return Array((data[String(decoding: request, as: UTF8.self)] ?? "").utf8)
    }
    func snapshot() -> [UInt8] { captureSnapshot()() }
    func restore(_ snapshot: [UInt8]) {
        var d: [String: String] = [:]
        for line in String(decoding: snapshot, as: UTF8.self).split(separator: "\n") {
            let kv = line.split(separator: "=", maxSplits: 1).map(String.init)
            if kv.count == 2 { d[kv[0]] = kv[1] }
        }
        lock.lock(); data = d; lock.unlock()
    }
    var count: Int { lock.lock(); defer { lock.unlock() }; return data.count }
}

final class DoneFlag: Sendable { let value = Atomic<Bool>(false) }

/// Three RaftNodes in one process over real TCP on 127.0.56.x with real files.
@Suite(.serialized) struct RaftNodeTests {
    static let key = "cmFmdC1ub2RlLXRlc3RzLWtleS0wMTIzNDU2Nzg5YWI="

    final class Group: @unchecked Sendable {
        let root = NSTemporaryDirectory() + "caravan-raftnode-\(UUID().uuidString)"
        var nodes: [RaftNode?] = []
        var stores: [KV] = []
        var configs: [RaftNodeConfiguration] = []
        let servers: [Configuration.Server]
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

        let encodeDelay: Duration

        init(subnet: Int, snapshotEvery: Int = 10_000, keep: Int = 2_000, encodeDelay: Duration = .zero) throws {
            self.encodeDelay = encodeDelay
            servers = (0..<3).map { Configuration.Server(id: ServerID("n\($0)"), address: "127.0.\(subnet).\($0 + 2):4681", voter: true) }
            let ring = SharedKeyring(Keyring(primary: try SecretKey(base64: RaftNodeTests.key)))
            for i in 0..<3 {
                configs.append(RaftNodeConfiguration(id: ServerID("n\(i)"), bindHost: "127.0.\(subnet).\(i + 2)", port: 4681,
                                                     directory: "\(root)/n\(i)", keyring: ring, snapshotEvery: snapshotEvery,
                                                     keepEntries: keep))
                stores.append(KV(encodeDelay: encodeDelay))
                nodes.append(nil)
            }
        }

        func start(_ i: Int, bootstrap: Bool) async throws {
            stores[i] = KV(encodeDelay: encodeDelay)
            let n = try await RaftNode.start(configs[i], stateMachine: stores[i], group: MultiThreadedEventLoopGroup.singleton, logger: logger)
            if bootstrap {
                // A slower server may already have received the first entry from a faster one.
                do { try await n.bootstrap(Configuration(servers: servers)) } catch let e as RaftError where e.message.contains("already belongs") {}
            }
            nodes[i] = n
        }

        func stop(_ i: Int) async {
            await nodes[i]?.shutdown(transferTimeout: .zero)
            nodes[i] = nil
        }

        func leader() async -> Int? {
            for (i, n) in nodes.enumerated() { if let n, await n.status().role == .leader { return i } }
            return nil
        }

        func waitForLeader() async throws -> Int {
            var found: Int?
            try await eventually("a leader") { found = await self.leader(); return found != nil }
            return found!
        }

        deinit { try? FileManager.default.removeItem(atPath: root) }
    }

    static func eventually(_ what: String, within: Duration = .seconds(10), _ cond: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + within
        while ContinuousClock.now < deadline {
            if try await cond() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RaftError(.timeout, "timed out: \(what)")
    }

    func eventually(_ what: String, _ cond: () async throws -> Bool) async throws { try await Self.eventually(what, cond) }

    @Test func writesOnAnyServerAreForwardedAndReadsAreLinearizable() async throws {
        let g = try Group(subnet: 56)
        for i in 0..<3 { try await g.start(i, bootstrap: true) }
        let l = try await g.waitForLeader()
        let follower = (l + 1) % 3
        let answer = try await g.nodes[follower]!.apply(Array("color=blue".utf8))
        #expect(String(decoding: answer, as: UTF8.self).hasPrefix("ok@"))
        // A linearizable read through any server sees the acknowledged write at once.
        for i in 0..<3 {
            #expect(try await g.nodes[i]!.read(Array("color".utf8)) == Array("blue".utf8))
        }
        let view = try await g.nodes[follower]!.groupView()
        #expect(view.leader == ServerID("n\(l)"))
        #expect(view.configuration.voters.count == 3)
        // Who leads: the leader answers from what its Raft thread published, a follower asks it.
        for i in [l, follower] {
            let (leader, configuration) = try await g.nodes[i]!.leaderAndConfiguration()
            #expect(leader == ServerID("n\(l)") && configuration == view.configuration)
        }
        // A command larger than a default message (12 MiB, a restored snapshot's size) is
        // forwarded, committed and reaches every follower; one over the entry limit is refused
        // before it is logged, so replication never sticks on it.
        let large = String(repeating: "z", count: 12 << 20)
        _ = try await g.nodes[follower]!.apply(Array("large=\(large)".utf8), timeout: .seconds(30))
        for i in 0..<3 { #expect(try await g.nodes[i]!.read(Array("large".utf8)).count == large.utf8.count) }
        await #expect(throws: RaftError.self) { try await g.nodes[l]!.apply([UInt8](repeating: 1, count: RaftNode.maxCommandBytes + 1)) }
        _ = try await g.nodes[follower]!.apply(Array("color=green".utf8))
        // Once it has handed over, the old leader names the new one.
        try await g.nodes[l]!.requestLeadershipTransfer(to: ServerID("n\(follower)"))
        try await eventually("n\(follower) leads") { await g.nodes[follower]!.status().role == .leader }
        #expect(try await g.nodes[l]!.leaderAndConfiguration().leader == ServerID("n\(follower)"))
        for i in 0..<3 { await g.stop(i) }
    }

    @Test func aBlockingReadWakesOnTheNextCommitAndOtherwiseWaitsItsTime() async throws {
        let g = try Group(subnet: 66)
        for i in 0..<3 { try await g.start(i, bootstrap: true) }
        let l = try await g.waitForLeader()
        _ = try await g.nodes[l]!.apply(Array("color=red".utf8))
        let follower = (l + 1) % 3
        // Nothing new: the read comes back when its wait is over, with the index it waited past.
        let now = try await g.nodes[follower]!.read(Array("color".utf8), after: 0, wait: .zero)
        let start = ContinuousClock.now
        let idle = try await g.nodes[follower]!.read(Array("color".utf8), after: now.applied, wait: .milliseconds(300))
        #expect(ContinuousClock.now - start >= .milliseconds(290))
        #expect(idle.applied == now.applied && idle.answer == Array("red".utf8))
        // A write while a follower's read waits on the leader: the read answers with it at once.
        for stale in [false, true] {
            let before = try await g.nodes[follower]!.read(Array("color".utf8), after: 0, wait: .zero)
            async let woken = g.nodes[follower]!.read(Array("color".utf8), stale: stale, after: before.applied, wait: .seconds(30))
            try await Task.sleep(for: .milliseconds(100))
            let t0 = ContinuousClock.now
            _ = try await g.nodes[l]!.apply(Array("color=\(stale ? "green" : "blue")".utf8))
            let got = try await woken
            #expect(ContinuousClock.now - t0 < .seconds(5))
            #expect(got.applied > before.applied)
            #expect(got.answer == Array((stale ? "green" : "blue").utf8))
        }
        // A read that names what it shows (changed after its last write to `color`) sleeps
        // through writes to other keys — no wake-up, no ReadIndex round for each — and wakes on
        // the next write to `color`.
        for stale in [false, true] {
            let before = try await g.nodes[follower]!.read(Array("color".utf8), after: 0, wait: .zero)
            let since = g.stores[l].lastChange("color")
            let rounds = await g.nodes[l]!.readsConfirmed
            let done = DoneFlag()
            let woken = Task {
                defer { done.value.store(true, ordering: .relaxed) }
                return try await g.nodes[follower]!.read(Array("color".utf8), stale: stale, after: before.applied, changedAfter: since, wait: .seconds(30))
            }
            try await Task.sleep(for: .milliseconds(100))
            for k in 0..<20 { _ = try await g.nodes[l]!.apply(Array("size=\(k)".utf8)) }
            try await Task.sleep(for: .milliseconds(200))
            let wokeEarly = done.value.load(ordering: .relaxed)
            #expect(!wokeEarly, "a write to another key woke the read")
            #expect(await g.nodes[l]!.readsConfirmed - rounds < 5)
            _ = try await g.nodes[l]!.apply(Array("color=violet\(stale)".utf8))
            let got = try await woken.value
            #expect(got.answer == Array("violet\(stale)".utf8))
        }
        for i in 0..<3 { await g.stop(i) }
    }

    @Test func aFollowerThatMissedManyWritesCatchesUpFromAChunkedSnapshotAndSurvivesARestart() async throws {
        let g = try Group(subnet: 57, snapshotEvery: 200, keep: 20)
        for i in 0..<3 { try await g.start(i, bootstrap: true) }
        let l = try await g.waitForLeader()
        let lagging = (l + 1) % 3
        await g.stop(lagging)
        // About 2.5 MiB of state: the snapshot travels in several 1 MiB chunks.
        let big = String(repeating: "x", count: 4096)
        try await withThrowingTaskGroup(of: Void.self) { tg in
            for w in 0..<8 {
                tg.addTask { for k in 0..<80 { _ = try await g.nodes[l]!.apply(Array("k\(w)-\(k)=\(big)".utf8)) } }
            }
            try await tg.waitForAll()
        }
        let target = await g.nodes[l]!.status().commit
        try await g.start(lagging, bootstrap: false)
        try await eventually("the lagging follower catches up") { await g.nodes[lagging]!.status().applied >= target }
        #expect(g.stores[lagging].count == 640)
        // Its snapshot and log are on disk: after a restart it has everything without asking.
        await g.stop(lagging)
        let snaps = try FileManager.default.contentsOfDirectory(atPath: "\(g.root)/n\(lagging)/snapshots")
        #expect(snaps.contains { $0.hasSuffix(".snap") })
        for i in 0..<3 where i != lagging { await g.stop(i) }
        try await g.start(lagging, bootstrap: false)
        #expect(await g.nodes[lagging]!.status().applied >= target - 20 || g.stores[lagging].count == 640)
        #expect(g.stores[lagging].count == 640)
        await g.stop(lagging)
    }

    /// Writes on each server in turn, each read back through the next, for `duration`: the
    /// slowest write-and-read and how many were made (keys `prefix0`, `prefix1`, …).
    static func writeAndRead(_ g: Group, from l: Int, prefix: String, for duration: Duration) async throws -> (Duration, Int) {
        let clock = ContinuousClock()
        var slowest = Duration.zero
        let start = clock.now
        var k = 0
        while clock.now - start < duration {
            let t = clock.now
            _ = try await g.nodes[(l + k) % 3]!.apply(Array("\(prefix)\(k)=v".utf8))
            #expect(try await g.nodes[(l + k + 1) % 3]!.read(Array("\(prefix)\(k)".utf8)) == Array("v".utf8))
            slowest = max(slowest, clock.now - t)
            k += 1
        }
        return (slowest, k)
    }

    /// A large state takes seconds to encode; the loop must go on meanwhile — heartbeats, commits,
    /// reads — or the group elects again mid-snapshot (seen at a million allocations). The
    /// snapshot still lands, the log is compacted behind it, and a restart reads it back.
    @Test func aSlowSnapshotDoesNotStallTheGroup() async throws {
        let g = try Group(subnet: 67, snapshotEvery: 40, keep: 10, encodeDelay: .milliseconds(2500))
        for i in 0..<3 { try await g.start(i, bootstrap: true) }
        let l = try await g.waitForLeader()
        let term = await g.nodes[l]!.status().term
        for k in 0..<45 { _ = try await g.nodes[l]!.apply(Array("a\(k)=v".utf8)) }
        // Every member now encodes for 2.5 s; writes and reads go on at their usual pace.
        let (slowest, k) = try await Self.writeAndRead(g, from: l, prefix: "b", for: .seconds(3))
        #expect(slowest < .milliseconds(700), "a write and read took \(slowest) while snapshots were encoded")
        #expect(await g.nodes[l]!.status().term == term, "an election happened while snapshots were encoded")
        // The snapshots land and the logs are compacted behind them.
        try await eventually("every member wrote its snapshot") {
            (0..<3).allSatisfy { i in
                ((try? FileManager.default.contentsOfDirectory(atPath: "\(g.root)/n\(i)/snapshots")) ?? []).contains { $0.hasSuffix(".snap") }
            }
        }
        for i in 0..<3 { #expect(g.stores[i].encoded.load(ordering: .relaxed) >= 1) }
        try await eventually("the log was compacted") { await g.nodes[l]!.firstIndex > 1 }
        // A restart reads the snapshot and the log after it: nothing written is lost.
        for i in 0..<3 { await g.stop(i) }
        for i in 0..<3 { try await g.start(i, bootstrap: false) }
        let again = try await g.waitForLeader()
        #expect(try await g.nodes[again]!.read(Array("a0".utf8)) == Array("v".utf8))
        #expect(try await g.nodes[again]!.read(Array("b\(k - 1)".utf8)) == Array("v".utf8))
        #expect(g.stores[again].count == 45 + k)
        for i in 0..<3 { await g.stop(i) }
    }

    /// A read whose answer takes seconds to build is built off the loop: writes, other reads and
    /// heartbeats go on meanwhile, on the leader and on a follower that serves it — and small
    /// reads do not queue behind several large ones (those are built on their own worker).
    @Test func aSlowReadDoesNotStallTheGroup() async throws {
        let g = try Group(subnet: 68)
        for i in 0..<3 { try await g.start(i, bootstrap: true) }
        let l = try await g.waitForLeader()
        let term = await g.nodes[l]!.status().term
        _ = try await g.nodes[l]!.apply(Array("slow=yes".utf8))
        let slowReads = Task {
            async let a = g.nodes[l]!.read(Array("slow".utf8))
            async let b = g.nodes[(l + 1) % 3]!.read(Array("slow".utf8), stale: true)
            async let c = g.nodes[l]!.read(Array("slow".utf8), timeout: .seconds(30))
            async let d = g.nodes[l]!.read(Array("slow".utf8), timeout: .seconds(30))
            return try await [a, b, c, d]
        }
        try await Task.sleep(for: .milliseconds(100))
        let (slowest, _) = try await Self.writeAndRead(g, from: l, prefix: "c", for: .seconds(2))
        // Alone: ~5 ms. Once, with the whole suite on two cores, 1.02 s. Queued behind a slow
        // read it would be 2.4 s or more.
        #expect(slowest < .milliseconds(1_500), "a write and read took \(slowest) while a slow read was answered")
        #expect(try await slowReads.value == Array(repeating: Array("yes".utf8), count: 4))
        #expect(await g.nodes[l]!.status().term == term, "an election happened while a slow read was answered")
        // A read still queued when its deadline passes is dropped, not built for nobody.
        let built = g.stores[l].slowBuilt.load(ordering: .relaxed)
        async let first = g.nodes[l]!.read(Array("slow".utf8), timeout: .seconds(30))
        try await Task.sleep(for: .milliseconds(200))
        await #expect(throws: RaftError.self) { try await g.nodes[l]!.read(Array("slow-late".utf8), timeout: .milliseconds(500)) }
        #expect(try await first == Array("yes".utf8))
        try await Task.sleep(for: .milliseconds(300))
        #expect(g.stores[l].slowBuilt.load(ordering: .relaxed) == built + 1)
        for i in 0..<3 { await g.stop(i) }
    }

    @Test func garbageOnTheRPCPortIsDroppedAndTheGroupCarriesOn() async throws {
        let g = try Group(subnet: 58)
        for i in 0..<3 { try await g.start(i, bootstrap: true) }
        let l = try await g.waitForLeader()
        // Frames that fail to open (wrong key, random bytes, a huge length) are dropped.
        let ch = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.58.\(l + 2)", port: 4681).get()
        var buf = ch.allocator.buffer(capacity: 64)
        buf.writeInteger(UInt32(10)); buf.writeBytes([0xCA, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        buf.writeInteger(UInt32(3)); buf.writeBytes([1, 2, 3])
        buf.writeInteger(UInt32.max)
        try await ch.writeAndFlush(buf)
        try? await ch.closeFuture.get()
        _ = try await g.nodes[l]!.apply(Array("still=alive".utf8))
        #expect(try await g.nodes[(l + 1) % 3]!.read(Array("still".utf8)) == Array("alive".utf8))
        #expect(await g.nodes[l]!.framesDropped >= 1)
        for i in 0..<3 { await g.stop(i) }
    }

    /// A connection that has not proved the key may not announce a large frame; a sender's name
    /// never becomes a file name.
    @Test func aStrangerCannotMakeAnAgentBufferMuchOrNameItsFiles() async throws {
        let g = try Group(subnet: 59)
        for i in 0..<3 { try await g.start(i, bootstrap: true) }
        let l = try await g.waitForLeader()
        func connect() async throws -> any Channel {
            try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.59.\(l + 2)", port: 4681).get()
        }
        func send(_ ch: any Channel, _ frames: [[UInt8]]) async throws {
            var buf = ch.allocator.buffer(capacity: 1024)
            for f in frames { buf.writeFrame(f) }
            try await ch.writeAndFlush(buf)
        }
        // 1. A stranger announcing a 1 MiB frame is cut off before sending it.
        let stranger = try await connect()
        var announce = stranger.allocator.buffer(capacity: 4)
        announce.writeInteger(UInt32(1 << 20))
        try await stranger.writeAndFlush(announce)
        try await Self.eventually("the stranger is disconnected", within: .seconds(3)) { !stranger.isActive }

        // 2. After the handshake, the same connection may send large frames (junk is dropped).
        let ring = Keyring(primary: try SecretKey(base64: RaftNodeTests.key))
        let (peer, session, _) = try await RawPeer.handshake(host: "127.0.59.\(l + 2)", ring: ring)
        try await send(peer, [[UInt8](repeating: 7, count: 1 << 20)])
        try await Task.sleep(for: .milliseconds(300))
        #expect(peer.isActive)

        // 3. A snapshot whose sender calls itself "../../escape" lands in the spool under a name
        //    of the agent's choosing.
        let meta = SnapshotMetadata(index: 1_000_000, term: 1, configuration: Configuration(servers: g.servers))
        let message = Message(from: ServerID("../../escape"), to: ServerID("n\(l)"), term: 1,
                              body: .snapshot(Snapshot(metadata: meta, data: [])))
        var w = ByteWriter()
        w.byte(RaftTransport.Kind.snapshotChunk.rawValue)
        w.string("../../escape:4681")
        w.uint64(1)
        w.varint(0)
        w.varint(64)
        w.blob(RaftCodec.encode(message))
        w.blob([UInt8](repeating: 1, count: 32))
        try await send(peer, [session.seal(w.bytes, SharedKeyring(ring))])
        try await Task.sleep(for: .milliseconds(300))
        let escaped = FileManager.default.enumerator(atPath: g.root)?.compactMap { $0 as? String }.filter { $0.contains("escape") } ?? []
        #expect(escaped.isEmpty, "\(escaped)")
        #expect(!FileManager.default.fileExists(atPath: g.root + "/../escape-1.part"))
        _ = try await g.nodes[l]!.apply(Array("still=alive".utf8))
        peer.close(promise: nil)

        // 4. One address may hold at most 8 connections that have not proved the key (the oldest
        //    go first) — and a member's connection still gets in beside them and stays.
        var crowd: [any Channel] = []
        for _ in 0..<20 { crowd.append(try await connect()) }
        try await Self.eventually("connections over the cap are closed", within: .seconds(3)) { crowd.filter(\.isActive).count <= 8 }
        #expect(await g.nodes[l]!.connectionsRefused >= 12)
        let (member, _, _) = try await RawPeer.handshake(host: "127.0.59.\(l + 2)", ring: ring)
        try await Task.sleep(for: .milliseconds(300))
        #expect(member.isActive, "a member's connection was refused while strangers filled the cap")
        // 5. A stranger's frame that does not open closes its connection at once.
        let junk = try await connect()
        try await send(junk, [[UInt8](repeating: 9, count: 100)])
        try await Self.eventually("a stranger's bad frame ends its connection", within: .seconds(3)) { !junk.isActive }
        for c in crowd + [member] { c.close(promise: nil) }
        _ = try await g.nodes[l]!.apply(Array("still=alive".utf8))
        for i in 0..<3 { await g.stop(i) }
    }

    /// A sealed frame captured on the wire and sent again — on another connection, or twice on
    /// the same — is refused and counted, and does not apply twice.
    @Test func aReplayedSealedFrameIsRefused() async throws {
        let g = try Group(subnet: 61)
        for i in 0..<3 { try await g.start(i, bootstrap: true) }
        let l = try await g.waitForLeader()
        let host = "127.0.61.\(l + 2)"
        let ring = Keyring(primary: try SecretKey(base64: RaftNodeTests.key))
        let shared = SharedKeyring(ring)
        var w = ByteWriter()
        w.byte(RaftTransport.Kind.request.rawValue)
        w.string("127.0.61.99:4681")
        w.uint64(1)
        w.byte(RaftNode.Op.apply.rawValue)
        w.raw(Array("replayed=once".utf8))
        // A forwarded write on connection A is applied and answered.
        let (a, sessionA, framesA0) = try await RawPeer.handshake(host: host, ring: ring)
        let captured = sessionA.seal(w.bytes, shared)
        let before = await g.nodes[l]!.status().lastIndex
        try await RawPeer.send(a, [captured])
        var framesA = framesA0
        let answer = try #require(await framesA.next())
        guard case .success(let opened) = ring.open(answer), case .frame(let response) = sessionA.check(opened) else {
            Issue.record("no fresh answer on A"); return
        }
        #expect(response.first == RaftTransport.Kind.response.rawValue)
        #expect(await g.nodes[l]!.status().lastIndex == before + 1)
        let refusedBefore = await g.nodes[l]!.framesReplayed
        // The same bytes again on A: a spent sequence number.
        try await RawPeer.send(a, [captured])
        try await Self.eventually("A is closed", within: .seconds(3)) { !a.isActive }
        // The same bytes on a new, properly opened connection B: the wrong connection nonce.
        let (b, _, _) = try await RawPeer.handshake(host: host, ring: ring)
        try await RawPeer.send(b, [captured])
        try await Self.eventually("B is closed", within: .seconds(3)) { !b.isActive }
        // A's whole opening replayed on a new connection: its hello names another challenge.
        let c = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: host, port: 4681).get()
        let replayedHello = sessionA.seal([RaftTransport.Kind.hello.rawValue] + [UInt8](repeating: 1, count: 16), shared)
        try await RawPeer.send(c, [replayedHello, captured])
        try await Self.eventually("C is closed", within: .seconds(3)) { !c.isActive }
        #expect(await g.nodes[l]!.framesReplayed >= refusedBefore + 3)
        // Applied once; the group carries on.
        _ = try await g.nodes[l]!.apply(Array("still=alive".utf8))
        #expect(await g.nodes[l]!.status().lastIndex == before + 2)
        for i in 0..<3 { await g.stop(i) }
    }

    @Test func bootstrappingTwiceIsRefused() async throws {
        let g = try Group(subnet: 59)
        try await g.start(0, bootstrap: true)
        await #expect(throws: RaftError.self) { try await g.nodes[0]!.bootstrap(Configuration(servers: g.servers)) }
        await g.stop(0)
    }
}

/// A hand-driven Raft connection: reads the agent's challenge and answers it as an agent would.
enum RawPeer {
    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let continuation: AsyncStream<[UInt8]>.Continuation
        init(_ c: AsyncStream<[UInt8]>.Continuation) { continuation = c }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { continuation.yield(Array(unwrapInboundIn(data).readableBytesView)) }
        func channelInactive(context: ChannelHandlerContext) { continuation.finish() }
    }

    static func send(_ ch: any Channel, _ frames: [[UInt8]]) async throws {
        var buf = ch.allocator.buffer(capacity: 1024)
        for f in frames { buf.writeFrame(f) }
        try await ch.writeAndFlush(buf)
    }

    /// Connects, reads the challenge, sends the hello: the connection is proven.
    static func handshake(host: String, ring: Keyring) async throws
        -> (any Channel, FrameSession, AsyncStream<[UInt8]>.AsyncIterator) {
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        let ch = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(LengthPrefixedFrameDecoder(maxFrame: 8 << 20)))
                    try ch.pipeline.syncOperations.addHandler(Collector(continuation))
                }
            }
            .connect(host: host, port: 4681).get()
        var frames = stream.makeAsyncIterator()
        let session = FrameSession()
        guard let first = await frames.next(), case .success(let opened) = ring.open(first), case .challenge(let nonce) = session.check(opened) else {
            throw RaftError(.remote, "no challenge from \(host)")
        }
        try await send(ch, [session.answer(nonce, SharedKeyring(ring))])
        return (ch, session, frames)
    }
}
