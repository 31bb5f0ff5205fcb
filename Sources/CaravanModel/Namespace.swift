/// A namespace: jobs in it are apart from others' (the same id in two namespaces is two jobs),
/// access is granted per namespace, and its quota caps what its jobs may hold together.
/// `default` always exists.
public struct Namespace: Sendable, Equatable {
    public var name: String
    public var description: String
    public var quota: Quota?
    /// Which task drivers its jobs may use (Nomad's namespace capabilities).
    public var drivers = DriverRule()
    public var createIndex: UInt64 = 0
    public var modifyIndex: UInt64 = 0

    public static let defaultName = "default"

    public init(name: String, description: String = "", quota: Quota? = nil) {
        self.name = name
        self.description = description
        self.quota = quota
    }

    /// 1-128 letters, digits, `-`, `_` or `.`, and not `.` or `..` — what a job file's
    /// `namespace` takes.
    public static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 128 && s != "." && s != ".." && s.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x5F || b == 0x2E
        }
    }
}

/// The task drivers a namespace's jobs may use: only `enabled` ones when it is set, never a
/// `disabled` one. Checked when a job is registered (the log refuses it, so no path around it).
public struct DriverRule: Sendable, Equatable {
    /// nil: every driver not disabled.
    public var enabled: [TaskSpec.Driver]?
    public var disabled: [TaskSpec.Driver] = []

    public init(enabled: [TaskSpec.Driver]? = nil, disabled: [TaskSpec.Driver] = []) {
        self.enabled = enabled
        self.disabled = disabled
    }

    public var isUnrestricted: Bool { enabled == nil && disabled.isEmpty }

    public func allows(_ d: TaskSpec.Driver) -> Bool { !disabled.contains(d) && (enabled?.contains(d) ?? true) }

    /// Why `job` may not run in `namespace`, naming the first task whose driver is not allowed.
    public func refusal(_ job: Job, namespace: String) -> String? {
        for g in job.groups {
            for t in g.tasks where !allows(t.driver) {
                return "namespace \(namespace) does not allow the \(t.driver.rawValue) driver (task \(g.name).\(t.name))"
            }
        }
        return nil
    }
}

/// What a namespace's live allocations may hold together; nil parts are unlimited.
public struct Quota: Sendable, Equatable {
    public var cpuMillicores: Int?
    public var memoryMiB: Int?
    public var instances: Int?

    public init(cpuMillicores: Int? = nil, memoryMiB: Int? = nil, instances: Int? = nil) {
        self.cpuMillicores = cpuMillicores
        self.memoryMiB = memoryMiB
        self.instances = instances
    }

    /// What live allocations use, against a quota.
    public struct Usage: Sendable, Equatable {
        public var cpuMillicores = 0
        public var memoryMiB = 0
        public var instances = 0
        public init() {}

        public mutating func add(cpu: Int, memory: Int, sign: Int = 1) {
            cpuMillicores += sign * cpu
            memoryMiB += sign * memory
            instances += sign
        }
    }

    /// Why one more instance asking `cpu`/`memory` does not fit in `namespace` with `used`; nil
    /// when it fits. Worded for placement failures: `namespace team-a: memory 2048Mi of 2048Mi used`.
    public func refusal(_ namespace: String, used: Usage, cpu: Int, memory: Int) -> String? {
        if let limit = instances, used.instances + 1 > limit {
            return "namespace \(namespace): instances \(used.instances) of \(limit) used"
        }
        if let limit = cpuMillicores, used.cpuMillicores + cpu > limit {
            return "namespace \(namespace): cpu \(used.cpuMillicores)m of \(limit)m used"
        }
        if let limit = memoryMiB, used.memoryMiB + memory > limit {
            return "namespace \(namespace): memory \(used.memoryMiB)Mi of \(limit)Mi used"
        }
        return nil
    }
}
