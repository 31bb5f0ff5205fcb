import Access
import API
import CaravanModel
import ClusterState
import HashTreeCollections
import Executor
import FoundationEssentials
import LeaderCore
import Primitives
import Raft
import RaftNIO
import Scheduler
import Synchronization

/// Everything the Raft log carries, in one state machine: the cluster state (command bytes
/// 0x01…0x3F) and the variable store (0x41…0x7F). Queries are answered from the local copy;
/// cluster queries are JSON in, JSON out (the API's views), so they can be forwarded to the
/// leader by agents that keep no copy.
public final class ClusterStore: ReplicatedStateMachine {
    let variables = VariableStore()
    private let state = Mutex(ClusterState())
    private let sessions = Mutex(ClientSessions())
    private let access = Mutex(ACLState())

    /// The ACL state of this agent's copy.
    var acl: ACLState { access.withLock { $0 } }
    /// How many times the whole state was replaced (a Raft snapshot installed, a snapshot file
    /// restored): what the leader derived from the old state (its queues, a pass in progress)
    /// is dropped when it changes.
    var restores: Int { restoreCount.load(ordering: .acquiring) }
    private let restoreCount = Atomic<Int>(0)

    public init() {}

    /// A copy of the current state (cheap: copy-on-write).
    public var current: ClusterState { state.withLock { $0 } }

    /// The index of the last change to any table of the cluster state — not to variables, ACLs
    /// or client sessions. Cheap enough to read on the Raft thread after every apply.
    var clusterChangeIndex: LogIndex { state.withLock { $0.index(of: ClusterState.Table.allCases) } }

    public func apply(_ command: [UInt8], index: LogIndex) -> [UInt8] {
        guard let first = command.first else { return [1] }
        if first == ClientSessions.tag {
            guard let (client, seq, stamp, inner) = ClientSessions.unwrap(command) else {
                return ClientSessions.refusalAnswer("invalid_header", "malformed tagged write")
            }
            let outcome = sessions.withLock { s in
                s.advance(to: stamp)
                return s.outcome(client: client, seq: seq)
            }
            switch outcome {
            case .duplicate(let answer): return answer
            case .refused(let code, let message): return ClientSessions.refusalAnswer(code, message)
            case .new:
                let answer = apply(inner, index: index)
                sessions.withLock { $0.record(client: client, seq: seq, answer: answer) }
                return answer
            }
        }
        if first == Self.restoreCommand { return applyRestore(command, index: index) }
        if VariableStore.owns(first) { return variables.apply(command, index: index) }
        if first == ACLCommand.tag {
            guard let c = ACLCommand.decode(command) else { return [1] + Array("malformed ACL command".utf8) }
            switch access.withLock({ $0.apply(c, index: index) }) {
            case .applied:
                var w = ByteWriter()
                w.byte(0)
                w.varint(index)
                return w.bytes
            case .rejected(let code, let message): return ClientSessions.refusalAnswer(code, message)
            }
        }
        let outcome = state.withLock { $0.apply(command, index: index) }
        switch outcome {
        case .applied, .ignoredAsUnknown:
            var w = ByteWriter()
            w.byte(0)
            w.varint(index)
            return w.bytes
        case .rejected(let why): return [1] + Array(why.utf8)
        }
    }

    static let clusterQuery: UInt8 = 0x01

    /// A query for the whole replicated state as a snapshot file (`caravan operator snapshot save`).
    static let snapshotQuery: UInt8 = 0x02

    /// What a snapshot file starts with, before the store's own snapshot.
    static let snapshotMagic = Array("CARAVAN-SNAPSHOT 1\n".utf8)

    /// What a file that does not start with ``snapshotMagic`` is told.
    static let notASnapshotFile = "not a Caravan snapshot file (from `caravan operator snapshot save`)"

    /// The replicated state read back from a snapshot file; the error names what is wrong.
    public static func state(fromSnapshotFile bytes: [UInt8]) throws -> ClusterState {
        guard bytes.starts(with: snapshotMagic) else { throw ClusterState.RestoreError(description: notASnapshotFile) }
        return try parts(Array(bytes.dropFirst(snapshotMagic.count))).state
    }

