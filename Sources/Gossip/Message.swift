/// One protocol message; several travel in one UDP packet (compound packet).
public enum Message: Sendable, Equatable {
    /// "Are you alive?" — `target` names the intended receiver, so a ping that reaches a new
    /// process on a reused address is not acknowledged.
    case ping(seq: UInt32, target: String)
    /// Ask the receiver to ping `target` on our behalf (SWIM indirect probe).
    case pingReq(seq: UInt32, target: String, address: Address)
    case ack(seq: UInt32)
    /// An indirect prober could not reach the target in time (Lifeguard IV.A).
    case nack(seq: UInt32)
    case alive(name: String, address: Address, incarnation: Incarnation, metadata: [UInt8])
    /// `refused` is set when the suspecter's TCP connection to the member was actively refused:
    /// the host answered but nothing listens, so the agent process is gone.
    case suspect(name: String, incarnation: Incarnation, from: String, refused: Bool)
    case dead(name: String, incarnation: Incarnation, from: String)
    /// A graceful leave, announced by the member itself.
    case left(name: String, incarnation: Incarnation)

    /// The member this message is about, for messages that disseminate membership.
    var subject: String? {
        switch self {
        case .alive(let n, _, _, _), .suspect(let n, _, _, _), .dead(let n, _, _), .left(let n, _): n
        default: nil
        }
    }
}

/// A member's full state, as carried in TCP state exchanges.
public struct MemberRecord: Sendable, Equatable {
    public var name: String
    public var address: Address
    public var status: MemberStatus
    public var incarnation: Incarnation
    public var metadata: [UInt8]

    public init(name: String, address: Address, status: MemberStatus, incarnation: Incarnation, metadata: [UInt8]) {
        self.name = name
        self.address = address
        self.status = status
        self.incarnation = incarnation
        self.metadata = metadata
    }
}

/// What a node knows of one member, without its metadata: the unit of anti-entropy digests.
public struct DigestEntry: Sendable, Equatable {
    public var name: String
    public var status: MemberStatus
    public var incarnation: Incarnation

    public init(name: String, status: MemberStatus, incarnation: Incarnation) {
        self.name = name
        self.status = status
        self.incarnation = incarnation
    }

    /// True when `self` carries newer knowledge than `other` (higher incarnation, or same
    /// incarnation and a state that overrides).
    func isNewer(than other: DigestEntry) -> Bool {
        if incarnation != other.incarnation { return incarnation > other.incarnation }
        return status.precedence > other.status.precedence
    }
}

/// Messages exchanged over TCP: join, full state, and anti-entropy by digest then difference.
public enum StreamMessage: Sendable, Equatable {
    /// A joining node sends its own record and asks for the full view.
    case join(MemberRecord)
    /// The full view, answering `join`.
    case fullState([MemberRecord])
    /// Anti-entropy, first leg: what the sender knows, without metadata.
    case digest([DigestEntry])
    /// Second leg: records the digest lacked or had older, and the names the responder wants.
    case difference(records: [MemberRecord], wanted: [String])
    /// Third leg: the records asked for; no reply.
    case push([MemberRecord])
}
