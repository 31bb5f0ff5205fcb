/// `POST /v1/jobs` answer.
public struct JobRegisterView: Codable, Sendable, Equatable {
    public var id: String
    public var namespace: String
    /// The Raft index the registration was committed at.
    public var index: UInt64
    /// The job's version and modify index after it: a registration of an unchanged job makes no
    /// new version and leaves the modify index where it was.
    public var version: Int?
    public var jobModifyIndex: UInt64?
    /// The evaluation the change created (`caravan job run --detach` prints it).
    public var evaluationID: String?
    public init(id: String, namespace: String, index: UInt64, version: Int? = nil, jobModifyIndex: UInt64? = nil,
                evaluationID: String? = nil) {
        self.id = id
        self.namespace = namespace
        self.index = index
        self.version = version
        self.jobModifyIndex = jobModifyIndex
        self.evaluationID = evaluationID
    }
}

/// One evaluation: why the scheduler looked at a job, and what came of it.
public struct EvaluationView: Codable, Sendable, Equatable {
    public var id: String
    public var namespace: String
    public var jobID: String
    public var priority: Int
    /// job-register, job-deregister, node-update, node-drain, alloc-failure, alloc-update, scheduled, reconcile, rolling-update, periodic-job, queued-allocs.
    public var triggeredBy: String
    /// pending, blocked (some instances could not be placed), complete, failed, canceled.
    public var status: String
    public var statusDescription: String
    public var nodeID: String?
    /// Why placements failed, per group.
    public var failedPlacements: [String: String]
    public var createIndex: UInt64
    public var modifyIndex: UInt64
    public init(id: String, namespace: String, jobID: String, priority: Int, triggeredBy: String, status: String,
                statusDescription: String, nodeID: String?, failedPlacements: [String: String], createIndex: UInt64, modifyIndex: UInt64) {
        self.id = id
        self.namespace = namespace
        self.jobID = jobID
        self.priority = priority
        self.triggeredBy = triggeredBy
        self.status = status
        self.statusDescription = statusDescription
        self.nodeID = nodeID
        self.failedPlacements = failedPlacements
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }
}

/// One group's instances by state, for `job status` and `job run`'s progress view.
public struct GroupSummaryView: Codable, Sendable, Equatable {
    public var name: String
    public var desired: Int
    public var placed: Int
    public var pending: Int
    public var running: Int
    public var complete: Int
    public var failed: Int
    public var lost: Int
    /// Running with every service check passing.
    public var healthy: Int = 0
    /// Instances of the new version running beside the old ones until the version is promoted
    /// (0 when the group does not wait for a promotion); `canariesHealthy` of them healthy.
    public var canaries: Int = 0
    public var canariesHealthy: Int = 0
    /// How many canaries the group waits with (`update.canary`, at most `count`).
    public var canariesDesired: Int = 0
    public init(name: String, desired: Int, placed: Int, pending: Int, running: Int, complete: Int, failed: Int, lost: Int) {
        self.name = name
        self.desired = desired
        self.placed = placed
        self.pending = pending
        self.running = running
        self.complete = complete
        self.failed = failed
        self.lost = lost
    }
}

public struct AllocationView: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var node: String
    public var group: String
    public var jobVersion: Int
    public var desiredStatus: String
    public var desiredDescription: String
    public var clientStatus: String
    public var clientDescription: String
    public var cpuMillicores: Int
    public var memoryMiB: Int
    public var ports: [String: Int]
    public var previousAllocation: String?
    public var createIndex: UInt64
    public var modifyIndex: UInt64
    public var namespace: String = "default"
    public var jobID: String = ""
    public var diskMiB: Int = 0
    /// Per task: state, restarts, exit code and recent events.
    public var taskStates: [String: TaskStateView] = [:]
    /// Service checks by `<service>.<index>.<type>`: pending, passing, warning or critical.
    public var checks: [String: String] = [:]
    /// A failed instance the leader will replace: when (Unix ms), by the group's reschedule policy.
    public var rescheduleAt: Int64?
    public init(id: String, name: String, node: String, group: String, jobVersion: Int, desiredStatus: String, desiredDescription: String,
                clientStatus: String, clientDescription: String, cpuMillicores: Int, memoryMiB: Int, ports: [String: Int],
                previousAllocation: String?, createIndex: UInt64, modifyIndex: UInt64) {
        self.id = id
        self.name = name
        self.node = node
        self.group = group
        self.jobVersion = jobVersion
        self.desiredStatus = desiredStatus
        self.desiredDescription = desiredDescription
        self.clientStatus = clientStatus
        self.clientDescription = clientDescription
        self.cpuMillicores = cpuMillicores
        self.memoryMiB = memoryMiB
        self.ports = ports
        self.previousAllocation = previousAllocation
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }
}