    // MARK: - Restoring a snapshot file

    /// A snapshot file restored into this cluster (`caravan operator snapshot restore`): the
    /// last byte of the cluster state's command space, which it does not use.
    static let restoreCommand: UInt8 = 0x3F

    /// The largest snapshot file `PUT /v1/operator/snapshot` takes (the restore is one log entry).
    static let maxRestoreBytes = RaftNode.maxCommandBytes

    /// The restore command: the names of this cluster's members when it was proposed, then the
    /// store's snapshot of `parts` (its sessions left out: this cluster's stay).
    static func restore(_ parts: Parts, members: Set<String>) -> [UInt8] {
        let snapshot = encode(state: parts.state.snapshot(), variables: VariableStore.encodeSnapshot(parts.variables),
                              sessions: ClientSessions().encode(), acl: parts.acl.encode())
        var w = ByteWriter(capacity: snapshot.count + 64 * members.count + 16)
        w.byte(restoreCommand)
        w.varint(UInt64(members.count))
        for m in members.sorted() { w.string(m) }
        w.raw(snapshot)
        return w.bytes
    }

    /// Replaces the jobs, allocations, nodes, evaluations, namespaces, scheduler configuration,
    /// variables and ACL state with the file's, at `index`; this cluster's client sessions and
    /// variables' data key stay. Nodes the file names that are not members here are marked down.
    private func applyRestore(_ command: [UInt8], index: LogIndex) -> [UInt8] {
        var r = ByteReader(command)
        _ = r.byte()
        var members = Set<String>()
        guard let n = r.count(max: 100_000) else { return [1] + Array("malformed restore command".utf8) }
        for _ in 0..<n {
            guard let m = r.string() else { return [1] + Array("malformed restore command".utf8) }
            members.insert(m)
        }
        let parts: Parts
        do { parts = try Self.parts(Array(r.raw(r.remaining) ?? [])) } catch { return [1] + Array("\(error)".utf8) }
        // Decided here, in log order, so no bootstrap can slip in between a check and the restore.
        if acl.bootstrapped && !parts.acl.bootstrapped { return ClientSessions.refusalAnswer("acl_not_in_snapshot", Self.aclRefusal) }
        var cs = parts.state
        let rebase = ClusterState.Rebasing(cs.objectIndexes + parts.variables.items.flatMap { [$0.1.createIndex, $0.1.modifyIndex] }, to: index)
        cs.adopt(at: index, members: members, rebase: rebase)
        state.withLock { $0 = cs }
        // The variables come sealed under this cluster's data key (the route sealed them
        // again), which stays.
        let items = parts.variables.items.map { p, i in
            (p, VariableStore.Item(value: i.value, createIndex: rebase(i.createIndex), modifyIndex: rebase(i.modifyIndex)))
        }
        variables.replace(with: (items, variables.sealedDataKey))
        access.withLock { $0 = parts.acl }
        restoreCount.add(1, ordering: .releasing)
        var w = ByteWriter()
        w.byte(0)
        w.varint(index)
        return w.bytes
    }

    static let aclRefusal = "this cluster has ACLs and the snapshot has none: restoring it would turn access control off; bootstrap ACLs where the snapshot came from and save it again"

    /// Why the file's contents may not be restored (checked where the restore is asked for, like
    /// anything a caller sends): every job must read back as a valid job file says it (what the
    /// API would have accepted), every allocation id must be one that can name a directory.
    static func refusal(_ parts: Parts) -> String? {
        let s = parts.state
        for (key, rec) in s.jobs.sorted(by: { $0.key < $1.key }) {
            for r in [rec] + (s.versions[key] ?? []) {
                do throws(JobFileError) {
                    guard try JobFile.parse(JobFile.render(r.job), file: "job \(key.namespace)/\(key.id)") == r.job else {
                        return "job \(key.namespace)/\(key.id) (version \(r.version)) does not read back as the same job"
                    }
                } catch {
                    return "job \(key.namespace)/\(key.id) (version \(r.version)) is not a valid job: " + error.problems.prefix(3).map(\.description).joined(separator: "; ")
                }
                guard r.job.id == key.id && r.job.namespace == key.namespace else { return "job \(key.namespace)/\(key.id) is filed under another name" }
            }
        }
        if let bad = s.allocations.keys.first(where: { !Allocation.isValidID($0) }) {
            return "allocation id \"\(bad.prefix(80))\" is not one an allocation can have"
        }
        if let bad = s.allocations.first(where: { $0.key != $0.value.id }) { return "allocation \(bad.key.prefix(80)) is filed under another id" }
        return nil
    }

