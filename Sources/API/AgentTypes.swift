/// Resources of a node: what it has, or what is free on it.
public struct ResourcesView: Codable, Sendable, Equatable {
    /// CPU in millicores (1000 = one core).
    public var cpuMillicores: Int
    public var memoryMiB: Int
    public var diskMiB: Int

    public init(cpuMillicores: Int, memoryMiB: Int, diskMiB: Int) {
        self.cpuMillicores = cpuMillicores
        self.memoryMiB = memoryMiB
        self.diskMiB = diskMiB
    }
}

/// A node's capacity as fingerprinted at start.
public struct CapacityView: Codable, Sendable, Equatable {
    public var cpuCores: Int
    public var cpuMHz: Int
    public var cpuMillicores: Int
    public var memoryMiB: Int
    public var diskMiB: Int

    public init(cpuCores: Int, cpuMHz: Int, cpuMillicores: Int, memoryMiB: Int, diskMiB: Int) {
        self.cpuCores = cpuCores
        self.cpuMHz = cpuMHz
        self.cpuMillicores = cpuMillicores
        self.memoryMiB = memoryMiB
        self.diskMiB = diskMiB
    }
}

/// One member of the cluster as `GET /v1/agent/members` and `caravan members --json` show it.
public struct MemberView: Codable, Sendable, Equatable {
    public var name: String
    public var address: String
    /// alive | suspect | dead | left
    public var status: String
    public var role: String
    public var capacity: CapacityView?
    public var free: ResourcesView?
    public var version: String?
    public var tags: [String: String]
    public var incarnation: UInt64

    public init(name: String, address: String, status: String, role: String, capacity: CapacityView?,
                free: ResourcesView?, version: String?, tags: [String: String], incarnation: UInt64) {
        self.name = name
        self.address = address
        self.status = status
        self.role = role
        self.capacity = capacity
        self.free = free
        self.version = version
        self.tags = tags
        self.incarnation = incarnation
    }
}

/// `GET /v1/agent/self`: this agent's identity, configuration summary and gossip health.
public struct AgentSelfView: Codable, Sendable, Equatable {
    public var name: String
    public var version: String
    public var gossipAddress: String
    public var httpAddress: String
    public var encrypted: Bool
    public var member: MemberView
    public var gossip: GossipStatsView

    public init(name: String, version: String, gossipAddress: String, httpAddress: String, encrypted: Bool,
                member: MemberView, gossip: GossipStatsView) {
        self.name = name
        self.version = version
        self.gossipAddress = gossipAddress
        self.httpAddress = httpAddress
        self.encrypted = encrypted
        self.member = member
        self.gossip = gossip
    }
}

public struct GossipStatsView: Codable, Sendable, Equatable {
    public var localHealth: Int
    public var probes: Int
    public var probesFailed: Int
    public var suspicionsRaised: Int
    public var refutations: Int
    public var packetsSent: Int
    public var packetsReceived: Int
    public var bytesSent: Int
    public var bytesReceived: Int
    public var streamBytesSent: Int
    public var streamBytesReceived: Int
    public var dropped: [String: Int]

    public init(localHealth: Int, probes: Int, probesFailed: Int, suspicionsRaised: Int, refutations: Int,
                packetsSent: Int, packetsReceived: Int, bytesSent: Int, bytesReceived: Int,
                streamBytesSent: Int, streamBytesReceived: Int, dropped: [String: Int]) {
        self.localHealth = localHealth
        self.probes = probes
        self.probesFailed = probesFailed
        self.suspicionsRaised = suspicionsRaised
        self.refutations = refutations
        self.packetsSent = packetsSent
        self.packetsReceived = packetsReceived
        self.bytesSent = bytesSent
        self.bytesReceived = bytesReceived
        self.streamBytesSent = streamBytesSent
        self.streamBytesReceived = streamBytesReceived
        self.dropped = dropped
    }
}

/// Body of `POST /v1/agent/keyring/{install|use|remove}`.
public struct KeyringRequest: Codable, Sendable, Equatable {
    public var key: String
    public init(key: String) { self.key = key }
}

/// Answer of the keyring endpoints: per-node results aggregated, keys by identifier only.
public struct KeyringView: Codable, Sendable, Equatable {
    public struct NodeResult: Codable, Sendable, Equatable {
        public var node: String
        public var error: String?
        public var primaryKey: String?
        public var keys: [String]
        public init(node: String, error: String?, primaryKey: String?, keys: [String]) {
            self.node = node
            self.error = error
            self.primaryKey = primaryKey
            self.keys = keys
        }
    }

    public var operation: String
    public var nodes: Int
    public var succeeded: Int
    public var unreachable: [String]
    /// Key identifier → number of nodes that have it installed.
    public var keys: [String: Int]
    /// Key identifier → number of nodes that seal with it.
    public var primaryKeys: [String: Int]
    public var results: [NodeResult]

    public init(operation: String, nodes: Int, succeeded: Int, unreachable: [String], keys: [String: Int],
                primaryKeys: [String: Int], results: [NodeResult]) {
        self.operation = operation
        self.nodes = nodes
        self.succeeded = succeeded
        self.unreachable = unreachable
        self.keys = keys
        self.primaryKeys = primaryKeys
        self.results = results
    }
}

/// The error body of every failed request: `{"error": {"code": "...", "message": "..."}}`.
public struct ErrorBody: Codable, Sendable, Equatable {
    public struct Detail: Codable, Sendable, Equatable {
        public var code: String
        public var message: String
    }
    public var error: Detail

    public init(code: String, message: String) {
        self.error = Detail(code: code, message: message)
    }
}
