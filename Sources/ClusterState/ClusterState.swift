import CaravanModel
import HashTreeCollections
import Primitives

/// The replicated record of the cluster: jobs (with their versions), nodes, allocations and
/// evaluations. ``apply(_:index:)`` is deterministic — the same commands at the same indexes
/// give the same state on every agent — and every table remembers the index of its last
/// change, which is what blocking queries wait on.
///
/// The tables that grow with the workload (jobs, versions, allocations, evaluations and their
/// indexes) are persistent hash tries: a copy shares everything with the original, and a change
/// to either copies only the path to what changed — so a reader holding the state while the
/// next command applies costs nothing, whether the cluster holds a thousand allocations or a
/// million. What allocations hold per node and namespace (``use``) and each job's and node's
/// allocations are kept up to date as commands apply, so no query walks every allocation.
public struct ClusterState: Sendable, Equatable {
    public struct JobKey: Hashable, Sendable, Comparable {
        public var namespace: String
        public var id: String
        public init(_ namespace: String, _ id: String) {
            self.namespace = namespace
            self.id = id
        }
        public static func < (a: JobKey, b: JobKey) -> Bool { (a.namespace, a.id) < (b.namespace, b.id) }
    }

    public struct JobRecord: Sendable, Equatable {
        public var job: Job
        /// The canonical job-file JSON the job was registered with.
        public var text: String
        public var version: Int
        public var stopped: Bool
        public var createIndex: UInt64
        public var modifyIndex: UInt64
        /// Every instance of this version has been healthy at once (a rollout that finished): what
        /// `update.autoRevert` goes back to.
        public var stable: Bool = false
        /// The version's canaries were promoted: its remaining instances may be replaced.
        public var promoted: Bool = false
    }

    public enum Table: UInt8, Sendable, CaseIterable { case jobs = 1, nodes, allocations, evaluations, config, namespaces }

    public enum Outcome: Sendable, Equatable {
        case applied
        case ignoredAsUnknown
        case rejected(String)
    }

    /// Versions kept per job (the newest first), for `job history` and `job revert`.
    public static let versionsKept = 6

    public internal(set) var jobs: TreeDictionary<JobKey, JobRecord> = [:]
    public internal(set) var versions: TreeDictionary<JobKey, [JobRecord]> = [:]
    /// Changed only through ``setNode(_:)``, which keeps ``use`` in step.
    public internal(set) var nodes: [String: Node] = [:]
    /// Changed only through ``setAllocation(_:id:)``, which keeps the indexes in step.
    public internal(set) var allocations: TreeDictionary<String, Allocation> = [:]
    /// Changed only through ``setEvaluation(_:id:)``.
    public internal(set) var evaluations: TreeDictionary<String, Evaluation> = [:]
    /// What allocations hold per node (by slot) and per namespace; every node in slot order.
    public private(set) var use = ClusterUse()
    /// Allocation ids by job and by node (every status); evaluation ids by job.
    public private(set) var allocationsByJob: TreeDictionary<JobKey, Set<String>> = [:]
    public private(set) var allocationsByNode: TreeDictionary<String, Set<String>> = [:]
    public private(set) var evaluationsByJob: TreeDictionary<JobKey, Set<String>> = [:]
    /// Per job, what its allocations' changes come to (what the leader's evaluation feed compares
    /// between passes instead of reading every allocation).
    public private(set) var allocationMarks: TreeDictionary<JobKey, AllocationMark> = [:]

    /// How a job's allocations stand: how many, and the newest change of any, of a failed one
    /// and of a lost one (indexes only grow: a mark that did not change means nothing did).
    public struct AllocationMark: Sendable, Equatable {
        public var count = 0
        public var latest: UInt64 = 0
        public var latestFailed: UInt64 = 0
        public var latestLost: UInt64 = 0
        /// How many are finished (``Allocation/isTerminal``): what garbage collection looks at first.
        public var finished = 0