    /// A store snapshot, read into its parts; the error names the part that is damaged.
    struct Parts {
        var state: ClusterState
        var variables: VariableStore.Snapshot
        var sessions: ClientSessions
        var acl: ACLState
    }

    static func parts(_ snapshot: [UInt8]) throws -> Parts {
        var r = ByteReader(snapshot)
        guard let cs = r.blob(max: Int(Int32.max)), let vs = r.blob(max: Int(Int32.max)) else {
            throw ClusterState.RestoreError(description: "the snapshot is cut short or damaged: its cluster state and variables do not read")
        }
        // Snapshots from before exactly-once writes end here; later ones carry the sessions.
        var restoredSessions = ClientSessions()
        if !r.atEnd {
            guard let ss = r.blob(max: Int(Int32.max)), let decoded = ClientSessions.decode(ss) else {
                throw ClusterState.RestoreError(description: "the client sessions in the snapshot are damaged")
            }
            restoredSessions = decoded
        }
        // ... and from ACLs on, the ACL state.
        var restoredACL = ACLState()
        if !r.atEnd {
            guard let a = r.blob(max: Int(Int32.max)), r.atEnd, let decoded = ACLState.decode(a) else {
                throw ClusterState.RestoreError(description: "the ACL state in the snapshot is damaged")
            }
            restoredACL = decoded
        }
        guard let variables = VariableStore.decodeSnapshot(vs) else {
            throw ClusterState.RestoreError(description: "the variables in the snapshot are damaged")
        }
        return Parts(state: try ClusterState.restore(cs), variables: variables, sessions: restoredSessions, acl: restoredACL)
    }

    public func query(_ request: [UInt8]) throws -> [UInt8] { try prepareQuery(request).build() }

    /// On the Raft loop, what the answer reads is taken at one index (the cluster state and, for
    /// a snapshot, every part of the store — a copy of persistent values); the answer is built
    /// in the closure, on a worker thread, so a large one does not hold up the loop.
    public func prepareQuery(_ request: [UInt8]) throws -> PreparedRead {
        guard let first = request.first else { throw RaftError(.rejected, "empty query") }
        if first == Self.snapshotQuery, request.count == 1 {
            let encode = captureSnapshot()
            return PreparedRead(bulk: true) {
                // One answer between agents carries at most one log entry's worth (and a restore
                // takes no more): a larger state is refused with the reason, never retried over and over.
                let bytes = Self.snapshotMagic + encode()
                guard bytes.count <= Self.maxRestoreBytes else {
                    throw RaftError(.rejected, "the replicated state is \(bytes.count) bytes, over the \(Self.maxRestoreBytes)-byte limit of a snapshot file; back up a voter's data dir instead (Docs/operations.md, Backups)")
                }
                return bytes
            }
        }
        if first == Self.clusterQuery {
            let q = try JSONDecoder().decode(ClusterQuery.self, from: Data(request.dropFirst()))
            let s = current
            // Lists and plans may be large; one object's view and a node's own allocations
            // (what every agent's executor waits on) are not.
            return PreparedRead(bulk: q.kind.isBulk) {
                // The answer leads with the index of the last change to what it shows (at least 1,
                // so `?index=0` never blocks).
                var w = ByteWriter()
                w.varint(max(1, q.kind.tables.isEmpty ? s.lastIndex : s.index(of: q.kind.tables)))
                w.raw(try ClusterViews.answer(q, s))
                return w.bytes
            }
        }
        if first == ACLCommand.tag {
            guard let q = ACLQuery.decode(request) else { throw RaftError(.rejected, "malformed ACL query") }
            let acl = self.acl
            return PreparedRead { q.answer(acl) }
        }
        return try variables.prepareQuery(request)
    }