/// `POST /v1/client/allocation/{id}/exec/{task}`: a command run inside a task.
public struct ExecRequest: Codable, Sendable, Equatable {
    public var command: [String]
    /// Seconds before the command is killed (default 30, at most 300).
    public var timeout: Double?
    public init(command: [String], timeout: Double? = nil) {
        self.command = command
        self.timeout = timeout
    }
}

public struct ExecResultView: Codable, Sendable, Equatable {
    public var exitCode: Int
    /// stdout and stderr together, at most 64 KiB.
    public var output: String
    public init(exitCode: Int, output: String) {
        self.exitCode = exitCode
        self.output = output
    }
}

/// One task of an allocation (`alloc status`).
public struct TaskStateView: Codable, Sendable, Equatable {
    /// pending, running or dead.
    public var state: String
    public var failed: Bool
    public var restarts: Int
    public var exitCode: Int?
    /// Unix milliseconds (0 = not yet).
    public var startedAt: Int64
    public var finishedAt: Int64
    public var events: [TaskEventView]
    public init(state: String, failed: Bool, restarts: Int, exitCode: Int?, startedAt: Int64, finishedAt: Int64, events: [TaskEventView]) {
        self.state = state
        self.failed = failed
        self.restarts = restarts
        self.exitCode = exitCode
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.events = events
    }
}

public struct TaskEventView: Codable, Sendable, Equatable {
    public var time: Int64
    public var type: String
    public var message: String
    public init(time: Int64, type: String, message: String) {
        self.time = time
        self.type = type
        self.message = message
    }
}

/// An allocation a node must run, with the job version it belongs to (what agents watch).
public struct AssignmentView: Codable, Sendable, Equatable {
    public var allocation: AllocationView
    /// The job at the allocation's version, as canonical job-file JSON.
    public var job: String
    public init(allocation: AllocationView, job: String) {
        self.allocation = allocation
        self.job = job
    }
}

/// `GET /v1/job/{id}` and `caravan job status ID --json`.
public struct JobStatusView: Codable, Sendable, Equatable {
    public var id: String
    public var namespace: String
    public var type: String
    public var priority: Int
    /// pending (nothing placed yet), running, dead (stopped, or a batch job that finished).
    public var status: String
    public var version: Int
    public var stopped: Bool
    public var groups: [GroupSummaryView]
    public var allocations: [AllocationView]
    /// Why instances could not be placed, from the latest evaluation.
    public var placementFailures: [String]
    public var modifyIndex: UInt64
    /// The current version has canaries and waits to be promoted (`caravan job promote`).
    public var awaitingPromotion: Bool = false
    /// Why the job's newest evaluation failed (a stalled rollout, an evaluation given up), if it did.
    public var failedEvaluation: String?
    public init(id: String, namespace: String, type: String, priority: Int, status: String, version: Int, stopped: Bool,
                groups: [GroupSummaryView], allocations: [AllocationView], placementFailures: [String], modifyIndex: UInt64, awaitingPromotion: Bool = false) {
        self.id = id
        self.namespace = namespace
        self.type = type
        self.priority = priority
        self.status = status
        self.version = version
        self.stopped = stopped
        self.groups = groups
        self.allocations = allocations
        self.placementFailures = placementFailures
        self.awaitingPromotion = awaitingPromotion
        self.modifyIndex = modifyIndex
    }
}