        /// Takes in a change of `a` (its indexes and status).
        mutating func saw(_ a: Allocation) {
            latest = max(latest, a.modifyIndex)
            if a.clientStatus == .failed { latestFailed = max(latestFailed, a.modifyIndex) }
            if a.clientStatus == .lost { latestLost = max(latestLost, a.modifyIndex) }
        }
    }
    /// The last launch time (Unix seconds) of each periodic job.
    public internal(set) var periodicLaunches: [JobKey: Int64] = [:]
    public internal(set) var tableIndex: [Table: UInt64] = [:]
    /// How the leader ranks nodes, cluster-wide: `binpack` (the default) or `spread`.
    public internal(set) var schedulerAlgorithm: String = ClusterState.defaultAlgorithm
    public static let defaultAlgorithm = "binpack"
    public static let algorithms = ["binpack", "spread"]
    public internal(set) var lastIndex: UInt64 = 0
    /// Namespaces made with `caravan namespace apply` (`default` exists without being here).
    public internal(set) var namespaces: [String: Namespace] = [:]
    /// Set by the first namespace command: from then on jobs go only into namespaces that exist.
    public internal(set) var namespacesInUse = false

    public init() {}

    /// Equal when every table is (the indexes follow from the tables; node slots follow from
    /// the order nodes arrived in, which a restored copy does not share).
    public static func == (a: ClusterState, b: ClusterState) -> Bool {
        a.jobs == b.jobs && a.versions == b.versions && a.nodes == b.nodes && a.allocations == b.allocations
            && a.evaluations == b.evaluations && a.periodicLaunches == b.periodicLaunches && a.tableIndex == b.tableIndex
            && a.schedulerAlgorithm == b.schedulerAlgorithm && a.lastIndex == b.lastIndex && a.namespaces == b.namespaces
            && a.namespacesInUse == b.namespacesInUse
    }

    // MARK: - The one way each indexed table changes

    /// Files `a` under `id` (nil removes it), keeping ``use`` and the job and node indexes in step.
    mutating func setAllocation(_ a: Allocation?, id: String) {
        let old = allocations[id]
        if let old {
            use.add(old, sign: -1)
            if a == nil || a!.jobID != old.jobID || a!.namespace != old.namespace || a!.nodeID != old.nodeID {
                Self.remove(id, from: &allocationsByJob, JobKey(old.namespace, old.jobID))
                Self.remove(id, from: &allocationsByNode, old.nodeID)
            }
        }
        allocations[id] = a
        if let old, a == nil || a!.jobID != old.jobID || a!.namespace != old.namespace {
            let key = JobKey(old.namespace, old.jobID)
            if var m = allocationMarks[key] {
                m.count -= 1
                if old.isTerminal { m.finished -= 1 }
                allocationMarks[key] = m.count > 0 ? m : nil
            }
        }
        guard let a else { return }
        let key = JobKey(a.namespace, a.jobID)
        var m = allocationMarks[key] ?? AllocationMark()
        if old == nil || old!.jobID != a.jobID || old!.namespace != a.namespace {
            m.count += 1
            if a.isTerminal { m.finished += 1 }
        } else if old!.isTerminal != a.isTerminal {
            m.finished += a.isTerminal ? 1 : -1
        }
        m.saw(a)
        allocationMarks[key] = m
        use.add(a)
        if old == nil || a.jobID != old!.jobID || a.namespace != old!.namespace || a.nodeID != old!.nodeID {
            allocationsByJob[JobKey(a.namespace, a.jobID), default: []].insert(id)
            allocationsByNode[a.nodeID, default: []].insert(id)
        }
    }

    /// Records a node, new or changed (nodes are never removed: a dead one is marked down).
    mutating func setNode(_ n: Node) {
        nodes[n.id] = n
        let table = allocations
        use.upsert(n, holding: (allocationsByNode[n.id] ?? []).lazy.compactMap { table[$0] })
    }

    /// Files `e` under `id` (nil removes it), keeping the job index in step.
    mutating func setEvaluation(_ e: Evaluation?, id: String) {
        if let old = evaluations[id], e == nil || e!.jobID != old.jobID || e!.namespace != old.namespace {
            Self.remove(id, from: &evaluationsByJob, JobKey(old.namespace, old.jobID))
        }
        evaluations[id] = e
        if let e { evaluationsByJob[JobKey(e.namespace, e.jobID), default: []].insert(id) }
    }

