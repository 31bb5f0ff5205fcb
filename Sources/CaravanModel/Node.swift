/// A machine in the cluster as the replicated state records it (`UpsertNode` when gossip shows
/// it new or changed).
public struct Node: Sendable, Equatable {
    public enum Status: String, Sendable, CaseIterable { case ready, down }
    public enum Eligibility: String, Sendable, CaseIterable { case eligible, ineligible }

    public var id: String
    public var address: String
    public var datacenter: String = "dc1"
    public var nodeClass: String = ""
    /// `kernel.name`, `cpu.arch`, `os.name`, `driver.raw_exec`, … (read as `${attr.X}`).
    public var attributes: [String: String] = [:]
    /// Operator tags (read as `${meta.X}`).
    public var meta: [String: String] = [:]
    public var drivers: [String] = []
    public var cpuMillicores: Int
    public var memoryMiB: Int
    public var diskMiB: Int
    public var status: Status = .ready
    public var eligibility: Eligibility = .eligible
    /// Being drained: its allocations migrate away and it takes no new ones.
    public var draining: Bool = false
    public var createIndex: UInt64 = 0
    public var modifyIndex: UInt64 = 0

    public init(id: String, address: String, cpuMillicores: Int, memoryMiB: Int, diskMiB: Int) {
        self.id = id
        self.address = address
        self.cpuMillicores = cpuMillicores
        self.memoryMiB = memoryMiB
        self.diskMiB = diskMiB
    }

    /// Whether the scheduler may place new work here.
    public var isSchedulable: Bool { status == .ready && eligibility == .eligible && !draining }
}

/// One instance of a group placed on a node.
extension Allocation {
    /// Whether `id` can name an allocation (and so its directory on a node): 1-64 letters,
    /// digits, '-', '_' or '.', and not . or .. — what leaders make is hex with dashes; ids from
    /// anywhere else (a snapshot file) are held to this.
    public static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64 && id != "." && id != ".."
            && id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
    }
}

public struct Allocation: Sendable, Equatable {
    public enum DesiredStatus: String, Sendable, CaseIterable { case run, stop, evict }
    public enum ClientStatus: String, Sendable, CaseIterable { case pending, running, complete, failed, lost }

    public var id: String
    public var namespace: String = "default"
    public var jobID: String
    public var jobVersion: Int
    public var group: String
    /// `job.group[index]`, stable across replacements.
    public var name: String
    public var nodeID: String
    public var cpuMillicores: Int
    public var memoryMiB: Int
    public var diskMiB: Int
    public var ports: [String: Int] = [:]
    public var desiredStatus: DesiredStatus = .run
    public var desiredDescription: String = ""
    public var clientStatus: ClientStatus = .pending
    public var clientDescription: String = ""
    /// The allocation this one replaces, if any.
    public var previousAllocation: String?
    public var rescheduleAttempts: Int = 0
    /// What each task is doing, as its node last reported (keyed by task name).
    public var taskStates: [String: TaskState] = [:]
    /// Service checks by `<service>.<index>.<type>`: pending, passing, warning or critical.
    public var checks: [String: String] = [:]
    public var createIndex: UInt64 = 0
    public var modifyIndex: UInt64 = 0

    public init(id: String, jobID: String, jobVersion: Int, group: String, name: String, nodeID: String,
                cpuMillicores: Int, memoryMiB: Int, diskMiB: Int) {
        self.id = id
        self.jobID = jobID
        self.jobVersion = jobVersion
        self.group = group
        self.name = name
        self.nodeID = nodeID
        self.cpuMillicores = cpuMillicores
        self.memoryMiB = memoryMiB
        self.diskMiB = diskMiB
    }

    /// Whether it still holds resources on its node.
    public var isLive: Bool {
        desiredStatus == .run && (clientStatus == .pending || clientStatus == .running)
    }
    public var isTerminal: Bool { !isLive }
    /// Its task may still be running: live, or told to stop but not yet reported stopped (a
    /// task that ignores SIGTERM runs until its kill timeout). What a namespace quota counts.
    public var holdsResources: Bool { clientStatus == .pending || clientStatus == .running }

    /// Running, with every service check passing (no checks: running is enough).
    public var isHealthy: Bool { clientStatus == .running && checks.values.allSatisfy { $0 == "passing" } }

    /// When its tasks last started and last finished (Unix ms), nil when unknown.
    public var lastStart: Int64? { taskStates.values.map(\.startedAt).max().flatMap { $0 > 0 ? $0 : nil } }
    public var lastFinish: Int64? { taskStates.values.map(\.finishedAt).max().flatMap { $0 > 0 ? $0 : nil } }
    /// Its first task event (the node received it), Unix ms; nil before its node reported.
    public var firstEvent: Int64? { taskStates.values.flatMap(\.events).map(\.time).min() }
}

/// One task of an allocation as its node reports it: Nomad's task state with its recent events.
public struct TaskState: Sendable, Equatable, Codable {
    public enum State: String, Sendable, CaseIterable, Codable { case pending, running, dead }
    public var state: State = .pending
    /// Dead because it failed (exit code ≠ 0, OOM, attempts exhausted, could not start).
    public var failed: Bool = false
    public var restarts: Int = 0
    public var exitCode: Int?
    /// Unix milliseconds; 0 = not yet.
    public var startedAt: Int64 = 0
    public var finishedAt: Int64 = 0
    /// The most recent events, oldest first (at most ``maxEvents``).
    public var events: [TaskEvent] = []

    public static let maxEvents = 12
    public init(state: State = .pending) { self.state = state }

    public mutating func record(_ event: TaskEvent) {
        events.append(event)
        if events.count > Self.maxEvents { events.removeFirst(events.count - Self.maxEvents) }
    }
}

/// Something that happened to a task: `Received`, `Image Pulled`, `Started`, `Terminated`, `Restarting`, …
public struct TaskEvent: Sendable, Equatable, Codable {
    /// Unix milliseconds.
    public var time: Int64
    public var type: String
    public var message: String
    public init(time: Int64, type: String, message: String = "") {
        self.time = time
        self.type = type
        self.message = message
    }
}

/// A reason to run the scheduler for one job.
public struct Evaluation: Sendable, Equatable {
    public enum Status: String, Sendable, CaseIterable { case pending, blocked, complete, failed, canceled }
    public enum Trigger: String, Sendable, CaseIterable {
        case jobRegister = "job-register", jobDeregister = "job-deregister", nodeUpdate = "node-update",
             nodeDrain = "node-drain", allocFailure = "alloc-failure", periodic = "periodic-job", queued = "queued-allocs",
             allocUpdate = "alloc-update", scheduled = "scheduled", reconcile = "reconcile", rollingUpdate = "rolling-update"
    }

    public var id: String
    public var namespace: String = "default"
    public var jobID: String
    public var priority: Int
    public var triggeredBy: Trigger
    public var status: Status = .pending
    public var statusDescription: String = ""
    public var nodeID: String?
    /// Why placements failed, per group (what `job status` and `job plan` explain).
    public var failedPlacements: [String: String] = [:]
    public var createIndex: UInt64 = 0
    public var modifyIndex: UInt64 = 0

    public init(id: String, jobID: String, priority: Int, triggeredBy: Trigger) {
        self.id = id
        self.jobID = jobID
        self.priority = priority
        self.triggeredBy = triggeredBy
    }
}
