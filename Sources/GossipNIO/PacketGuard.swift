import Keyring
import Primitives

/// Replay protection for gossip datagrams. Every packet carries, inside its seal, the sending
/// process's session (8 random bytes chosen at start) and a counter; a receiver keeps, per
/// session, the highest counter seen and which of the 64 below it arrived (as IPsec does), and
/// drops a packet it has seen — a captured packet sent again is refused and counted
/// (`replayed` in the dropped counts). Packets may still arrive out of order or be lost.
struct PacketGuard {
    static let sessionBytes = 8
    static let window: UInt64 = 64
    static let maxSessions = 4096

    private(set) var session: [UInt8]
    private var sent: UInt64 = 0

    private struct Seen {
        var highest: UInt64
        var bits: UInt64
    }
    private var seen: [[UInt8]: Seen] = [:]
    private var order: [[UInt8]] = []

    init(session: [UInt8] = SecretKey.randomBytes(PacketGuard.sessionBytes)) { self.session = session }

    /// The payload to seal: session, counter, packet.
    mutating func wrap(_ packet: [UInt8]) -> [UInt8] {
        sent += 1
        var w = ByteWriter(capacity: packet.count + 20)
        w.raw(session)
        w.varint(sent)
        w.raw(packet)
        return w.bytes
    }

    /// The session and counter for the next sealed datagram (they are its nonce, so they never
    /// repeat: past 2³²−1 packets the session changes).
    mutating func next() -> (session: [UInt8], counter: UInt32) {
        if sent >= UInt64(UInt32.max) {
            session = SecretKey.randomBytes(Self.sessionBytes)
            sent = 0
        }
        sent += 1
        return (session, UInt32(sent))
    }

    /// The packet inside an opened payload, or nil when it is malformed or a replay.
    mutating func unwrap(_ payload: [UInt8]) -> [UInt8]? {
        var r = ByteReader(payload)
        guard let s = r.raw(Self.sessionBytes).map(Array.init), let n = r.varint(), accept(session: s, counter: n) else { return nil }
        return Array(r.raw(r.remaining) ?? [])
    }

    /// Whether packet `counter` of `session` is new (and notes it); false for a replay.
    mutating func accept(session s: [UInt8], counter n: UInt64) -> Bool {
        guard n > 0 else { return false }
        guard var state = seen[s] else {
            if seen.count >= Self.maxSessions, let oldest = order.first {
                seen[oldest] = nil
                order.removeFirst()
            }
            seen[s] = Seen(highest: n, bits: 1)
            order.append(s)
            return true
        }
        if n > state.highest {
            let shift = n - state.highest
            state.bits = shift >= Self.window ? 1 : (state.bits << shift) | 1
            state.highest = n
        } else {
            let back = state.highest - n
            guard back < Self.window, state.bits & (1 << back) == 0 else { return false }
            state.bits |= 1 << back
        }
        seen[s] = state
        return true
    }

    // MARK: - Kept across restarts (stream requests)

    /// The highest counter seen per session, to be written down.
    func encodeSeen() -> [UInt8] {
        var w = ByteWriter()
        w.varint(UInt64(order.count))
        for s in order { w.raw(s); w.varint(seen[s]?.highest ?? 0) }
        return w.bytes
    }

    /// What an earlier run of this agent had seen: nothing at or below it is taken again.
    mutating func restoreSeen(_ bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let n = r.count(max: Self.maxSessions) else { return }
        for _ in 0..<n {
            guard let s = r.raw(Self.sessionBytes).map(Array.init), let h = r.varint() else { return }
            if seen[s] == nil { order.append(s) }
            seen[s] = Seen(highest: h, bits: ~0)
        }
    }
}