    /// What the kept indexes get wrong against the tables, added up again from scratch (empty
    /// when they agree): what tests and the simulator check after every command.
    public func indexDrift() -> [String] {
        var out: [String] = []
        let fresh = ClusterUse(nodes: use.nodes, allocations: Array(allocations.values))
        if use.nodes.count != nodes.count || use.nodes.contains(where: { nodes[$0.id] != $0 }) { out.append("node slots differ from the nodes table") }
        if fresh.use != use.use { out.append("use per node differs") }
        if fresh.ports != use.ports { out.append("ports per node differ") }
        // The same partition of the nodes (numbers differ: the kept one remembers classes nodes left).
        var liveToFresh: [Int: Int] = [:], freshToLive: [Int: Int] = [:]
        for (l, f) in zip(use.classOf, fresh.classOf) where liveToFresh.updateValue(f, forKey: l) ?? f != f || freshToLive.updateValue(l, forKey: f) ?? l != l {
            out.append("scheduling classes differ")
            break
        }
        let nonzero = use.namespaces.filter { $0.value != Quota.Usage() }
        if fresh.namespaces != nonzero { out.append("namespace use differs: \(nonzero) vs \(fresh.namespaces)") }
        var byJob: [JobKey: Set<String>] = [:], byNode: [String: Set<String>] = [:], evals: [JobKey: Set<String>] = [:]
        for (id, a) in allocations { byJob[JobKey(a.namespace, a.jobID), default: []].insert(id); byNode[a.nodeID, default: []].insert(id) }
        for (id, e) in evaluations { evals[JobKey(e.namespace, e.jobID), default: []].insert(id) }
        if byJob != Dictionary(uniqueKeysWithValues: allocationsByJob.map { ($0.key, $0.value) }) { out.append("allocations by job differ") }
        if byNode != Dictionary(uniqueKeysWithValues: allocationsByNode.map { ($0.key, $0.value) }) { out.append("allocations by node differ") }
        if evals != Dictionary(uniqueKeysWithValues: evaluationsByJob.map { ($0.key, $0.value) }) { out.append("evaluations by job differ") }
        if Set(allocationMarks.keys) != Set(byJob.keys) || allocationMarks.contains(where: { k, m in
            let mine = byJob[k] ?? []
            return m.count != mine.count || mine.contains { allocations[$0]!.modifyIndex > m.latest }
                || m.finished != mine.filter({ allocations[$0]!.isTerminal }).count
                || mine.contains { allocations[$0]!.clientStatus == .failed && allocations[$0]!.modifyIndex > m.latestFailed }
                || mine.contains { allocations[$0]!.clientStatus == .lost && allocations[$0]!.modifyIndex > m.latestLost }
        }) { out.append("allocation marks differ") }
        return out
    }

    /// The per-job marks added up anew (after every allocation's indexes were renumbered).
    mutating func rebuildAllocationMarks() {
        allocationMarks = [:]
        for a in allocations.values {
            let key = JobKey(a.namespace, a.jobID)
            var m = allocationMarks[key] ?? AllocationMark()
            m.count += 1
            if a.isTerminal { m.finished += 1 }
            m.saw(a)
            allocationMarks[key] = m
        }
    }

    private static func remove<K>(_ id: String, from index: inout TreeDictionary<K, Set<String>>, _ key: K) {
        guard var ids = index.removeValue(forKey: key) else { return }
        ids.remove(id)
        if !ids.isEmpty { index[key] = ids }
    }

    /// Whether jobs may be registered in `name`.
    public func namespaceExists(_ name: String) -> Bool { name == Namespace.defaultName || namespaces[name] != nil }

    /// What the live allocations of a namespace hold.
    public func usage(of namespace: String) -> Quota.Usage { use.usage(of: namespace) }

    /// The index of the latest change to any of `tables`.
    public func index(of tables: [Table]) -> UInt64 { tables.map { tableIndex[$0] ?? 0 }.max() ?? 0 }

    /// Applies one committed command.
    public mutating func apply(_ bytes: [UInt8], index: UInt64) -> Outcome {
        lastIndex = max(lastIndex, index)
        switch Command.decode(bytes) {
        case .ignorable: return .ignoredAsUnknown
        case .invalid(let why): return .rejected(why)
        case .command(.applyPlan(let allocs, let evals)) where bytes.first == Command.Tag.applyPlan.rawValue:
            // Written before plans were checked when applied: applied as it was then.
            return applyApplyPlan(allocs, evals, index: index, checked: false)
        case .command(let c): return apply(c, index: index)
        }
    }

