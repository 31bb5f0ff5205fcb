/// What the shell MUST do after feeding an input to ``Instance``.
public enum Directive: Sendable, Equatable {
    /// Encode the messages as one packet, seal it and send it over UDP.
    case send([Message], to: Address)
    /// Open a TCP stream, send the message, and hand the reply to ``Instance/onStreamReply``
    /// (or report ``Instance/onStreamFailed`` when the peer cannot be reached or answers nothing).
    /// `.push` expects no reply.
    case connect(to: Address, StreamMessage)
    /// Ping the member over TCP (connect, a sealed ping frame, its echo) and report the outcome
    /// with ``Instance/onReachability``: an echo proves it alive when UDP is lossy; a refused
    /// connection proves the agent process is gone. Give up after one probe interval.
    case checkReachability(of: String, at: Address, seq: UInt32)
    /// Something happened that operators want to know (log it, publish it).
    case event(Event)
}

/// A membership change or a notable moment, one per log line.
public enum Event: Sendable, Equatable {
    case memberJoined(Member)
    case memberSuspected(Member, by: String)
    /// A suspected member proved it is alive (it refuted with a higher incarnation).
    case memberRecovered(Member)
    case memberDied(Member, by: String)
    case memberLeft(Member)
    case memberUpdated(Member)
    case memberReaped(String)
    /// This node heard a rumour about itself and refuted it.
    case refuted(rumour: MemberStatus, incarnation: Incarnation)
    /// Two processes claim the same name from different addresses.
    case nameConflict(name: String, known: Address, claimed: Address)
    case joined(via: Address, members: Int)
    case joinFailed(attempt: Int, retryIn: Duration)
}

/// What a TCP ping found.
public enum Reachability: Sendable, Equatable {
    /// The member echoed the ping: it is alive, whatever UDP lost.
    case answered
    /// The connection was refused: nothing listens there any more.
    case refused
    /// No answer in time (or the connection failed otherwise): no evidence either way.
    case silent
}

/// Counters the shell exports as metrics.
public struct Stats: Sendable, Equatable {
    public var probes = 0
    public var probesFailed = 0
    /// Probes that UDP failed but a TCP ping saved.
    public var probesSavedByTCP = 0
    public var indirectProbes = 0
    public var suspicionsRaised = 0
    public var refutations = 0
    public var deathsDeclared = 0
    public var messagesSent = 0
    public var packetsSent = 0
    public var misdirectedPings = 0
    public var stalePings = 0
    public init() {}
}
