/// The rules of an ACL policy as the API and policy files spell them.
///
/// ```yaml
/// description: deploys for team a
/// namespaces: {default: [read-job, submit-job, read-logs], "team-*": [read], secret: [deny]}
/// node: read          # read, write or deny; likewise agent, operator, keyring
/// variables: {"app/": write, "app/secret/": deny}
/// ```
public struct ACLPolicyRules: Codable, Sendable, Equatable {
    public var description: String?
    /// Namespace (or glob ending in `*`) → capabilities: read-job, submit-job, read-logs,
    /// alloc-exec, alloc-lifecycle, scale, the shorthands `read` and `write`, or `deny`.
    public var namespaces: [String: [String]]?
    public var node: String?
    public var agent: String?
    public var `operator`: String?
    public var keyring: String?
    /// Variable path prefix → read, write or deny (the longest matching prefix wins).
    public var variables: [String: String]?

    public init(description: String? = nil, namespaces: [String: [String]]? = nil, node: String? = nil, agent: String? = nil,
                operator: String? = nil, keyring: String? = nil, variables: [String: String]? = nil) {
        self.description = description
        self.namespaces = namespaces
        self.node = node
        self.agent = agent
        self.operator = `operator`
        self.keyring = keyring
        self.variables = variables
    }
}

public struct ACLPolicyView: Codable, Sendable, Equatable {
    public var name: String
    public var rules: ACLPolicyRules
    public var createIndex: UInt64
    public var modifyIndex: UInt64

    public init(name: String, rules: ACLPolicyRules, createIndex: UInt64, modifyIndex: UInt64) {
        self.name = name
        self.rules = rules
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }
}

/// A token as the API shows it; `secretID` only in the answer that created it.
public struct ACLTokenView: Codable, Sendable, Equatable {
    public var accessorID: String
    public var secretID: String?
    public var name: String
    /// `management` or `client`.
    public var type: String
    public var policies: [String]
    /// Unix milliseconds.
    public var createTime: Int64
    public var expiryTime: Int64?
    public var expired: Bool
    public var createIndex: UInt64
    public var modifyIndex: UInt64

    public init(accessorID: String, secretID: String?, name: String, type: String, policies: [String], createTime: Int64,
                expiryTime: Int64?, expired: Bool, createIndex: UInt64, modifyIndex: UInt64) {
        self.accessorID = accessorID
        self.secretID = secretID
        self.name = name
        self.type = type
        self.policies = policies
        self.createTime = createTime
        self.expiryTime = expiryTime
        self.expired = expired
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }
}

/// `POST /v1/acl/tokens` and `PUT /v1/acl/token/{accessor}`: fields left out keep their value
/// on an update. `ttl` is a duration (`90s`, `30m`, `24h`, or seconds) from now.
public struct ACLTokenRequest: Codable, Sendable, Equatable {
    public var name: String?
    public var type: String?
    public var policies: [String]?
    public var ttl: String?

    public init(name: String? = nil, type: String? = nil, policies: [String]? = nil, ttl: String? = nil) {
        self.name = name
        self.type = type
        self.policies = policies
        self.ttl = ttl
    }
}

/// A namespace's quota as the API spells it: `cpu` like a task's (`2000m`, `2`), `memory` with a
/// unit (`2Gi`, `512Mi`), `instances` a count; each optional (absent: unlimited).
public struct QuotaSpec: Codable, Sendable, Equatable {
    public var cpu: String?
    public var memory: String?
    public var instances: Int?

    public init(cpu: String? = nil, memory: String? = nil, instances: Int? = nil) {
        self.cpu = cpu
        self.memory = memory
        self.instances = instances
    }
}

/// `PUT /v1/namespace/{name}`.
public struct NamespaceRequest: Codable, Sendable, Equatable {
    public var description: String?
    public var quota: QuotaSpec?
    public var capabilities: NamespaceCapabilities?

    public init(description: String? = nil, quota: QuotaSpec? = nil, capabilities: NamespaceCapabilities? = nil) {
        self.description = description
        self.quota = quota
        self.capabilities = capabilities
    }
}

/// The task drivers a namespace's jobs may use: only `enabledTaskDrivers` when given, never one
/// of `disabledTaskDrivers` (`raw_exec`, `exec`, `container`).
public struct NamespaceCapabilities: Codable, Sendable, Equatable {
    public var enabledTaskDrivers: [String]?
    public var disabledTaskDrivers: [String]?

    public init(enabledTaskDrivers: [String]? = nil, disabledTaskDrivers: [String]? = nil) {
        self.enabledTaskDrivers = enabledTaskDrivers
        self.disabledTaskDrivers = disabledTaskDrivers
    }
}

/// A namespace, what its live allocations hold and its quota.
public struct NamespaceView: Codable, Sendable, Equatable {
    public struct Amounts: Codable, Sendable, Equatable {
        public var cpuMillicores: Int?
        public var memoryMiB: Int?
        public var instances: Int?
        public init(cpuMillicores: Int?, memoryMiB: Int?, instances: Int?) {
            self.cpuMillicores = cpuMillicores
            self.memoryMiB = memoryMiB
            self.instances = instances
        }
    }

    public var name: String
    public var description: String
    /// Absent: no quota.
    public var quota: Amounts?
    /// Absent: every driver.
    public var capabilities: NamespaceCapabilities?
    public var used: Amounts
    /// Jobs registered in it (stopped ones included until purged).
    public var jobs: Int
    public var createIndex: UInt64
    public var modifyIndex: UInt64

    public init(name: String, description: String, quota: Amounts?, capabilities: NamespaceCapabilities? = nil, used: Amounts, jobs: Int,
                createIndex: UInt64, modifyIndex: UInt64) {
        self.name = name
        self.description = description
        self.quota = quota
        self.capabilities = capabilities
        self.used = used
        self.jobs = jobs
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }
}