    /// Why `job` may not be registered (or promoted) in its namespace now: a task whose driver
    /// the namespace does not allow. Nil when it may.
    public func driverRefusal(_ job: Job) -> String? {
        namespaces[job.namespace]?.drivers.refusal(job, namespace: job.namespace)
    }

    /// Why `job` may not be registered as it is: an id no job file could give (a periodic
    /// launch of a parent stored with a long id), or a driver its namespace does not allow.
    public func registrationRefusal(_ job: Job) -> String? {
        guard JobFile.isValidID(job.id) else { return "job id \"\(job.id.prefix(140))\" is not 1-128 letters, digits, '-', '_' or '.'" }
        return driverRefusal(job)
    }

    public mutating func apply(_ c: Command, index: UInt64) -> Outcome {
        lastIndex = max(lastIndex, index)
        switch c {
        case .registerJob(let text): return applyRegisterJob(text, index: index)
        case .register(let job): return applyRegister(job, index: index)
        case .deregisterJob(let ns, let id, let purge): return applyDeregisterJob(ns, id, purge, index: index)
        case .upsertNode(let n): return applyUpsertNode(n, index: index)
        case .nodeStatus(let id, let status): return applyNodeStatus(id, status, index: index)
        case .nodeEligibility(let id, let el): return applyNodeEligibility(id, el, index: index)
        case .nodeDrain(let id, let d): return applyNodeDrain(id, d, index: index)
        case .applyPlan(let allocs, let evals): return applyApplyPlan(allocs, evals, index: index, checked: true)
        case .clientUpdate(let updates): return applyClientUpdate(updates, index: index)
        case .upsertEvaluations(let evals): return applyUpsertEvaluations(evals, index: index)
        case .markStable(let ns, let id, let version): return applyMarkStable(ns, id, version, index: index)
        case .upsertNamespace(let n): return applyUpsertNamespace(n, index: index)
        case .deleteNamespace(let name): return applyDeleteNamespace(name, index: index)
        case .promote(let ns, let id, let version): return applyPromote(ns, id, version, index: index)
        case .schedulerConfig(let algorithm): return applySchedulerConfig(algorithm, index: index)
        case .periodicLaunch(let ns, let id, let time): return applyPeriodicLaunch(ns, id, time, index: index)
        }
    }


    /// Finished allocations (stopped, complete, failed, lost) kept per job, the newest; older
    /// ones are dropped when a plan for the job is applied, so history stays bounded.
    public static let finishedAllocationsKept = 50

    mutating func collectGarbage(jobs: Set<JobKey>) {
        for job in jobs where (allocationMarks[job]?.finished ?? 0) > Self.finishedAllocationsKept {
            let mine = allocations(ofJob: job)
            let finished = mine.filter(\.isTerminal)
            guard finished.count > Self.finishedAllocationsKept else { continue }
            // Keep anything a live allocation still points back to (a replacement is always of
            // the same job).
            let referenced = Set(mine.filter(\.isLive).compactMap(\.previousAllocation))
            let sorted = finished.sorted { ($0.modifyIndex, $0.id) > ($1.modifyIndex, $1.id) }
            for old in sorted.dropFirst(Self.finishedAllocationsKept) where !referenced.contains(old.id) { setAllocation(nil, id: old.id) }
        }
    }

    /// Evaluations kept per job (the newest); older ones are dropped as new ones arrive.
    public static let evaluationsKept = 10

    mutating func upsert(_ evals: [Evaluation], _ index: UInt64) {
        for var e in evals {
            e.createIndex = evaluations[e.id]?.createIndex ?? index
            e.modifyIndex = index
            setEvaluation(e, id: e.id)
        }
        guard !evals.isEmpty else { return }
        touch(.evaluations, index)
        for job in Set(evals.map { JobKey($0.namespace, $0.jobID) }) {
            for old in evaluations(ofJob: job).dropFirst(Self.evaluationsKept) { setEvaluation(nil, id: old.id) }
        }
    }

