/// What a user asks the cluster to run: Nomad's job → groups → tasks, with Kubernetes-style
/// units (CPU in millicores, memory and disk in MiB).
public struct Job: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case service, batch, system, sysbatch }

    public var id: String
    public var name: String
    public var namespace: String = "default"
    public var type: Kind = .service
    /// 1–100; higher runs first when evaluations queue up.
    public var priority: Int = 50
    public var datacenters: [String] = ["*"]
    public var meta: [String: String] = [:]
    public var constraints: [Constraint] = []
    public var affinities: [Affinity] = []
    public var spreads: [Spread] = []
    public var update: UpdateStrategy?
    public var periodic: Periodic?
    public var groups: [TaskGroup] = []

    public init(id: String, name: String? = nil, groups: [TaskGroup] = []) {
        self.id = id
        self.name = name ?? id
        self.groups = groups
    }
}

public struct TaskGroup: Sendable, Equatable {
    public var name: String
    public var count: Int = 1
    public var constraints: [Constraint] = []
    public var affinities: [Affinity] = []
    public var spreads: [Spread] = []
    public var restart: RestartPolicy
    public var reschedule: ReschedulePolicy
    public var migrate = MigrateStrategy()
    public var ephemeralDiskMiB: Int = 300
    /// What an instance may keep on its node's disk, reserved there and held to: its
    /// `ephemeralDisk` and, besides, what its tasks' logs may keep.
    public var diskMiB: Int {
        tasks.reduce(min(ephemeralDiskMiB, 1 << 24)) { min($0 + $1.logs.keptMiB, 1 << 40) }
    }
    public var ports: [Port] = []
    public var services: [ServiceSpec] = []
    public var tasks: [TaskSpec] = []
    public var meta: [String: String] = [:]

    public init(name: String, count: Int = 1, for kind: Job.Kind = .service, tasks: [TaskSpec] = []) {
        self.name = name
        self.count = count
        self.restart = .defaults(for: kind)
        self.reschedule = .defaults(for: kind)
        self.tasks = tasks
    }
}

public struct TaskSpec: Sendable, Equatable {
    public enum Driver: String, Sendable, CaseIterable { case rawExec = "raw_exec", exec, container }

    public var name: String
    public var driver: Driver
    /// Driver settings: `command`, `args` (raw_exec, exec); `image`, `command`, `args`,
    /// `entrypoint`, `workdir`, `user` (container).
    public var config: DriverConfig
    public var env: [String: String] = [:]
    public var resources = Resources()
    public var killTimeout: Duration = .seconds(5)
    public var killSignal: String = "SIGTERM"
    public var lifecycle: Lifecycle?
    public var logs = LogPolicy()
    public var user: String?
    public var meta: [String: String] = [:]

    public init(name: String, driver: Driver, config: DriverConfig) {
        self.name = name
        self.driver = driver
        self.config = config
    }
}

public struct DriverConfig: Sendable, Equatable {
    public var image: String?
    public var command: String?
    public var args: [String] = []
    public var entrypoint: [String]?
    public var workdir: String?
    /// Registry credentials for the container driver (basic auth, or for the token service).
    public var auth: RegistryAuth?
    public init(image: String? = nil, command: String? = nil, args: [String] = []) {
        self.image = image
        self.command = command
        self.args = args
    }
}

public struct RegistryAuth: Sendable, Equatable {
    public var username: String
    public var password: String
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }
}

/// What one task may use. CPU in millicores (1000 = one core), memory and disk in MiB.
public struct Resources: Sendable, Equatable {
    public var cpuMillicores: Int = 100
    public var memoryMiB: Int = 300
    /// A hard memory ceiling above the reservation (Nomad's memory_max); nil = the reservation.
    public var memoryMaxMiB: Int?
    /// Caps the task's CPU at its reservation (a CFS quota) instead of letting it use idle CPU
    /// beyond its share (Nomad's cpu_hard_limit).
    public var cpuHardLimit: Bool = false
    public init(cpuMillicores: Int = 100, memoryMiB: Int = 300, memoryMaxMiB: Int? = nil, cpuHardLimit: Bool = false) {
        self.cpuMillicores = cpuMillicores
        self.memoryMiB = memoryMiB
        self.memoryMaxMiB = memoryMaxMiB
        self.cpuHardLimit = cpuHardLimit
    }
}

public struct Constraint: Sendable, Equatable {
    public enum Operator: String, Sendable, CaseIterable {
        case equal = "=", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
        case regexp, version, setContains = "set_contains", isSet = "is_set", isNotSet = "is_not_set"
        case distinctHosts = "distinct_hosts", distinctProperty = "distinct_property"
    }
    public var attribute: String
    public var `operator`: Operator
    public var value: String
    public init(attribute: String, operator op: Operator, value: String) {
        self.attribute = attribute
        self.operator = op
        self.value = value
    }
}

public struct Affinity: Sendable, Equatable {
    public var attribute: String
    public var `operator`: Constraint.Operator
    public var value: String
    /// -100…100; negative weights repel.
    public var weight: Int = 50
    public init(attribute: String, operator op: Constraint.Operator, value: String, weight: Int = 50) {
        self.attribute = attribute
        self.operator = op
        self.value = value
        self.weight = weight
    }
}

public struct Spread: Sendable, Equatable {
    public struct Target: Sendable, Equatable {
        public var value: String
        public var percent: Int
        public init(value: String, percent: Int) {
            self.value = value
            self.percent = percent
        }
    }
    public var attribute: String
    public var weight: Int = 50
    public var targets: [Target] = []
    public init(attribute: String, weight: Int = 50, targets: [Target] = []) {
        self.attribute = attribute
        self.weight = weight
        self.targets = targets
    }
}

