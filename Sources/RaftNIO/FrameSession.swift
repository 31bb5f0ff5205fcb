import Keyring
import Primitives

/// The guard against replayed Raft frames, one per connection.
///
/// The accepting agent opens every connection with a sealed challenge: a random 16-byte nonce.
/// Every frame after it carries, inside the seal, the nonce its receiver chose for the connection
/// and a sequence number counting up from 1; the connector's first frame (its hello) names the
/// connector's own nonce, which frames coming back carry. A frame captured on one connection and
/// sent on another carries the wrong nonce; one sent again on the same connection carries a spent
/// number. Both are refused, the connection is closed, and the refusal is counted
/// (`caravan_raft_frames_replayed_total`).
///
/// Frames on the wire: `seal(kind | nonce(16) | seq(varint) | body)`; the challenge alone is
/// `seal(challenge | nonce(16))`. Accessed only on the connection's event loop.
final class FrameSession: @unchecked Sendable {
    static let nonceBytes = 16

    /// The nonce frames arriving here must carry (this side's), and the last number seen.
    private(set) var expected: [UInt8]?
    private var received: UInt64 = 0
    /// The nonce frames sent from here carry (the peer's), and the last number used.
    private(set) var tag: [UInt8]?
    private var sent: UInt64 = 0

    enum Opened: Equatable {
        /// The accepting side's challenge (for a connector still waiting for one).
        case challenge([UInt8])
        /// A fresh frame: its kind byte and body, as the transport handles them.
        case frame([UInt8])
        case replayed
    }

    static func nonce() -> [UInt8] { SecretKey.randomBytes(nonceBytes) }

    /// The accepting side: a new nonce and the challenge frame that announces it.
    func challenge(_ keyring: SharedKeyring) -> [UInt8] {
        let n = Self.nonce()
        expected = n
        return keyring.current.seal([RaftTransport.Kind.challenge.rawValue] + n)
    }

    /// The connecting side, once the challenge arrived: binds to it and returns the hello that
    /// names this side's own nonce.
    func answer(_ challenge: [UInt8], _ keyring: SharedKeyring) -> [UInt8] {
        tag = challenge
        let mine = Self.nonce()
        expected = mine
        return seal([RaftTransport.Kind.hello.rawValue] + mine, keyring)
    }

    /// The accepting side, on the connector's hello: frames back carry the nonce it names.
    func accept(hello body: ArraySlice<UInt8>) -> Bool {
        guard tag == nil, body.count == Self.nonceBytes else { return false }
        tag = Array(body)
        return true
    }

    var isBound: Bool { tag != nil }

    /// Seals a frame (`kind | body`) for this connection.
    func seal(_ payload: [UInt8], _ keyring: SharedKeyring) -> [UInt8] {
        precondition(tag != nil && !payload.isEmpty, "a frame is sealed only on a bound connection")
        sent += 1
        var w = ByteWriter(capacity: payload.count + 32)
        w.byte(payload[0])
        w.raw(tag!)
        w.varint(sent)
        w.raw(payload.dropFirst())
        return keyring.current.seal(w.bytes)
    }

    /// Checks an opened frame against this connection.
    func check(_ payload: [UInt8]) -> Opened {
        guard let kind = payload.first else { return .replayed }
        var r = ByteReader(payload)
        _ = r.byte()
        if kind == RaftTransport.Kind.challenge.rawValue {
            // Only a connector that has not bound yet takes one.
            guard expected == nil, tag == nil, let n = r.raw(Self.nonceBytes), r.atEnd else { return .replayed }
            return .challenge(Array(n))
        }
        guard let expected, let n = r.raw(Self.nonceBytes), Array(n) == expected, let seq = r.varint(), seq == received + 1 else {
            return .replayed
        }
        received = seq
        return .frame([kind] + (r.raw(r.remaining).map(Array.init) ?? []))
    }
}