/// `GET /v1/nodes` entries (`caravan node status`).
public struct NodeView: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var address: String
    public var datacenter: String
    public var status: String
    public var eligibility: String
    public var draining: Bool
    public var drivers: [String]
    public var capacity: ResourcesView
    public var allocated: ResourcesView
    public var allocations: Int
    public init(id: String, name: String, address: String, datacenter: String, status: String, eligibility: String, draining: Bool,
                drivers: [String], capacity: ResourcesView, allocated: ResourcesView, allocations: Int) {
        self.id = id
        self.name = name
        self.address = address
        self.datacenter = datacenter
        self.status = status
        self.eligibility = eligibility
        self.draining = draining
        self.drivers = drivers
        self.capacity = capacity
        self.allocated = allocated
        self.allocations = allocations
    }
}

/// `POST /v1/jobs/plan`: what registering the job would do now, nothing committed.
public struct JobPlanView: Codable, Sendable, Equatable {
    public struct Change: Codable, Sendable, Equatable {
        public var name: String
        public var node: String
        public var reason: String
        public init(name: String, node: String, reason: String) {
            self.name = name
            self.node = node
            self.reason = reason
        }
    }
    public var id: String
    /// The version the job would get (the current one when nothing changed).
    public var version: Int
    public var placements: [Change]
    public var stops: [Change]
    /// Instances updated in place (nothing they run changed).
    public var inPlace: [Change]
    public var failures: [String]
    public init(id: String, version: Int, placements: [Change], stops: [Change], inPlace: [Change], failures: [String]) {
        self.id = id
        self.version = version
        self.placements = placements
        self.stops = stops
        self.inPlace = inPlace
        self.failures = failures
    }
}

/// One registered version of a job (`GET /v1/job/{id}/versions`, `caravan job history`).
public struct JobVersionView: Codable, Sendable, Equatable {
    public var version: Int
    public var stopped: Bool
    public var modifyIndex: UInt64
    /// The job as registered, in canonical JSON.
    public var job: String
    /// Every instance of this version has been healthy (what `update.autoRevert` goes back to).
    public var stable: Bool = false
    public init(version: Int, stopped: Bool, modifyIndex: UInt64, job: String, stable: Bool = false) {
        self.version = version
        self.stopped = stopped
        self.modifyIndex = modifyIndex
        self.job = job
        self.stable = stable
    }
}

/// `GET /v1/node/{id}`: the node's summary, its attributes and tags (what constraints read),
/// and every allocation it holds or held (live ones first).
public struct NodeDetailView: Codable, Sendable, Equatable {
    public var node: NodeView
    public var attributes: [String: String]
    public var meta: [String: String]
    public var allocations: [AllocationView]
    public init(node: NodeView, attributes: [String: String], meta: [String: String], allocations: [AllocationView]) {
        self.node = node
        self.attributes = attributes
        self.meta = meta
        self.allocations = allocations
    }
}

/// `GET|PUT /v1/operator/scheduler/configuration`: how the leader ranks nodes, cluster-wide.
public struct SchedulerConfigView: Codable, Sendable, Equatable {
    /// `binpack` (fill the fullest node that fits) or `spread` (prefer the emptiest).
    public var algorithm: String
    /// The Raft index of the last change (0: never changed, the default).
    public var modifyIndex: UInt64
    public init(algorithm: String, modifyIndex: UInt64) {
        self.algorithm = algorithm
        self.modifyIndex = modifyIndex
    }
}

/// The body of `PUT /v1/operator/scheduler/configuration`.
public struct SchedulerConfigRequest: Codable, Sendable, Equatable {
    public var algorithm: String
    public init(algorithm: String) { self.algorithm = algorithm }
}

