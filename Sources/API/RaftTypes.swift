/// One server of the Raft group: `caravan operator raft peers`.
public struct RaftPeerView: Codable, Sendable, Equatable {
    public var id: String
    /// Its RPC address (`host:port`).
    public var address: String
    public var voter: Bool
    public var leader: Bool
    /// How far its log matches the leader's (the leader's own last index for the leader).
    public var matchIndex: UInt64

    public init(id: String, address: String, voter: Bool, leader: Bool, matchIndex: UInt64) {
        self.id = id
        self.address = address
        self.voter = voter
        self.leader = leader
        self.matchIndex = matchIndex
    }
}

/// `GET /v1/operator/raft/configuration`: the group as its leader sees it.
public struct RaftConfigurationView: Codable, Sendable, Equatable {
    public var term: UInt64
    public var commitIndex: UInt64
    public var servers: [RaftPeerView]

    public init(term: UInt64, commitIndex: UInt64, servers: [RaftPeerView]) {
        self.term = term
        self.commitIndex = commitIndex
        self.servers = servers
    }
}

/// `GET /v1/status`: the leader and this agent's place in the group (`caravan status`).
public struct StatusView: Codable, Sendable, Equatable {
    public var node: String
    public var leader: String?
    public var leaderAddress: String?
    public var term: UInt64
    /// follower, pre-candidate, candidate or leader; `none` when the agent is not in the group.
    public var role: String
    /// voter, learner or none.
    public var membership: String
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var lastIndex: UInt64

    public init(node: String, leader: String?, leaderAddress: String?, term: UInt64, role: String, membership: String,
                commitIndex: UInt64, appliedIndex: UInt64, lastIndex: UInt64) {
        self.node = node
        self.leader = leader
        self.leaderAddress = leaderAddress
        self.term = term
        self.role = role
        self.membership = membership
        self.commitIndex = commitIndex
        self.appliedIndex = appliedIndex
        self.lastIndex = lastIndex
    }
}

/// `GET /v1/status/leader`.
public struct LeaderView: Codable, Sendable, Equatable {
    public var leader: String?
    public var address: String?
    public init(leader: String?, address: String?) {
        self.leader = leader
        self.address = address
    }
}

/// One variable: `caravan var get`.
public struct VariableView: Codable, Sendable, Equatable {
    public var path: String
    public var value: String
    public var createIndex: UInt64
    public var modifyIndex: UInt64

    public init(path: String, value: String, createIndex: UInt64, modifyIndex: UInt64) {
        self.path = path
        self.value = value
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }
}

/// `PUT /v1/var/{path}` body.
public struct VariableWrite: Codable, Sendable, Equatable {
    public var value: String
    public init(value: String) { self.value = value }
}
