import Foundation
import Gossip
import Keyring
import Logging
import NIOCore
import NIOPosix
import Testing
@testable import GossipNIO

/// The shell on real sockets: sealed traffic, garbage input, keyring queries.
@Suite(.serialized) struct GossipNodeTests {
    static func node(_ name: String, _ ip: String, ring: Keyring) async throws -> GossipNode {
        var s = Settings.local
        s.tickInterval = .milliseconds(10)
        return try await GossipNode.start(GossipConfiguration(name: name, bind: Address(host: ip, port: 4682), settings: s,
                                                              keyring: ring, identity: .generate()),
                                          group: MultiThreadedEventLoopGroup.singleton, logger: Logger(label: "t"))
    }

    static func waitUntil(_ what: String, _ cond: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if await cond() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out: \(what)")
    }

    @Test func garbageNeverStopsTheReceiveLoop() async throws {
        let ring = Keyring(primary: .generate())
        let a = try await Self.node("a", "127.0.64.2", ring: ring)
        let b = try await Self.node("b", "127.0.64.3", ring: ring)
        await b.join([a.advertised])
        try await Self.waitUntil("a and b see each other") { let x = await a.members().count; let y = await b.members().count; return x == 2 && y == 2 }

        // Random datagrams, truncated and forged sealed frames, a wrong key, plaintext.
        let sender = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.64.9", port: 0).get()
        let target = try SocketAddress(ipAddress: "127.0.64.2", port: 4682)
        var rng = SystemRandomNumberGenerator()
        let other = Keyring(primary: .generate())
        for i in 0..<600 {
            var bytes: [UInt8]
            switch i % 5 {
            case 0: bytes = (0..<Int.random(in: 0...1400, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1: bytes = Array(ring.seal(Codec.encodePacket([.ping(seq: 1, target: "a")])).prefix(Int.random(in: 0...40, using: &rng)))
            case 2: var f = ring.seal([1, 2, 3]); f[f.count - 1] ^= 0xFF; bytes = f
            case 3: bytes = other.seal(Codec.encodePacket([.ping(seq: 1, target: "a")]))
            default: bytes = Keyring().seal(Codec.encodePacket([.alive(name: "evil", address: Address(host: "127.0.64.9", port: 1),
                                                                        incarnation: Incarnation(9), metadata: [])]))
            }
            var buf = sender.allocator.buffer(capacity: bytes.count)
            buf.writeBytes(bytes)
            try await sender.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: buf))
        }
        // Garbage on the TCP port too: an oversized length prefix, then random bytes.
        for payload in [[0xFF, 0xFF, 0xFF, 0xFF, 1, 2], [0, 0, 0, 3, 9, 9, 9], [0, 0, 0, 3, 0xCA, 0x10, 200]] as [[UInt8]] {
            let ch = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: target).get()
            var buf = ch.allocator.buffer(capacity: payload.count)
            buf.writeBytes(payload)
            try await ch.writeAndFlush(buf)
            try? await ch.closeFuture.get()
        }
        try await sender.close()