    /// A cluster query's answer leads with the index of the last change to its tables: a blocking
    /// read of it wakes when that index moves (a variable write does not wake a job watcher).
    public func changeIndex(of request: [UInt8]) -> (@Sendable () -> LogIndex)? {
        guard request.first == Self.clusterQuery,
              let q = try? JSONDecoder().decode(ClusterQuery.self, from: Data(request.dropFirst())), !q.kind.tables.isEmpty else { return nil }
        let tables = q.kind.tables
        return { [self] in max(1, self.state.withLock { $0.index(of: tables) }) }
    }

    public func snapshot() -> [UInt8] { captureSnapshot()() }

    /// The cluster state is persistent (a copy shares its tries), so capturing it costs the loop
    /// next to nothing; encoding a million allocations happens in the closure, off the loop.
    public func captureSnapshot() -> @Sendable () -> [UInt8] {
        let cluster = state.withLock { $0 }
        let vars = variables.captureSnapshot()
        let (sessionBytes, aclBytes) = (sessions.withLock { $0.encode() }, acl.encode())
        return { Self.encode(state: cluster.snapshot(), variables: vars(), sessions: sessionBytes, acl: aclBytes) }
    }

    static func encode(state: [UInt8], variables: [UInt8], sessions: [UInt8], acl: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        w.blob(state)
        w.blob(variables)
        w.blob(sessions)
        w.blob(acl)
        return w.bytes
    }

    public func restore(_ snapshot: [UInt8]) throws {
        let p = try Self.parts(snapshot)
        state.withLock { $0 = p.state }
        variables.replace(with: p.variables)
        sessions.withLock { $0 = p.sessions }
        access.withLock { $0 = p.acl }
        restoreCount.add(1, ordering: .releasing)
    }
}

/// A read of the cluster state, as it travels to the leader.
struct ClusterQuery: Codable, Sendable {
    enum Kind: String, Codable {
        case jobs, job, nodes, node, allocations, plan, versions, allocation, nodeAllocations, evaluations, jobEvaluations, schedulerConfig,
             evaluation, namespaces, namespace

        /// Answers that grow with the cluster (every job, node, allocation or evaluation; a plan).
        var isBulk: Bool {
            switch self {
            case .jobs, .nodes, .allocations, .evaluations, .plan, .namespaces: true
            default: false
            }
        }

        /// The tables an answer is made from: its index is the latest change to any of them.
        var tables: [ClusterState.Table] {
            switch self {
            case .jobs, .job, .versions: [.jobs, .allocations, .evaluations]
            case .nodes, .node: [.nodes, .allocations]
            case .allocations: [.allocations]
            // One allocation's view names its replacement and when it is placed again, from its job.
            case .allocation: [.allocations, .jobs]
            case .nodeAllocations: [.allocations, .jobs]
            case .evaluations, .jobEvaluations, .evaluation: [.evaluations]
            case .schedulerConfig: [.config]
            case .namespaces, .namespace: [.namespaces, .jobs, .allocations]
            case .plan: []
            }
        }
    }
    var kind: Kind
    var namespace: String = "default"
    var id: String = ""
    /// For `plan`: the job's canonical text.
    var text: String = ""

    func encode() -> [UInt8] { [ClusterStore.clusterQuery] + Array((try? JSONEncoder().encode(self)) ?? Data()) }
}

