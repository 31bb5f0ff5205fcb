import CaravanModel
import ClusterState
import Scheduler

/// What puts evaluations into the leader's broker: the changes it sees in the replicated state
/// between two passes.
///
/// - an evaluation the API committed (a register, a stop) is enqueued as it is;
/// - a job whose record or allocations changed gets one (`job-register`, `alloc-failure` when an
///   instance failed, `node-update` when one was lost, `alloc-update` otherwise);
/// - a node that changed (joined, died, drained, toggled eligibility) gets one for each job with
///   instances on it and for every system job (`node-update`, `node-drain`);
/// - capacity that grew on any node (a node joined, an allocation stopped), or a schedulable
///   node that changed (attributes, drivers, tags), wakes the blocked evaluations (`unblock`);
/// - a job asked to be looked at again at a time (a delayed reschedule, a rolling update
///   waiting for `minHealthyTime`) gets one then (`scheduled`);
/// - on the first pass after winning an election, and once a minute after, every job gets one
///   (`reconcile`) — whatever a lost write or a former leader left undone is redone.
public struct EvalFeed: Sendable {
    public struct JobMark: Equatable, Sendable {
        var job: UInt64
        var allocations: UInt64
        var count: Int
    }

    public struct Output: Sendable {
        public var evaluations: [Evaluation] = []
        /// Capacity grew: blocked evaluations should be retried.
        public var unblock = false
    }

    public init() {}

    var jobs: [ClusterState.JobKey: JobMark] = [:]
    var nodes: [String: UInt64] = [:]
    /// Free CPU, memory and disk per schedulable node.
    var free: [String: [Int]] = [:]
    /// Committed pending evaluations already enqueued.
    var fed: Set<String> = []
    /// Jobs to look at again at a time (Unix ms).
    public var wakeAt: [ClusterState.JobKey: Int64] = [:]
    var lastSweep: Int64?
    public var sweepEvery: Int64 = 60_000
    /// The namespaces table as last seen: a quota raised may let blocked evaluations place.
    var namespacesMark: UInt64 = 0
    /// Allocations whose tasks may still run, as last counted: fewer frees quota.
    var holding = 0

    /// Takes `state` as already looked at: the next call reports only what changed since (and
    /// the evaluations the API committed, which are work still to do). What-if starts here, so
    /// only what a supposed change touches is scheduled again.
    public mutating func prime(_ state: ClusterState, now: Int64) {
        _ = changes(in: state, now: now, newID: { "" })
        fed = []
    }

    public mutating func changes(in state: ClusterState, now: Int64, newID: () -> String) -> Output {
        var out = Output()
        var queued: Set<ClusterState.JobKey> = []
        func add(_ key: ClusterState.JobKey, _ trigger: Evaluation.Trigger, node: String? = nil) {
            guard queued.insert(key).inserted else { return }
            var e = Evaluation(id: newID(), jobID: key.id, priority: state.jobs[key]?.job.priority ?? 50, triggeredBy: trigger)
            e.namespace = key.namespace
            e.nodeID = node
            out.evaluations.append(e)
        }

        // Evaluations the API committed.
        let pending = state.evaluations.values.filter { $0.status == .pending }.sorted { ($0.createIndex, $0.id) < ($1.createIndex, $1.id) }
        for e in pending where !fed.contains(e.id) {
            out.evaluations.append(e)
            queued.insert(.init(e.namespace, e.jobID))
        }
        fed = Set(pending.map(\.id))

        // Jobs and their allocations, from the marks the state keeps per job (not every allocation).
        var marks: [ClusterState.JobKey: JobMark] = [:]
        var failedSince: Set<ClusterState.JobKey> = [], lostSince: Set<ClusterState.JobKey> = []
        for (key, rec) in state.jobs { marks[key] = JobMark(job: rec.modifyIndex, allocations: 0, count: 0) }
        for (key, m) in state.allocationMarks {
            guard state.jobs[key] != nil else {
                // Purged: only its live allocations count (the finished ones go with it).
                let live = state.allocations(ofJob: key).filter(\.isLive)
                if let newest = live.map(\.modifyIndex).max() { marks[key] = JobMark(job: 0, allocations: newest, count: live.count) }
                continue
            }
            marks[key]!.allocations = m.latest
            marks[key]!.count = m.count
            let before = jobs[key]?.allocations ?? 0
            if m.latestFailed > before { failedSince.insert(key) }
            if m.latestLost > before { lostSince.insert(key) }
        }
        let sweep = lastSweep.map { now - $0 >= sweepEvery } ?? true
        if sweep { lastSweep = now }
        let changed = sweep ? Array(marks.keys) : marks.compactMap { key, m in jobs[key] == m ? nil : key }
        for key in changed.sorted() {
            if sweep { add(key, .reconcile); continue }
            let trigger: Evaluation.Trigger = jobs[key]?.job != marks[key]!.job ? .jobRegister
                : failedSince.contains(key) ? .allocFailure : lostSince.contains(key) ? .nodeUpdate : .allocUpdate
            add(key, trigger)
        }
        jobs = marks

        // Nodes.
        let system = state.jobs.filter { $0.value.job.type == .system || $0.value.job.type == .sysbatch }.map(\.key).sorted()
        var nodeMarks: [String: UInt64] = [:]
        var nowFree: [String: [Int]] = [:]
        for (id, n) in state.nodes {
            nodeMarks[id] = n.modifyIndex
            if n.isSchedulable {
                let u = state.used(onNode: id)
                nowFree[id] = [n.cpuMillicores - u.cpuMillicores, n.memoryMiB - u.memoryMiB, n.diskMiB - u.diskMiB]
            }
        }
        var schedulableChanged = false
        for id in Set(nodeMarks.keys).union(nodes.keys).sorted() where nodeMarks[id] != nodes[id] {
            let trigger: Evaluation.Trigger = state.nodes[id]?.draining == true ? .nodeDrain : .nodeUpdate
            let here = Set(state.allocations(onNode: id).map { ClusterState.JobKey($0.namespace, $0.jobID) })
                .filter { key in state.jobs[key] != nil || state.allocations(ofJob: key).contains(where: \.isLive) }
            for key in here.sorted() { add(key, trigger, node: id) }
            for key in system { add(key, trigger, node: id) }
            // A schedulable node that changed (new attributes, drivers, tags) may now satisfy
            // what a blocked job asks for.
            if nowFree[id] != nil { schedulableChanged = true }
        }
        nodes = nodeMarks
        out.unblock = schedulableChanged || nowFree.contains { id, f in
            guard let before = free[id] else { return true }
            return zip(f, before).contains { $0 > $1 }
        }
        free = nowFree
        let ns = state.tableIndex[.namespaces] ?? 0
        if ns != namespacesMark { out.unblock = true; namespacesMark = ns }
        if !state.namespaces.isEmpty {
            let nowHolding = state.use.namespaces.values.reduce(0) { $0 + $1.instances }
            if nowHolding < holding { out.unblock = true }
            holding = nowHolding
        }

        // Jobs whose time has come.
        for (key, at) in wakeAt.sorted(by: { $0.key < $1.key }) where at <= now {
            wakeAt[key] = nil
            add(key, .scheduled)
        }
        return out
    }
}