    mutating func touch(_ t: Table, _ index: UInt64) { tableIndex[t] = max(tableIndex[t] ?? 0, index) }

    // MARK: - Queries

    /// Allocations on a node that hold resources there.
    public func liveAllocations(onNode id: String) -> [Allocation] {
        allocations(onNode: id).filter(\.isLive)
    }

    /// Every allocation filed on a node (any status), by id.
    public func allocations(onNode id: String) -> [Allocation] {
        (allocationsByNode[id] ?? []).compactMap { allocations[$0] }.sorted { $0.id < $1.id }
    }

    /// A job's evaluations, newest first.
    public func evaluations(ofJob key: JobKey) -> [Evaluation] {
        (evaluationsByJob[key] ?? []).compactMap { evaluations[$0] }.sorted { ($0.modifyIndex, $0.id) > ($1.modifyIndex, $1.id) }
    }

    public func allocations(ofJob key: JobKey) -> [Allocation] {
        (allocationsByJob[key] ?? []).compactMap { allocations[$0] }
            .sorted { $0.name < $1.name || ($0.name == $1.name && ($0.createIndex, $0.id) < ($1.createIndex, $1.id)) }
    }

    /// CPU and memory reserved on a node by its live allocations.
    public func used(onNode id: String) -> (cpuMillicores: Int, memoryMiB: Int, diskMiB: Int) {
        guard let s = use.slot[id] else { return (0, 0, 0) }
        let u = use.use[s]
        return (u.cpuMillicores, u.memoryMiB, u.diskMiB)
    }

    // MARK: - Snapshot

    /// 8: jobs as `JobCodec` records (7 and before: job-file text, parsed when restored).
    static let snapshotVersion: UInt8 = 8

    /// A compact, deterministic encoding of the whole state (sorted keys).
    public func snapshot() -> [UInt8] {
        var w = ByteWriter(capacity: 4096)
        w.byte(Self.snapshotVersion)
        w.varint(lastIndex)
        w.varint(UInt64(tableIndex.count))
        for (t, i) in tableIndex.sorted(by: { $0.key.rawValue < $1.key.rawValue }) { w.byte(t.rawValue); w.varint(i) }
        func job(_ r: JobRecord) {
            w.blob(JobCodec.encode(r.job)); w.varint(UInt64(r.version)); w.byte(r.stopped ? 1 : 0); w.varint(r.createIndex); w.varint(r.modifyIndex)
            w.byte((r.stable ? 1 : 0) | (r.promoted ? 2 : 0))
        }
        w.varint(UInt64(jobs.count))
        for k in jobs.keys.sorted() {
            job(jobs[k]!)
            let vs = versions[k] ?? []
            w.varint(UInt64(vs.count))
            for v in vs { job(v) }
        }
        w.varint(UInt64(nodes.count)); for k in nodes.keys.sorted() { RecordCodec.enc(nodes[k]!, &w) }
        w.varint(UInt64(allocations.count)); for k in allocations.keys.sorted() { RecordCodec.enc(allocations[k]!, &w); RecordCodec.enc(allocations[k]!.taskStates, &w); RecordCodec.map(allocations[k]!.checks, &w) }
        w.varint(UInt64(evaluations.count)); for k in evaluations.keys.sorted() { RecordCodec.enc(evaluations[k]!, &w) }
        w.varint(UInt64(periodicLaunches.count))
        for k in periodicLaunches.keys.sorted() { w.string(k.namespace); w.string(k.id); RecordCodec.int(Int(periodicLaunches[k]!), &w) }
        w.string(schedulerAlgorithm)
        w.varint(UInt64(namespaces.count)); for k in namespaces.keys.sorted() { RecordCodec.enc(namespaces[k]!, &w) }
        w.byte(namespacesInUse ? 1 : 0)
        return w.bytes
    }