/// Turns the cluster state into the API's views.
enum ClusterViews {
    static func answer(_ q: ClusterQuery, _ s: ClusterState) throws -> Data {
        let enc = JSONEncoder()
        switch q.kind {
        case .jobs:
            return try enc.encode(s.jobs.keys.sorted().map { jobStatus($0, s, withAllocations: false) })
        case .job:
            let key = ClusterState.JobKey(q.namespace, q.id)
            guard s.jobs[key] != nil else { return Data("null".utf8) }
            return try enc.encode(jobStatus(key, s, withAllocations: true))
        case .nodes:
            return try enc.encode(s.nodes.keys.sorted().map { node(s.nodes[$0]!, s) })
        case .node:
            guard let n = s.nodes[q.id] else { return Data("null".utf8) }
            return try enc.encode(NodeDetailView(node: node(n, s), attributes: n.attributes, meta: n.meta,
                                                 allocations: s.allocations(onNode: n.id)
                                                     .sorted { ($0.isLive ? 0 : 1, $0.name) < ($1.isLive ? 0 : 1, $1.name) }.map(allocation)))
        case .schedulerConfig:
            return try enc.encode(SchedulerConfigView(algorithm: s.schedulerAlgorithm, modifyIndex: s.tableIndex[.config] ?? 0))
        case .evaluation:
            // An id or a unique prefix of one (at least 4 characters).
            return try enc.encode(byIDOrPrefix(q.id, s.evaluations, "evaluation").map(evaluation))
        case .evaluations:
            return try enc.encode(s.evaluations.values.sorted { ($0.modifyIndex, $0.id) > ($1.modifyIndex, $1.id) }.map(evaluation))
        case .jobEvaluations:
            let key = ClusterState.JobKey(q.namespace, q.id)
            guard s.jobs[key] != nil else { return Data("null".utf8) }
            return try enc.encode(s.evaluations(ofJob: key).map(evaluation))
        case .allocations:
            return try enc.encode(s.allocations.values.sorted { $0.name < $1.name }.map(allocation))
        case .plan:
            return try enc.encode(plan(q.text, s))
        case .allocation:
            // An id or a unique prefix of one (as `alloc status` takes).
            func view(_ a: Allocation) -> AllocationView {
                let replaced = Set(s.allocations(ofJob: .init(a.namespace, a.jobID)).compactMap(\.previousAllocation))
                return allocation(a, rescheduleAt: rescheduleAt(a, s, replaced: replaced))
            }
            return try enc.encode(byIDOrPrefix(q.id, s.allocations, "allocation").map(view))
        case .nodeAllocations:
            let mine = s.allocations(onNode: q.id)
            return try enc.encode(mine.compactMap { a -> AssignmentView? in
                let key = ClusterState.JobKey(a.namespace, a.jobID)
                let text = s.jobs[key].flatMap { $0.version == a.jobVersion ? $0.text : nil }
                    ?? s.versions[key]?.first { $0.version == a.jobVersion }?.text
                    // A version no longer kept: the current definition (the task runs on unchanged).
                    ?? s.jobs[key]?.text
                return text.map { AssignmentView(allocation: allocation(a), job: $0) }
            })
        case .namespaces:
            let names = Set(s.namespaces.keys).union([Namespace.defaultName]).sorted()
            return try enc.encode(names.map { namespaceView($0, s) })
        case .namespace:
            guard s.namespaceExists(q.id) else { return Data("null".utf8) }
            return try enc.encode(namespaceView(q.id, s))
        case .versions:
            let key = ClusterState.JobKey(q.namespace, q.id)
            guard s.jobs[key] != nil else { return Data("null".utf8) }
            return try enc.encode((s.versions[key] ?? []).map {
                JobVersionView(version: $0.version, stopped: $0.stopped, modifyIndex: $0.modifyIndex, job: $0.text, stable: $0.stable)
            })
        }
    }

    static func namespaceView(_ name: String, _ s: ClusterState) -> NamespaceView {
        let n = s.namespaces[name] ?? Namespace(name: name, description: name == Namespace.defaultName ? "the default namespace" : "")
        let u = s.usage(of: name)
        return NamespaceView(name: name, description: n.description,
                             quota: n.quota.map { .init(cpuMillicores: $0.cpuMillicores, memoryMiB: $0.memoryMiB, instances: $0.instances) },
                             capabilities: n.drivers.isUnrestricted ? nil
                                 : NamespaceCapabilities(enabledTaskDrivers: n.drivers.enabled?.map(\.rawValue),
                                                         disabledTaskDrivers: n.drivers.disabled.isEmpty ? nil : n.drivers.disabled.map(\.rawValue)),
                             used: .init(cpuMillicores: u.cpuMillicores, memoryMiB: u.memoryMiB, instances: u.instances),
                             jobs: s.jobs.keys.filter { $0.namespace == name }.count, createIndex: n.createIndex, modifyIndex: n.modifyIndex)
    }