        // Many silent stream connections from one address: past 8, they are closed at once.
        var crowd: [any Channel] = []
        for _ in 0..<14 { crowd.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: target).get()) }
        try await Self.waitUntil("streams over the cap are closed") { crowd.filter(\.isActive).count <= 8 }
        #expect((await a.traffic().dropped["too_many_streams"] ?? 0) >= 6)
        for c in crowd { c.close(promise: nil) }
        try await Self.waitUntil("the crowd is gone") { (await a.traffic().dropped["too_many_streams"] ?? 0) >= 6 }
        try await Task.sleep(for: .milliseconds(200))

        // Streams announcing 16 MiB frames each: 64 MiB in all may be pending, the fifth is cut off.
        var big: [any Channel] = []
        for _ in 0..<5 {
            let ch = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: target).get()
            var buf = ch.allocator.buffer(capacity: 4)
            buf.writeInteger(UInt32(16 << 20))
            try await ch.writeAndFlush(buf)
            big.append(ch)
            try await Task.sleep(for: .milliseconds(50))
        }
        try await Self.waitUntil("the stream over the budget is closed") { big.filter(\.isActive).count <= 4 }
        #expect((await a.traffic().dropped["stream_budget"] ?? 0) >= 1)
        for c in big { c.close(promise: nil) }

        let t = await a.traffic()
        #expect(t.dropped.values.reduce(0, +) >= 400)
        #expect((t.dropped["unknown_key"] ?? 0) > 0 && (t.dropped["plaintext_refused"] ?? 0) > 0 && (t.dropped["forged"] ?? 0) > 0)
        #expect(!(await a.members()).contains { $0.name == "evil" })
        // Still serving: a third node can join through a.
        let c = try await Self.node("c", "127.0.64.4", ring: ring)
        await c.join([a.advertised])
        try await Self.waitUntil("c joined") { let x = await a.members().count; let y = await c.members().count; return x == 3 && y == 3 }
        for n in [a, b, c] { await n.shutdown() }
    }

    /// A datagram captured and sent again is dropped as a replay; packets out of order are not.
    @Test func aReplayedDatagramIsDropped() async throws {
        var sender = PacketGuard()
        var receiver = PacketGuard()
        let packets = (0..<5).map { sender.wrap([UInt8($0)]) }
        #expect(receiver.unwrap(packets[1]) == [1])
        #expect(receiver.unwrap(packets[0]) == [0], "late but fresh")
        #expect(receiver.unwrap(packets[3]) == [3])
        #expect(receiver.unwrap(packets[1]) == nil, "a replay")
        #expect(receiver.unwrap(packets[2]) == [2] && receiver.unwrap(packets[4]) == [4])
        #expect(receiver.unwrap(packets[4]) == nil && receiver.unwrap(packets[0]) == nil)
        for _ in 0..<100 { _ = sender.wrap([9]) }
        let far = sender.wrap([7])
        #expect(receiver.unwrap(far) == [7])
        #expect(receiver.unwrap(packets[2]) == nil, "older than the window")
        // Through a real node: the same sealed bytes twice; the second is counted as replayed.
        let ring = Keyring(primary: .generate())
        let a = try await Self.node("a", "127.0.64.4", ring: ring)
        let udp = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.64.9", port: 0).get()
        let target = try SocketAddress(ipAddress: "127.0.64.4", port: 4682)
        var mine = PacketGuard()
        let sealed = ring.seal(mine.wrap(Codec.encodePacket([.ping(seq: 1, target: "a")])))
        for _ in 0..<2 {
            var buf = udp.allocator.buffer(capacity: sealed.count)
            buf.writeBytes(sealed)
            try await udp.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: buf))
        }
        try await Self.waitUntil("the second copy is dropped as a replay") { (await a.traffic().dropped["replayed"] ?? 0) == 1 }
        try await udp.close()
        // A stream request (here a keyring list) captured and sent again on a new connection too.
        var streams = PacketGuard()
        let request = ring.seal(streams.wrap([StreamKind.keyringQuery.rawValue] + KeyringOperation.list.encode()))
        for _ in 0..<2 {
            let ch = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: target).get()
            var buf = ch.allocator.buffer(capacity: request.count + 4)
            buf.writeInteger(UInt32(request.count))
            buf.writeBytes(request)
            try await ch.writeAndFlush(buf)
            try await Task.sleep(for: .milliseconds(200))
            ch.close(promise: nil)
        }
        try await Self.waitUntil("the second stream request is dropped as a replay") { (await a.traffic().dropped["replayed"] ?? 0) == 2 }
        // What a node has seen of streams survives its restart (written beside its peers file).
        let kept = PacketGuard.self
        var before = PacketGuard()
        let first = streams.wrap([1])
        _ = before.unwrap(first)
        var after = kept.init()
        after.restoreSeen(before.encodeSeen())
        #expect(after.unwrap(first) == nil, "seen before the restart")
        #expect(after.unwrap(streams.wrap([2])) == [2], "new requests of the same session still pass")
        await a.shutdown()
    }

    @Test func keyringQueriesAggregateAndRefuseThePrimary() async throws {
        let k1 = SecretKey.generate(), k2 = SecretKey.generate()
        let ring = Keyring(primary: k1)
        let a = try await Self.node("a", "127.0.65.2", ring: ring)
        let b = try await Self.node("b", "127.0.65.3", ring: ring)
        await b.join([a.advertised])
        try await Self.waitUntil("joined") { await a.members().count == 2 }
        var r = await a.keyringOperation(.install(k2))
        #expect(r.succeeded == 2 && r.asked == 2)
        r = await a.keyringOperation(.remove(k1))
        #expect(r.succeeded == 0 && r.failures.count == 2)
        r = await b.keyringOperation(.use(k2))
        #expect(r.succeeded == 2)
        r = await a.keyringOperation(.remove(k1))
        #expect(r.succeeded == 2)
        r = await a.keyringOperation(.list)
        #expect(r.keyCounts == [k2.idString: 2] && r.primaryCounts == [k2.idString: 2])
        // Membership survived the rotation.
        try await Self.waitUntil("still two alive") {
            let x = await a.members().filter { $0.status == .alive }.count
            let y = await b.members().filter { $0.status == .alive }.count
            return x == 2 && y == 2
        }
        for n in [a, b] { await n.shutdown() }
    }

    @Test func keyringWireFormatsRoundTrip() {
        let k = SecretKey.generate()
        for op in [KeyringOperation.list, .install(k), .use(k), .remove(k)] {
            #expect(KeyringOperation.decode(op.encode().dropFirst()) == op)
        }
        let reply = KeyringReply(node: "n1", error: "nope", primaryKeyID: "0011aabb", keyIDs: ["0011aabb", "ffeeddcc"])
        #expect(KeyringReply.decode(reply.encode().dropFirst()) == reply)
        #expect(KeyringReply.decode([1, 2, 3]) == nil)
        #expect(KeyringOperation.decode([7]) == nil)
    }
}