public struct UpdateStrategy: Sendable, Equatable {
    public var maxParallel: Int = 1
    /// Instances of a new version placed beside the old ones, which keep running until the
    /// version is promoted (`caravan job promote`, or `autoPromote` once the canaries are healthy).
    public var canary: Int = 0
    public var autoPromote: Bool = false
    public var minHealthyTime: Duration = .seconds(10)
    public var healthyDeadline: Duration = .seconds(300)
    public var progressDeadline: Duration = .seconds(600)
    public var autoRevert: Bool = false
    public init() {}
}

public struct MigrateStrategy: Sendable, Equatable {
    public var maxParallel: Int = 1
    public var minHealthyTime: Duration = .seconds(10)
    public var healthyDeadline: Duration = .seconds(300)
    public init() {}
}

public struct Periodic: Sendable, Equatable {
    public var cron: String
    public var timeZone: String = "UTC"
    public var prohibitOverlap: Bool = false
    public init(cron: String, timeZone: String = "UTC", prohibitOverlap: Bool = false) {
        self.cron = cron
        self.timeZone = timeZone
        self.prohibitOverlap = prohibitOverlap
    }
}

public struct RestartPolicy: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable { case fail, delay }
    public var attempts: Int
    public var interval: Duration
    public var delay: Duration
    public var mode: Mode

    public init(attempts: Int, interval: Duration, delay: Duration, mode: Mode) {
        self.attempts = attempts
        self.interval = interval
        self.delay = delay
        self.mode = mode
    }

    /// Nomad's defaults: services 2 attempts in 30 min, batch 3 in 24 h; 15 s apart; then fail.
    public static func defaults(for kind: Job.Kind) -> RestartPolicy {
        switch kind {
        case .service, .system: RestartPolicy(attempts: 2, interval: .seconds(1800), delay: .seconds(15), mode: .fail)
        case .batch, .sysbatch: RestartPolicy(attempts: 3, interval: .seconds(86400), delay: .seconds(15), mode: .fail)
        }
    }
}

public struct ReschedulePolicy: Sendable, Equatable {
    public enum DelayFunction: String, Sendable, CaseIterable { case constant, exponential, fibonacci }
    /// Attempts within `interval`; ignored when `unlimited`.
    public var attempts: Int
    public var interval: Duration
    public var delay: Duration
    public var delayFunction: DelayFunction
    public var maxDelay: Duration
    public var unlimited: Bool

    public init(attempts: Int, interval: Duration, delay: Duration, delayFunction: DelayFunction, maxDelay: Duration, unlimited: Bool) {
        self.attempts = attempts
        self.interval = interval
        self.delay = delay
        self.delayFunction = delayFunction
        self.maxDelay = maxDelay
        self.unlimited = unlimited
    }

    /// Nomad's defaults: services forever, 30 s growing exponentially to 1 h; batch once in 24 h
    /// after 5 s. System jobs are never rescheduled (they run on every node).
    public static func defaults(for kind: Job.Kind) -> ReschedulePolicy {
        switch kind {
        case .service:
            ReschedulePolicy(attempts: 0, interval: .zero, delay: .seconds(30), delayFunction: .exponential, maxDelay: .seconds(3600), unlimited: true)
        case .batch:
            ReschedulePolicy(attempts: 1, interval: .seconds(86400), delay: .seconds(5), delayFunction: .constant, maxDelay: .seconds(5), unlimited: false)
        case .system, .sysbatch:
            ReschedulePolicy(attempts: 0, interval: .zero, delay: .zero, delayFunction: .constant, maxDelay: .zero, unlimited: false)
        }
    }
}

public struct Port: Sendable, Equatable {
    public var label: String
    /// A fixed host port; nil asks for a dynamic one.
    public var staticPort: Int?
    /// The port inside the task (containers); nil = the same as the host port.
    public var to: Int?
    public init(label: String, staticPort: Int? = nil, to: Int? = nil) {
        self.label = label
        self.staticPort = staticPort
        self.to = to
    }
}

public struct ServiceSpec: Sendable, Equatable {
    public var name: String
    public var port: String?
    public var tags: [String] = []
    public var checks: [Check] = []
    public init(name: String, port: String? = nil, tags: [String] = [], checks: [Check] = []) {
        self.name = name
        self.port = port
        self.tags = tags
        self.checks = checks
    }
}

public struct Check: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case http, tcp, script }
    public var type: Kind
    public var path: String?
    public var command: String?
    public var args: [String] = []
    public var port: String?
    public var interval: Duration = .seconds(10)
    public var timeout: Duration = .seconds(2)
    /// Restart the task after this many consecutive failures (0 = never).
    public var restartAfter: Int = 0
    public init(type: Kind, path: String? = nil, command: String? = nil, args: [String] = [], port: String? = nil,
                interval: Duration = .seconds(10), timeout: Duration = .seconds(2), restartAfter: Int = 0) {
        self.type = type
        self.path = path
        self.command = command
        self.args = args
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.restartAfter = restartAfter
    }
}

public struct Lifecycle: Sendable, Equatable {
    public enum Hook: String, Sendable, CaseIterable { case prestart, poststart, poststop }
    public var hook: Hook
    public var sidecar: Bool = false
    public init(hook: Hook, sidecar: Bool = false) {
        self.hook = hook
        self.sidecar = sidecar
    }
}

public struct LogPolicy: Sendable, Equatable {
    public var maxFiles: Int = 10
    public var maxFileSizeMiB: Int = 10
    public init() {}

    public static let maxFileSizeLimitMiB = 1024

    /// What one task's logs may keep on disk: both streams, every file (at most 200 GiB).
    public var keptMiB: Int { 2 * min(maxFiles, 100) * min(maxFileSizeMiB, Self.maxFileSizeLimitMiB) }
}