    /// The record with this id, or the only one whose id starts with it (at least 4 characters);
    /// nil (encoded as `null`) when there is none, an error when the prefix is ambiguous.
    static func byIDOrPrefix<T>(_ id: String, _ table: TreeDictionary<String, T>, _ what: String) throws -> T? {
        if let exact = table[id] { return exact }
        let matches = id.count >= 4 ? table.filter { $0.key.hasPrefix(id) }.map(\.value) : []
        if matches.count > 1 { throw RaftError(.rejected, "\(what) prefix \(id) matches more than one \(what); give more of the id") }
        return matches.first
    }

    /// What registering this job would do against the state as it is (a dry run on the leader).
    static func plan(_ text: String, _ s: ClusterState) throws -> JobPlanView {
        let job = try JobFile.parse(text, file: "plan")
        if let why = s.driverRefusal(job) { throw RaftError(.rejected, why) }
        let key = ClusterState.JobKey(job.namespace, job.id)
        var n = 0
        let scheduled = LeaderCore.schedule(key, in: SchedulingView(s), job: job, now: Executor.unixMillis(), newID: { n += 1; return "planned-\(n)" })
        let (plan, version) = (scheduled.plan, scheduled.input.jobVersion)
        return JobPlanView(id: job.id, version: version,
                           placements: plan.placements.map { .init(name: $0.name, node: $0.nodeID, reason: $0.previousAllocation.map { "replaces \($0.prefix(8))" } ?? "new") },
                           stops: plan.stops.map { .init(name: $0.name, node: $0.nodeID, reason: $0.desiredDescription) },
                           inPlace: plan.updates.map { .init(name: $0.name, node: $0.nodeID, reason: "same tasks; moved to version \(version)") },
                           failures: plan.failures.map(\.description))
    }

    static func evaluation(_ e: Evaluation) -> EvaluationView {
        EvaluationView(id: e.id, namespace: e.namespace, jobID: e.jobID, priority: e.priority, triggeredBy: e.triggeredBy.rawValue,
                       status: e.status.rawValue, statusDescription: e.statusDescription, nodeID: e.nodeID,
                       failedPlacements: e.failedPlacements, createIndex: e.createIndex, modifyIndex: e.modifyIndex)
    }

    /// When the leader will replace this failed instance (nil: it is not failed, already
    /// replaced, out of reschedule attempts, or its failure time is unknown).
    static func rescheduleAt(_ a: Allocation, _ s: ClusterState, replaced: Set<String>, now: Int64 = Executor.unixMillis()) -> Int64? {
        guard a.clientStatus == .failed, a.desiredStatus == .run, !replaced.contains(a.id),
              let rec = s.jobs[.init(a.namespace, a.jobID)], !rec.stopped,
              let group = rec.job.groups.first(where: { $0.name == a.group }), rec.job.type == .service || rec.job.type == .batch,
              Scheduler.mayReschedule(a, group.reschedule, now: now, lookup: { s.allocations[$0] }) else { return nil }
        return Scheduler.rescheduleDue(a, group.reschedule)
    }

    static func allocation(_ a: Allocation, rescheduleAt: Int64?) -> AllocationView {
        var v = allocation(a)
        v.rescheduleAt = rescheduleAt
        return v
    }