    public struct RestoreError: Error, Sendable, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    public static func restore(_ bytes: [UInt8]) throws(RestoreError) -> ClusterState {
        var r = ByteReader(bytes)
        guard let format = r.byte(), (1...snapshotVersion).contains(format), let last = r.varint(), let tn = r.count(max: 16) else {
            throw RestoreError(description: "not a cluster-state snapshot (or a newer format)")
        }
        var s = ClusterState()
        s.lastIndex = last
        for _ in 0..<tn {
            guard let t = r.byte().flatMap(Table.init(rawValue:)), let i = r.varint() else { throw RestoreError(description: "bad table index") }
            s.tableIndex[t] = i
        }
        func job() throws(RestoreError) -> JobRecord {
            let j: Job, text: String
            if format >= 8 {
                guard let bytes = r.blob(max: 4 << 20), let decoded = JobCodec.decode(bytes) else { throw RestoreError(description: "bad job record") }
                (j, text) = (decoded, JobFile.render(decoded))
            } else {
                guard let t = r.string(max: 4 << 20) else { throw RestoreError(description: "bad job record") }
                do { j = try JobFile.parse(t, file: "snapshot", stored: true) } catch { throw RestoreError(description: "bad job in snapshot: \(error)") }
                text = t
            }
            guard let v = r.varint(), v <= UInt64(Int32.max), let st = r.byte(), let ci = r.varint(), let mi = r.varint() else {
                throw RestoreError(description: "bad job record")
            }
            var rec = JobRecord(job: j, text: text, version: Int(v), stopped: st == 1, createIndex: ci, modifyIndex: mi)
            if format >= 5 {
                guard let flags = r.byte(), flags < 4 else { throw RestoreError(description: "bad job record") }
                rec.stable = flags & 1 != 0
                rec.promoted = format >= 6 && flags & 2 != 0
            }
            return rec
        }
        guard let jn = r.count(max: 1 << 24) else { throw RestoreError(description: "bad job count") }
        for _ in 0..<jn {
            let rec = try job()
            let key = JobKey(rec.job.namespace, rec.job.id)
            s.jobs[key] = rec
            guard let vn = r.count(max: 64) else { throw RestoreError(description: "bad version count") }
            var vs: [JobRecord] = []
            for _ in 0..<vn { vs.append(try job()) }
            s.versions[key] = vs
        }
        guard let nn = r.count(max: 1 << 24) else { throw RestoreError(description: "bad node count") }
        for _ in 0..<nn { guard let n = RecordCodec.node(&r) else { throw RestoreError(description: "bad node") }; s.setNode(n) }
        guard let an = r.count(max: 1 << 26) else { throw RestoreError(description: "bad allocation count") }
        for _ in 0..<an {
            guard var a = RecordCodec.allocation(&r) else { throw RestoreError(description: "bad allocation") }
            if format >= 3 {
                guard let ts = RecordCodec.taskStates(&r), let checks = RecordCodec.map(&r) else { throw RestoreError(description: "bad task states") }
                a.taskStates = ts
                a.checks = checks
            }
            s.setAllocation(a, id: a.id)
        }
        guard let en = r.count(max: 1 << 26) else { throw RestoreError(description: "bad evaluation count") }
        for _ in 0..<en { guard let e = RecordCodec.evaluation(&r) else { throw RestoreError(description: "bad evaluation") }; s.setEvaluation(e, id: e.id) }
        if format >= 2 {
            guard let pn = r.count(max: 1 << 24) else { throw RestoreError(description: "bad periodic count") }
            for _ in 0..<pn {
                guard let ns = r.string(), let id = r.string(), let t = RecordCodec.int(&r) else { throw RestoreError(description: "bad periodic launch") }
                s.periodicLaunches[JobKey(ns, id)] = Int64(t)
            }
        }
        if format >= 4 {
            guard let algorithm = r.string(), algorithms.contains(algorithm) else { throw RestoreError(description: "bad scheduler configuration") }
            s.schedulerAlgorithm = algorithm
        }
        if format >= 7 {
            guard let n = r.count(max: 1 << 16) else { throw RestoreError(description: "bad namespace count") }
            for _ in 0..<n { guard let ns = RecordCodec.namespace(&r) else { throw RestoreError(description: "bad namespace") }; s.namespaces[ns.name] = ns }
            guard let inUse = r.byte(), inUse <= 1 else { throw RestoreError(description: "bad namespace flag") }
            s.namespacesInUse = inUse == 1
        }
        guard r.atEnd else { throw RestoreError(description: "trailing bytes in snapshot") }
        return s
    }
}
