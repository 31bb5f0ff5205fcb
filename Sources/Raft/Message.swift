/// A message between two Raft servers. Every message carries the sender's term.
public struct Message: Sendable, Equatable {
    public var from: ServerID
    public var to: ServerID
    public var term: Term
    public var body: Body

    public init(from: ServerID, to: ServerID, term: Term, body: Body) {
        self.from = from
        self.to = to
        self.term = term
        self.body = body
    }

    public enum Body: Sendable, Equatable {
        /// RequestVote (§5.2); `preVote` asks without raising anyone's term; `transfer` is set when
        /// the leader asked the candidate to take over, so voters ignore their leader lease.
        case vote(lastIndex: LogIndex, lastTerm: Term, preVote: Bool, transfer: Bool)
        case voteResponse(granted: Bool, preVote: Bool)
        /// AppendEntries (§5.3).
        case append(prevIndex: LogIndex, prevTerm: Term, entries: [Entry], commit: LogIndex)
        /// Success reports the follower's last matching index; a rejection carries a hint for
        /// fast backtracking: the last index at or below the probe whose term is ≤ `hintTerm`.
        case appendResponse(success: Bool, index: LogIndex, hintIndex: LogIndex, hintTerm: Term)
        /// Heartbeats carry no entries; `context` tags a ReadIndex round.
        case heartbeat(commit: LogIndex, context: UInt64)
        case heartbeatResponse(context: UInt64)
        /// InstallSnapshot; the transport streams `snapshot.data` in chunks.
        case snapshot(Snapshot)
        /// A follower forwards a read to its leader, which answers with the index to wait for.
        case readIndex(context: UInt64)
        case readIndexResponse(context: UInt64, index: LogIndex)
        /// Leadership transfer: campaign now, without waiting for an election timeout.
        case timeoutNow
    }
}