    static func allocation(_ a: Allocation) -> AllocationView {
        var v = AllocationView(id: a.id, name: a.name, node: a.nodeID, group: a.group, jobVersion: a.jobVersion,
                       desiredStatus: a.desiredStatus.rawValue, desiredDescription: a.desiredDescription,
                       clientStatus: a.clientStatus.rawValue, clientDescription: a.clientDescription,
                       cpuMillicores: a.cpuMillicores, memoryMiB: a.memoryMiB, ports: a.ports,
                       previousAllocation: a.previousAllocation, createIndex: a.createIndex, modifyIndex: a.modifyIndex)
        v.namespace = a.namespace
        v.checks = a.checks
        v.jobID = a.jobID
        v.diskMiB = a.diskMiB
        v.taskStates = a.taskStates.mapValues { t in
            TaskStateView(state: t.state.rawValue, failed: t.failed, restarts: t.restarts, exitCode: t.exitCode, startedAt: t.startedAt,
                          finishedAt: t.finishedAt, events: t.events.map { TaskEventView(time: $0.time, type: $0.type, message: $0.message) })
        }
        return v
    }

    static func jobStatus(_ key: ClusterState.JobKey, _ s: ClusterState, withAllocations: Bool) -> JobStatusView {
        let rec = s.jobs[key]!
        let allocs = s.allocations(ofJob: key)
        let replaced = Set(allocs.compactMap(\.previousAllocation))
        let input = SchedulingView.promotionInput(s, key, rec)
        var awaiting = false
        let groups = rec.job.groups.map { g in
            let mine = allocs.filter { $0.group == g.name && $0.jobVersion <= rec.version }
            let current = mine.filter { $0.desiredStatus == .run }
            func n(_ st: Allocation.ClientStatus) -> Int { current.filter { $0.clientStatus == st }.count }
            var v = GroupSummaryView(name: g.name, desired: rec.stopped ? 0 : g.count,
                                     placed: current.filter(\.isLive).count, pending: n(.pending), running: n(.running),
                                     complete: n(.complete), failed: n(.failed), lost: n(.lost))
            v.healthy = current.filter(\.isHealthy).count
            if !rec.stopped && Scheduler.awaitingPromotion(rec.job, g, current, input) {
                awaiting = true
                let canaries = current.filter { $0.jobVersion == rec.version && $0.isLive }
                v.canaries = canaries.count
                v.canariesHealthy = canaries.filter(\.isHealthy).count
                v.canariesDesired = min(rec.job.update?.canary ?? 0, g.count)
            }
            return v
        }
        let live = allocs.contains { $0.isLive }
        let status: String
        if rec.stopped { status = live ? "stopping" : "dead" }
        else if rec.job.type == .batch && !live && !allocs.isEmpty { status = "dead" }
        else if allocs.contains(where: { $0.isLive && $0.clientStatus == .running }) { status = "running" }
        else { status = "pending" }
        // The newest evaluation (several may change in one entry: then the one created last).
        let latestEval = s.evaluations(ofJob: key)
            .max { ($0.modifyIndex, $0.createIndex, $0.id) < ($1.modifyIndex, $1.createIndex, $1.id) }
        var v = JobStatusView(id: key.id, namespace: key.namespace, type: rec.job.type.rawValue, priority: rec.job.priority,
                             status: status, version: rec.version, stopped: rec.stopped, groups: groups,
                             allocations: withAllocations ? allocs.map { allocation($0, rescheduleAt: rescheduleAt($0, s, replaced: replaced)) } : [],
                             placementFailures: latestEval.map { $0.failedPlacements.sorted { $0.key < $1.key }.map(\.value) } ?? [],
                             modifyIndex: rec.modifyIndex, awaitingPromotion: awaiting)
        v.failedEvaluation = latestEval.flatMap { $0.status == .failed ? $0.statusDescription : nil }
        return v
    }

    static func node(_ n: Node, _ s: ClusterState) -> NodeView {
        let used = s.used(onNode: n.id)
        return NodeView(id: n.id, name: n.id, address: n.address, datacenter: n.datacenter, status: n.status.rawValue,
                        eligibility: n.eligibility.rawValue, draining: n.draining, drivers: n.drivers,
                        capacity: ResourcesView(cpuMillicores: n.cpuMillicores, memoryMiB: n.memoryMiB, diskMiB: n.diskMiB),
                        allocated: ResourcesView(cpuMillicores: used.cpuMillicores, memoryMiB: used.memoryMiB, diskMiB: used.diskMiB),
                        allocations: s.liveAllocations(onNode: n.id).count)
    }
}
