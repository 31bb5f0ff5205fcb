/// A Raft term: a logical clock that grows with every election.
public typealias Term = UInt64
/// The position of an entry in the replicated log; the first entry is at 1.
public typealias LogIndex = UInt64

/// A server's stable identity in the Raft group (the agent's node name).
public struct ServerID: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }
    public var description: String { rawValue }
    public static func < (l: ServerID, r: ServerID) -> Bool { l.rawValue < r.rawValue }
}

/// One record of the replicated log.
public struct Entry: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        /// Opaque bytes for the state machine.
        case command = 0
        /// The empty entry a new leader appends to commit entries of earlier terms (§5.4.2).
        case empty = 1
        /// A new configuration of the group; takes effect as soon as it is in a server's log.
        case configuration = 2
    }

    public var term: Term
    public var index: LogIndex
    public var kind: Kind
    public var data: [UInt8]

    public init(term: Term, index: LogIndex, kind: Kind = .command, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }

    /// Bytes this entry takes in a message, for flow control.
    public var size: Int { data.count + 16 }
}

/// What must be on stable storage before a server answers anyone: its term, its vote, and how
/// far it knows the log is committed.
public struct HardState: Sendable, Equatable {
    public var term: Term
    public var vote: ServerID?
    public var commit: LogIndex

    public init(term: Term = 0, vote: ServerID? = nil, commit: LogIndex = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// The members of the group: voters decide, learners only receive the log.
public struct Configuration: Sendable, Equatable {
    public struct Server: Sendable, Equatable {
        public var id: ServerID
        /// Where the server's RPC listener is; opaque to the core.
        public var address: String
        public var voter: Bool
        public init(id: ServerID, address: String, voter: Bool) {
            self.id = id
            self.address = address
            self.voter = voter
        }
    }

    public var servers: [Server]

    public init(servers: [Server] = []) { self.servers = servers.sorted { $0.id < $1.id } }

    public var voters: [ServerID] { servers.filter(\.voter).map(\.id) }
    public var learners: [ServerID] { servers.filter { !$0.voter }.map(\.id) }
    public var ids: [ServerID] { servers.map(\.id) }
    public func contains(_ id: ServerID) -> Bool { servers.contains { $0.id == id } }
    public func isVoter(_ id: ServerID) -> Bool { servers.contains { $0.id == id && $0.voter } }
    public func server(_ id: ServerID) -> Server? { servers.first { $0.id == id } }
    public var quorum: Int { voters.count / 2 + 1 }
}

/// A change of one server at a time (the dissertation's §4.1: any two majorities of configurations
/// that differ by one voter overlap).
public enum ConfigurationChange: Sendable, Equatable {
    /// Adds a server that receives the log but does not vote.
    case addLearner(ServerID, address: String)
    /// Makes a learner (or a new server) a voter.
    case addVoter(ServerID, address: String)
    /// Makes a voter a learner.
    case demote(ServerID)
    case remove(ServerID)
}

/// Where the state machine's snapshot stands in the log.
public struct SnapshotMetadata: Sendable, Equatable {
    public var index: LogIndex
    public var term: Term
    public var configuration: Configuration
    public init(index: LogIndex, term: Term, configuration: Configuration) {
        self.index = index
        self.term = term
        self.configuration = configuration
    }
}

/// The state machine as of `metadata.index`, replacing the log up to there.
public struct Snapshot: Sendable, Equatable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]
    public init(metadata: SnapshotMetadata, data: [UInt8]) {
        self.metadata = metadata
        self.data = data
    }
}

/// The role a server plays right now.
public enum Role: String, Sendable, Equatable {
    case follower, preCandidate = "pre-candidate", candidate, leader
}

/// A linearizable read became possible: once the state machine has applied `index`, a read
/// tagged `context` sees every write acknowledged before it was asked.
public struct ReadState: Sendable, Equatable {
    public var context: UInt64
    public var index: LogIndex
    public init(context: UInt64, index: LogIndex) {
        self.context = context
        self.index = index
    }
}
