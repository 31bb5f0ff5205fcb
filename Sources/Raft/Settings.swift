/// Timing and flow-control settings of the Raft core, in ticks of the shell's clock.
public struct RaftSettings: Sendable, Equatable {
    /// Ticks between heartbeats of a leader.
    public var heartbeatTicks: Int
    /// Ticks without hearing a leader before a follower campaigns; the actual timeout is random
    /// in `[electionTicks, electionTicks + electionSpreadTicks)` so that candidates rarely
    /// collide (§5.2).
    public var electionTicks: Int
    /// The width of that random range; the paper's (and the default) is `electionTicks`. With
    /// PreVote a collision costs only a round trip, so a narrower range (the agent uses half)
    /// elects sooner after a silent leader without more split votes on a LAN.
    public var electionSpreadTicks: Int
    /// Ask "would you vote for me?" before raising the term, so a server returning from a
    /// partition cannot depose a healthy leader (dissertation §9.6).
    public var preVote: Bool
    /// A leader that has not heard from a quorum within an election timeout steps down, and
    /// followers that heard their leader recently refuse to vote for others.
    public var checkQuorum: Bool
    /// Serve reads by the leader's lease (no heartbeat round) instead of ReadIndex. Only safe
    /// with bounded clock drift; off by default.
    public var leaseReads: Bool
    /// Append messages in flight to one follower before waiting for acknowledgements.
    public var maxInflightMessages: Int
    /// Bytes of entries in one append message.
    public var maxMessageBytes: Int
    /// Bytes of entries in flight to one follower.
    public var maxInflightBytes: Int
    /// Uncommitted bytes a leader accepts before refusing proposals (protects its memory).
    public var maxUncommittedBytes: Int
    /// A follower with nothing else coming learns a new commit index at the leader's next tick,
    /// not in a message of its own at once: under load the next append carries it, so an entry
    /// costs one message and one acknowledgement per follower instead of two of each. Followers
    /// apply up to a tick later (what they serve without the leader — stale reads — is that much
    /// older); the leader's answers do not wait.
    public var commitNoticeAtTick: Bool

    public init(heartbeatTicks: Int = 1, electionTicks: Int = 10, electionSpreadTicks: Int? = nil, preVote: Bool = true,
                checkQuorum: Bool = true, leaseReads: Bool = false, maxInflightMessages: Int = 64, maxMessageBytes: Int = 1 << 20,
                maxInflightBytes: Int = 32 << 20, maxUncommittedBytes: Int = 64 << 20, commitNoticeAtTick: Bool = true) {
        self.heartbeatTicks = heartbeatTicks
        self.electionTicks = electionTicks
        self.electionSpreadTicks = max(1, electionSpreadTicks ?? electionTicks)
        self.preVote = preVote
        self.checkQuorum = checkQuorum
        self.leaseReads = leaseReads
        self.maxInflightMessages = maxInflightMessages
        self.maxMessageBytes = maxMessageBytes
        self.maxInflightBytes = maxInflightBytes
        self.maxUncommittedBytes = maxUncommittedBytes
        self.commitNoticeAtTick = commitNoticeAtTick
    }
}
