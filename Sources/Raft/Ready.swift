/// Everything the shell must do after feeding the core, in this order (etcd's Ready):
/// 1. persist `snapshot` (if any), `entries` (replacing any suffix from the first one's index)
///    and `hardState` — with one fsync when `mustSync`;
/// 2. send `messages`;
/// 3. apply `committed` to the state machine and answer `readStates` once applied;
/// then call ``RaftCore/advance(_:)`` with the same value.
public struct Ready: Sendable {
    public var hardState: HardState?
    public var entries: [Entry]
    public var snapshot: Snapshot?
    public var messages: [Message]
    public var committed: [Entry]
    public var readStates: [ReadState]
    /// Whether the disk write must be fsync'd before messages go out: a new term or vote, new
    /// entries or a snapshot. A commit index alone may be written lazily (it can be recomputed).
    public var mustSync: Bool

    public var isEmpty: Bool {
        hardState == nil && entries.isEmpty && snapshot == nil && messages.isEmpty && committed.isEmpty && readStates.isEmpty
    }
}

/// A read-only view of the core for status pages and the voter-keeping logic.
public struct RaftStatus: Sendable, Equatable {
    public struct Peer: Sendable, Equatable {
        public var id: ServerID
        public var match: LogIndex
        public var recentlyActive: Bool
    }
    public var id: ServerID
    public var term: Term
    public var role: Role
    public var leader: ServerID?
    public var commit: LogIndex
    public var applied: LogIndex
    public var lastIndex: LogIndex
    public var configuration: Configuration
    /// Followers' progress, on the leader only.
    public var peers: [Peer]
}