/// Rows as aligned columns, the way the CLI prints tables.
public enum TextTable {
    public static func render(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        var widths = Array(repeating: 0, count: header.count)
        for r in all { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        var out = ""
        for r in all {
            let line = r.enumerated().map { i, c in i == r.count - 1 ? c : c + String(repeating: " ", count: widths[i] + 2 - c.count) }
            out += line.joined() + "\n"
        }
        return out
    }
}

extension JobPlanView {
    /// What `caravan job plan` prints: the counts, each change with its node and reason, and
    /// why anything could not be placed.
    public var text: String {
        var out = "Job \"\(id)\" (version \(version)): \(placements.count) to place, \(stops.count) to stop, \(inPlace.count) to update in place\n"
        if !placements.isEmpty { out += TextTable.render(["PLACE", "NODE", "WHY"], placements.map { [$0.name, $0.node, $0.reason] }) }
        if !stops.isEmpty { out += TextTable.render(["STOP", "NODE", "WHY"], stops.map { [$0.name, $0.node, $0.reason] }) }
        if !inPlace.isEmpty { out += TextTable.render(["IN PLACE", "NODE", "WHY"], inPlace.map { [$0.name, $0.node, $0.reason] }) }
        for f in failures { out += "! " + f + "\n" }
        return out
    }
}

/// `POST /v1/operator/what-if`: what to suppose (every part optional, combinable).
public struct WhatIfRequest: Codable, Sendable, Equatable {
    public var killNodes: [String]?
    /// `meta.KEY=VALUE` or `attr.KEY=VALUE`.
    public var killNodesWhere: [String]?
    public var drainNodes: [String]?
    public var addNodes: Int?
    public var addNodesLike: String?
    /// A job file (YAML or JSON): what placing it would displace, and whether it fits.
    public var job: String?

    public init(killNodes: [String]? = nil, killNodesWhere: [String]? = nil, drainNodes: [String]? = nil, addNodes: Int? = nil,
                addNodesLike: String? = nil, job: String? = nil) {
        self.killNodes = killNodes
        self.killNodesWhere = killNodesWhere
        self.drainNodes = drainNodes
        self.addNodes = addNodes
        self.addNodesLike = addNodesLike
        self.job = job
    }
}

/// What the leader's core would do after the supposed change, against what it would do anyway.
public struct WhatIfView: Codable, Sendable, Equatable {
    public struct Instance: Codable, Sendable, Equatable {
        public var namespace: String
        public var job: String
        public var name: String
        public var from: String?
        public var to: String?
        public init(namespace: String, job: String, name: String, from: String?, to: String?) {
            self.namespace = namespace
            self.job = job
            self.name = name
            self.from = from
            self.to = to
        }
    }
    public struct Failure: Codable, Sendable, Equatable {
        public var namespace: String
        public var job: String
        public var group: String
        public var reason: String
        public init(namespace: String, job: String, group: String, reason: String) {
            self.namespace = namespace
            self.job = job
            self.group = group
            self.reason = reason
        }
    }
    public var killed: [String]
    public var drained: [String]
    public var added: [String]
    public var moved: [Instance]
    public var placed: [Instance]
    public var stopped: [Instance]
    public var unplaced: [Failure]
    /// The Raft index of the state it started from.
    public var index: UInt64

    public init(killed: [String], drained: [String], added: [String], moved: [Instance], placed: [Instance], stopped: [Instance],
                unplaced: [Failure], index: UInt64) {
        self.killed = killed
        self.drained = drained
        self.added = added
        self.moved = moved
        self.placed = placed
        self.stopped = stopped
        self.unplaced = unplaced
        self.index = index
    }
}

/// `PUT /v1/operator/snapshot`: a snapshot file restored into this cluster.
public struct SnapshotRestoreView: Codable, Sendable, Equatable {
    /// The Raft index the restore was committed at.
    public var index: UInt64
    public var jobs: Int
    public var allocations: Int
    public var variables: Int
    /// Nodes of the file that are members here, and those that are not (marked down: their
    /// allocations are placed again on this cluster's nodes).
    public var nodesKept: [String]
    public var nodesDown: [String]

    public init(index: UInt64, jobs: Int, allocations: Int, variables: Int, nodesKept: [String], nodesDown: [String]) {
        self.index = index
        self.jobs = jobs
        self.allocations = allocations
        self.variables = variables
        self.nodesKept = nodesKept
        self.nodesDown = nodesDown
    }
}
