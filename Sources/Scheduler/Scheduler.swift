import CaravanModel

/// What the scheduler sees: the job (nil if it was purged), its current version, the cluster's
/// nodes and what its allocations hold on them (``ClusterUse``, kept by the replicated state as
/// commands apply), and the job's own allocations.
public struct SchedulerInput: Sendable {
    public var job: Job?
    public var jobVersion: Int
    public var jobStopped: Bool
    /// Every node and what live allocations hold on each, by slot; each namespace's use.
    public var cluster: ClusterUse
    /// The job's own allocations, every status (with no job: every allocation given).
    public var allocations: [Allocation]
    /// Earlier versions of the job still known, to tell in-place updates from destructive ones.
    public var previousVersions: [Int: Job]

    /// Wall-clock Unix milliseconds, for reschedule delays; nil replaces failed instances at once.
    public var now: Int64?
    /// The version's canaries were promoted (see `UpdateStrategy.canary`).
    public var promoted = false
    /// The job's namespace's quota: what its allocations that hold resources may hold together
    /// (``ClusterUse/usage(of:)``). An instance over it is not placed, and the failure says so.
    public var quota: Quota?

    /// Every node, by slot.
    public var nodes: [Node] { cluster.nodes }

    /// From the cluster's use as the state keeps it and the job's own allocations: what the
    /// leader passes, at a cost that does not grow with the cluster's allocations.
    public init(job: Job?, jobVersion: Int, jobStopped: Bool, cluster: ClusterUse, jobAllocations: [Allocation],
                previousVersions: [Int: Job] = [:], now: Int64? = nil) {
        self.now = now
        self.job = job
        self.jobVersion = jobVersion
        self.jobStopped = jobStopped
        self.cluster = cluster
        self.allocations = jobAllocations
        self.previousVersions = previousVersions
    }

    /// From lists: `allocations` is every allocation in the cluster (the job's and others',
    /// which hold resources); the use is added up from them.
    public init(job: Job?, jobVersion: Int, jobStopped: Bool, nodes: [Node], allocations: [Allocation], previousVersions: [Int: Job] = [:],
                now: Int64? = nil) {
        let mine = job.map { j in allocations.filter { $0.jobID == j.id && $0.namespace == j.namespace } } ?? allocations
        self.init(job: job, jobVersion: jobVersion, jobStopped: jobStopped, cluster: ClusterUse(nodes: nodes, allocations: allocations),
                  jobAllocations: mine, previousVersions: previousVersions, now: now)
    }
}

/// Why some instances of a group could not be placed, by reason, for `job status` and `job plan`.
/// Why a node could not take an instance, or why none was tried. Rendered to text only at the
/// edge (`description`, the evaluation a user reads); metrics read `metricClass`.
public enum FailureReason: Hashable, Sendable, CustomStringConvertible {
    public enum Resource: String, Sendable { case cpu, memory, disk }

    case nodeDown, nodeDraining, nodeIneligible
    case datacenter(String)
    case missingDriver(String)
    /// A constraint the node does not meet, as `Feasibility.describe` says it.
    case constraint(String)
    case distinctHosts
    case distinctProperty(String)
    case exhausted(Resource)
    case portInUse(Int)
    /// The job's namespace is at its quota (`namespace team-a: memory 2048Mi of 2048Mi used`).
    case quota(String)

    public var description: String {
        switch self {
        case .nodeDown: "node down"
        case .nodeDraining: "node draining"
        case .nodeIneligible: "node ineligible"
        case .datacenter(let dc): "datacenter \(dc)"
        case .missingDriver(let d): d == "raw_exec" ? "missing driver raw_exec (agents offer it only with --enable-raw-exec)" : "missing driver \(d)"
        case .constraint(let c): c
        case .distinctHosts: "constraint distinct_hosts"
        case .distinctProperty(let a): "constraint distinct_property \(a)"
        case .exhausted(let r): "\(r.rawValue) exhausted"
        case .portInUse(let p): "port \(p) in use"
        case .quota(let why): why
        }
    }

    /// A node ran out of something (rather than not being a candidate at all).
    public var isExhaustion: Bool { if case .exhausted = self { true } else { false } }

    /// The reason without the job's own values, for a metric with few series.
    public var metricClass: String {
        switch self {
        case .nodeDown: "node_down"
        case .nodeDraining: "node_draining"
        case .nodeIneligible: "node_ineligible"
        case .datacenter: "datacenter"
        case .missingDriver: "missing_driver"
        case .constraint: "constraint"
        case .distinctHosts: "distinct_hosts"
        case .distinctProperty: "distinct_property"
        case .exhausted(let r): "\(r.rawValue)_exhausted"
        case .portInUse: "port_in_use"
        case .quota: "quota"
        }
    }
}

public struct PlacementFailure: Sendable, Equatable, CustomStringConvertible {
    public var group: String
    public var unplaced: Int
    public var nodesEvaluated: Int
    /// Reason → nodes it ruled out.
    public var reasons: [FailureReason: Int]

    public var description: String {
        // A quota refusal is about the namespace, not about nodes.
        if nodesEvaluated == 0, let quota = reasons.keys.first(where: { if case .quota = $0 { true } else { false } }) {
            return "\(unplaced) of group \(group) not placed: \(quota)"
        }
        let why = reasons.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key.description < $1.key.description) }
            .map { r in r.key.isExhaustion ? "\(r.key) on \(r.value) node\(r.value == 1 ? "" : "s")" : "\(r.key) filtered \(r.value)" }
        return "\(unplaced) of group \(group) not placed: " + (why.isEmpty ? "no nodes" : why.joined(separator: ", ")) + " (\(nodesEvaluated) nodes evaluated)"
    }
}

/// What an evaluation decided: allocations to create, allocations to stop, and what could not
/// be placed. The leader's plan applier checks it against the latest state before committing.
public struct Plan: Sendable, Equatable {
    public var placements: [Allocation] = []
    /// Existing allocations with their new desired status (stop or evict) and a reason.
    public var stops: [Allocation] = []
    /// Existing allocations moved to the new job version where they run (nothing about what
    /// they run changed: only the count, metadata, or policies).
    public var updates: [Allocation] = []
    public var failures: [PlacementFailure] = []
    /// Failed instances whose replacement waits for the group's reschedule delay: instance name
    /// → when (Unix ms) it is due. The leader's next pass after that time places it.
    public var delayed: [String: Int64] = [:]
    public init() {}
    public var isEmpty: Bool { placements.isEmpty && stops.isEmpty && updates.isEmpty }
}

public enum SchedulingAlgorithm: String, Sendable, CaseIterable {
    /// Fill the fullest node that fits (fewer machines in use).
    case binpack
    /// Prefer the emptiest node (even load).
    case spread
}

/// The scheduler: a pure function of (state view, job) → plan. Reconciles what runs with what
/// the job asks for (service, batch, system and sysbatch semantics), filters nodes by
/// feasibility and ranks the rest (bin-packing by default, affinities, spreads, anti-affinity
/// between instances of a group).
public struct Scheduler {
    public var algorithm: SchedulingAlgorithm
    /// Feasible nodes ranked per placement at most. Clusters up to this size are ranked in
    /// full; larger ones are walked from a rotating start, so each placement looks at this many
    /// feasible nodes and the walk covers the whole cluster over successive placements.
    public var maxCandidates: Int = 1024
    /// Clusters larger than this are walked passing whole blocks of 64 full nodes at a time
    /// (``ClusterUse/blockFree``); the choice is the same either way.
    public var passBlocksFrom = 256
    /// A group's next instance re-scores only the node chosen last (see `place`); off, every
    /// instance walks again (the tests compare both).
    var keepsRankings = true
    /// Makes allocation ids; deterministic in tests.
    public var newID: () -> String

    public init(algorithm: SchedulingAlgorithm = .binpack, newID: @escaping () -> String) {
        self.algorithm = algorithm
        self.newID = newID
    }

    public func schedule(_ input: SchedulerInput) -> Plan {
        var plan = Plan()
        var ctx = Context(input: input)
        let jobID = input.job?.id ?? input.allocations.first?.jobID ?? ""
        let mine = input.allocations.filter { $0.jobID == jobID && $0.namespace == (input.job?.namespace ?? $0.namespace) }
        guard let job = input.job, !input.jobStopped else {
            // Stopped or purged: stop everything still running.
            for a in mine where a.desiredStatus == .run && a.isLive { stop(a, "job stopped", &plan, &ctx) }
            return plan
        }
        let nodesByID = NodesByID(input.cluster)
        for group in job.groups {
            let existing = mine.filter { $0.group == group.name && $0.desiredStatus == .run }
            // Evicted by a drain and not yet replaced by a running instance: migrations in flight.
            ctx.migrations[group.name] = mine.filter { e in
                e.group == group.name && e.desiredStatus == .evict && e.clientStatus != .lost
                    && !mine.contains { $0.previousAllocation == e.id && $0.desiredStatus == .run && $0.clientStatus == .running }
            }.count
            // Groups no longer in the job are stopped below.
            if job.type == .system || job.type == .sysbatch {
                reconcileSystem(job, group, existing, nodesByID, &plan, &ctx)
            } else {
                reconcileCount(job, group, existing, nodesByID, &plan, &ctx)
            }
        }
        let groupNames = Set(job.groups.map(\.name))
        for a in mine where a.desiredStatus == .run && a.isLive && !groupNames.contains(a.group) {
            stop(a, "group removed from the job", &plan, &ctx)
        }
        return plan
    }

    /// A plan that stops every live allocation of a job that no longer exists.
    public static func stopAll(jobID: String, namespace: String, allocations: [Allocation]) -> Plan {
        var plan = Plan()
        for a in allocations where a.jobID == jobID && a.namespace == namespace && a.isLive {
            var s = a
            s.desiredStatus = .stop
            s.desiredDescription = "job purged"
            plan.stops.append(s)
        }
        return plan
    }

    // MARK: - Reconcilers

    /// Service and batch: exactly `count` instances named `job.group[i]`.
    private func reconcileCount(_ job: Job, _ group: TaskGroup, _ existing: [Allocation], _ nodes: NodesByID,
                                _ plan: inout Plan, _ ctx: inout Context) {
        var byIndex: [Int: Allocation] = [:]
        var needs: [(index: Int, previous: Allocation?)] = []
        for a in existing.sorted(by: { $0.createIndex > $1.createIndex }) {
            guard let i = Self.index(of: a.name) else { continue }
            if byIndex[i] == nil { byIndex[i] = a }
        }
        let maxParallel = job.update.map { max(1, $0.maxParallel) } ?? Int.max
        // A rolling update (with an `update` policy) replaces at most maxParallel instances at a
        // time: instances of the new version that are not yet healthy — pending, failing their
        // checks, failed, or healthy for less than minHealthyTime — hold the next ones back.
        var destructive = 0
        if let u = job.update, existing.contains(where: { $0.jobVersion < ctx.input.jobVersion && $0.isLive }) {
            destructive = existing.filter { $0.jobVersion == ctx.input.jobVersion && !Self.settled($0, u.minHealthyTime, now: ctx.input.now) }.count
        }
        // Canaries: until the version is promoted, the first `canary` instances of it run beside
        // the old ones, which are neither stopped nor replaced.
        let canaryPhase = Self.awaitingPromotion(job, group, existing, ctx.input)
        let canaries = canaryPhase ? min(job.update?.canary ?? 0, group.count) : 0
        for i in 0..<group.count {
            guard let a = byIndex[i] else { needs.append((i, nil)); continue }
            switch a.clientStatus {
            case .complete where job.type == .batch:
                continue  // batch work that finished is not re-run
            case .complete:
                needs.append((i, a))
            case .lost:
                needs.append((i, a))  // lost allocations are always replaced
            case .failed where a.jobVersion < ctx.input.jobVersion:
                needs.append((i, a))  // it failed running an older definition: the new one is tried at once
            case .failed:
                guard canReschedule(a, group.reschedule, &ctx) else { continue }
                if let now = ctx.input.now, let due = Self.rescheduleDue(a, group.reschedule), now < due {
                    plan.delayed[a.name] = due
                    continue
                }
                needs.append((i, a))
            case .pending, .running:
                let node = nodes[a.nodeID]
                if node == nil || node!.status == .down {
                    stop(a, "node is down", &plan, &ctx)
                    needs.append((i, a))
                } else if node!.draining {
                    if ctx.migrations[group.name, default: 0] < group.migrate.maxParallel {
                        ctx.migrations[group.name, default: 0] += 1
                        stop(a, "node is draining", &plan, &ctx, desired: .evict)
                        needs.append((i, a))
                    }
                } else if a.jobVersion < ctx.input.jobVersion {
                    if Self.sameWork(ctx.input.previousVersions[a.jobVersion]?.groups.first { $0.name == group.name }, group) {
                        var u = a
                        u.jobVersion = ctx.input.jobVersion
                        plan.updates.append(u)
                    } else if canaryPhase {
                        if i < canaries { needs.append((i, nil)) }  // a canary beside it
                    } else if destructive < maxParallel {
                        destructive += 1
                        stop(a, "updated to job version \(ctx.input.jobVersion)", &plan, &ctx)
                        needs.append((i, a))
                    }
                }
            }
        }
        // Older live instances sharing a name with the one kept (left by a job that was a
        // system job before, for instance) are stopped.
        for a in existing where a.isLive {
            guard let i = Self.index(of: a.name), let kept = byIndex[i], kept.id != a.id else { continue }
            if (job.update?.canary ?? 0) > 0 && a.jobVersion < kept.jobVersion && kept.jobVersion == ctx.input.jobVersion {
                // An old instance beside a canary: kept until the version is promoted.
                if !canaryPhase { stop(a, "replaced by promoted canary \(kept.id.prefix(8))", &plan, &ctx) }
            } else {
                stop(a, "duplicate of \(a.name)", &plan, &ctx)
            }
        }
        // Instances beyond the count are stopped, highest index first.
        for (i, a) in byIndex where i >= group.count && a.isLive { stop(a, "count reduced to \(group.count)", &plan, &ctx) }
        for a in existing where Self.index(of: a.name) == nil && a.isLive { stop(a, "unexpected name", &plan, &ctx) }
        place(job, group, needs: needs, only: nil, &plan, &ctx)
    }

    /// System and sysbatch: one instance on every feasible node.
    private func reconcileSystem(_ job: Job, _ group: TaskGroup, _ existing: [Allocation], _ nodes: NodesByID,
                                 _ plan: inout Plan, _ ctx: inout Context) {
        var covered = Set<String>()
        for a in existing {
            let node = nodes[a.nodeID]
            if node == nil || node!.status == .down {
                if a.isLive { stop(a, "node is down", &plan, &ctx) }
                continue
            }
            if a.isLive && (node!.draining || node!.eligibility == .ineligible) && job.type == .system && node!.draining {
                stop(a, "node is draining", &plan, &ctx, desired: .evict)
                continue
            }
            if a.isLive || a.clientStatus == .complete || (job.type == .sysbatch && a.clientStatus != .lost) {
                if a.jobVersion < ctx.input.jobVersion && a.isLive && job.type == .system {
                    stop(a, "updated to job version \(ctx.input.jobVersion)", &plan, &ctx)
                    continue
                }
                covered.insert(a.nodeID)
            }
        }
        for node in ctx.input.nodes.sorted(by: { $0.id < $1.id }) where node.isSchedulable && !covered.contains(node.id) {
            place(job, group, needs: [(0, nil)], only: node.id, &plan, &ctx, quietIfInfeasible: true)
        }
    }

    /// Whether a group's new version waits for promotion: the job has canaries, the version is
    /// not promoted, and instances of an older version that runs something else are still live.
    public static func awaitingPromotion(_ job: Job, _ group: TaskGroup, _ existing: [Allocation], _ input: SchedulerInput) -> Bool {
        guard let u = job.update, u.canary > 0, !input.promoted else { return false }
        return existing.contains { a in
            a.isLive && a.desiredStatus == .run && a.jobVersion < input.jobVersion
                && !sameWork(input.previousVersions[a.jobVersion]?.groups.first { $0.name == group.name }, group)
        }
    }

    /// Healthy (running, every check passing) and, when the time is known, running for at
    /// least `minHealthyTime`.
    public static func settled(_ a: Allocation, _ minHealthyTime: Duration, now: Int64?) -> Bool {
        guard a.isHealthy else { return false }
        guard let now, let at = settlesAt(a, minHealthyTime) else { return true }
        return now >= at
    }

    /// When a running instance will have run for `minHealthyTime` (nil: its start is unknown).
    public static func settlesAt(_ a: Allocation, _ minHealthyTime: Duration) -> Int64? {
        a.lastStart.map { $0 + Int64(minHealthyTime / .milliseconds(1)) }
    }

    /// Whether an instance of `old` runs exactly what `new` asks (so a new version can be applied
    /// in place): the same tasks, ports, services and disk.
    static func sameWork(_ old: TaskGroup?, _ new: TaskGroup) -> Bool {
        guard let old else { return false }
        return old.tasks == new.tasks && old.ports == new.ports && old.services == new.services && old.ephemeralDiskMiB == new.ephemeralDiskMiB
    }

    /// Whether a failed instance may be replaced under the group's policy: always when
    /// unlimited; otherwise while fewer than `attempts` reschedules happened within the last
    /// `interval` — the failures along its chain of replacements (this version's), counted when
    /// they fell inside the window. Without a window (interval 0, time unknown, or a chain the
    /// state no longer holds in full), every reschedule of the chain counts.
    public static func mayReschedule(_ a: Allocation, _ p: ReschedulePolicy, now: Int64?, lookup: (String) -> Allocation?) -> Bool {
        if p.unlimited { return true }
        guard p.interval > .zero, let now else { return a.rescheduleAttempts < p.attempts }
        let since = now - Int64(p.interval / .milliseconds(1))
        var inWindow = 0, seen = 0
        var cursor = a.previousAllocation
        while let id = cursor, seen < a.rescheduleAttempts {
            guard let prev = lookup(id) else { return a.rescheduleAttempts < p.attempts }
            if prev.jobVersion < a.jobVersion { break }
            if prev.clientStatus == .failed {
                seen += 1
                if let at = prev.lastFinish, at < since {} else { inWindow += 1 }
            }
            cursor = prev.previousAllocation
        }
        return inWindow < p.attempts
    }

    private func canReschedule(_ a: Allocation, _ p: ReschedulePolicy, _ ctx: inout Context) -> Bool {
        if !p.unlimited && p.interval > .zero && ctx.byID.isEmpty {
            ctx.byID = Dictionary(ctx.input.allocations.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        }
        let byID = ctx.byID
        return Self.mayReschedule(a, p, now: ctx.input.now, lookup: { byID[$0] })
    }

    /// When a failed instance may be replaced: its tasks' last finish plus the policy's delay for
    /// the attempt it would be (constant, doubling, or Fibonacci-growing, capped at maxDelay).
    /// Nil when the failure time is unknown (replaced at once).
    public static func rescheduleDue(_ a: Allocation, _ p: ReschedulePolicy) -> Int64? {
        guard let failedAt = a.lastFinish else { return nil }
        return failedAt + Int64(rescheduleDelay(attempt: a.rescheduleAttempts, p) / .milliseconds(1))
    }

    /// The delay before reschedule number `attempt` (0 for the first).
    public static func rescheduleDelay(attempt: Int, _ p: ReschedulePolicy) -> Duration {
        let n = min(attempt, 62)
        let factor: Double
        switch p.delayFunction {
        case .constant: factor = 1
        case .exponential: factor = Double(1 << min(n, 40))
        case .fibonacci:
            var (a, b) = (1.0, 1.0)
            for _ in 0..<n { (a, b) = (b, a + b) }
            factor = a
        }
        let delay = p.delay * factor
        return p.delayFunction == .constant ? delay : min(delay, max(p.maxDelay, p.delay))
    }

    static func index(of name: String) -> Int? {
        guard let open = name.lastIndex(of: "["), name.hasSuffix("]") else { return nil }
        return Int(name[name.index(after: open)..<name.index(before: name.endIndex)])
    }

    private func stop(_ a: Allocation, _ why: String, _ plan: inout Plan, _ ctx: inout Context,
                      desired: Allocation.DesiredStatus = .stop) {
        var s = a
        s.desiredStatus = desired
        s.desiredDescription = why
        plan.stops.append(s)
        ctx.release(a)
    }

    // MARK: - Placement

    private func place(_ job: Job, _ group: TaskGroup, needs: [(index: Int, previous: Allocation?)], only: String?,
                       _ plan: inout Plan, _ ctx: inout Context, quietIfInfeasible: Bool = false) {
        guard !needs.isEmpty else { return }
        let ask = Ask(group)
        let key = Context.key(namespace: job.namespace, jobID: job.id, group: group.name)
        let nodes = ctx.input.nodes
        let onlySlot = only.flatMap { ctx.nodeIndex[$0] }
        let candidateCount = only == nil ? nodes.count : onlySlot == nil ? 0 : 1
        let constraints = job.constraints + group.constraints
        let distinctHosts = constraints.contains { $0.operator == .distinctHosts }
        let distinctProperty = constraints.filter { $0.operator == .distinctProperty }
        let affinities = job.affinities + group.affinities
        // What depends on the node alone is decided once per group and scheduling class (nodes
        // alike but for their identity), when the walk first meets one — or once per node when a
        // constraint or affinity reads what is unique to a node.
        let perNode = (constraints.map(\.attribute) + affinities.map(\.attribute)).contains(where: Feasibility.readsUniqueness)
        let classOf = ctx.input.cluster.classOf
        let memoSize = perNode ? nodes.count : ctx.input.cluster.classCount
        var known = [Bool](repeating: false, count: memoSize)
        var staticReasons = [FailureReason?](repeating: nil, count: memoSize)
        var affinityScores = [Double](repeating: 0, count: memoSize)
        func nodeOnly(_ i: Int) -> (reason: FailureReason?, affinity: Double) {
            let m = perNode ? i : classOf[i]
            if !known[m] {
                known[m] = true
                staticReasons[m] = Context.staticReason(nodes[i], job, constraints, ask)
                for a in affinities where Feasibility.holds(Constraint(attribute: a.attribute, operator: a.operator, value: a.value), on: nodes[i]) {
                    affinityScores[m] += Double(a.weight) / 100
                }
            }
            return (staticReasons[m], affinityScores[m])
        }
        var here = ctx.counts(of: key)
        var spreads = (job.spreads + group.spreads).map { SpreadState($0, nodes: nodes, here: here, groupCount: group.count) }
        var failure = PlacementFailure(group: group.name, unplaced: 0, nodesEvaluated: 0, reasons: [:])
        // Placing an instance changes only its node's score when nothing ties nodes together
        // (spreads, distinct hosts or properties): the nodes a walk ranked are kept, and the next
        // instance of the group re-scores just the node chosen last instead of walking again.
        let keepsRanking = keepsRankings && spreads.isEmpty && distinctProperty.isEmpty && !distinctHosts && onlySlot == nil && needs.count > 1
        var ranking: [(index: Int, score: Double)] = []
        var chosenAt: Int?
        for need in needs {
            if let quota = ctx.input.quota,
               let refusal = quota.refusal(job.namespace, used: ctx.quotaUsed, cpu: ask.cpu, memory: ask.memory) {
                failure.unplaced += 1
                failure.nodesEvaluated = 0
                failure.reasons = [.quota(refusal): 0]
                continue
            }
            var best: (index: Int, score: Double)?
            if let k = chosenAt {
                let last = ranking[k].index
                if ctx.room.resourceReason(last, ask) == nil {
                    ranking[k].score = ctx.room.fit(last, ask, algorithm) + nodeOnly(last).affinity - Double(here[last]) / Double(max(1, group.count))
                } else {
                    ranking.swapAt(k, ranking.count - 1)
                    ranking.removeLast()
                }
                chosenAt = Self.best(of: ranking, nodes)
                best = chosenAt.map { ranking[$0] }
            }
            // Why nodes were passed over, counted without hashing in the walk: node-only reasons
            // per class (or node), running out of CPU, memory or disk in three counters; the
            // rest (rare) by reason. Made into the failure's table only when nothing fit.
            var reasons: [FailureReason: Int] = [:]
            var staticHits = [Int](repeating: 0, count: memoSize)
            var short = [0, 0, 0]
            let start = candidateCount > maxCandidates ? ctx.cursor % candidateCount : 0
            // In a large cluster, blocks of 64 nodes none of which has the room are passed in one
            // step (the choice is the same). Their nodes are not counted in the reasons, so a
            // placement that finds nothing walks again in full to say why.
            let mayPassBlocks = onlySlot == nil && candidateCount > passBlocksFrom
            for passBlocks in best != nil ? [] : mayPassBlocks ? [true, false] : [false] {
                if !passBlocks && best != nil { break }
                ranking.removeAll(keepingCapacity: true)
                reasons = [:]
                staticHits = [Int](repeating: 0, count: memoSize)
                short = [0, 0, 0]
                var ranked = 0
                var step = 0
                let room = ctx.room
                while step < candidateCount {
                    if ranked >= maxCandidates { break }
                    let i = onlySlot ?? (start + step) % candidateCount
                    step += 1
                    if passBlocks, i & 63 == 0 || step == 1, room.blockCannotFit(i >> 6, ask) {
                        step += min((i | 63) + 1, candidateCount) - i - 1
                        continue
                    }
                    let (staticReason, affinity) = nodeOnly(i)
                    if staticReason != nil { staticHits[perNode ? i : classOf[i]] += 1; continue }
                    if distinctHosts && here[i] > 0 { reasons[.distinctHosts, default: 0] += 1; continue }
                    if !distinctProperty.isEmpty, let c = Self.firstRefused(distinctProperty, ctx, nodes[i], here) {
                        reasons[.distinctProperty(c.attribute), default: 0] += 1
                        continue
                    }
                    if let why = room.resourceReason(i, ask) {
                        switch why {
                        case .exhausted(.cpu): short[0] += 1
                        case .exhausted(.memory): short[1] += 1
                        case .exhausted(.disk): short[2] += 1
                        default: reasons[why, default: 0] += 1
                        }
                        continue
                    }
                    ranked += 1
                    var score = room.fit(i, ask, algorithm) + affinity - Double(here[i]) / Double(max(1, group.count))
                    for sp in spreads { score += sp.score(i) }
                    if keepsRanking { ranking.append((i, score)) }
                    if best == nil || score > best!.score || (score == best!.score && nodes[i].id < nodes[best!.index].id) { best = (i, score) }
                }
            }
            ctx.cursor += max(1, candidateCount / 16)
            if keepsRanking, chosenAt == nil, let b = best { chosenAt = ranking.firstIndex { $0.index == b.index } }
            guard let chosen = best else {
                failure.unplaced += 1
                failure.nodesEvaluated = candidateCount
                for (m, n) in staticHits.enumerated() where n > 0 { reasons[staticReasons[m]!, default: 0] += n }
                for (k, r) in [FailureReason.Resource.cpu, .memory, .disk].enumerated() where short[k] > 0 { reasons[.exhausted(r), default: 0] += short[k] }
                failure.reasons = reasons
                continue
            }
            let node = nodes[chosen.index]
            var a = Allocation(id: newID(), jobID: job.id, jobVersion: ctx.input.jobVersion, group: group.name,
                               name: "\(job.id).\(group.name)[\(need.index)]", nodeID: node.id,
                               cpuMillicores: ask.cpu, memoryMiB: ask.memory, diskMiB: ask.disk)
            a.namespace = job.namespace
            a.ports = ctx.assignPorts(group, on: chosen.index)
            if let prev = need.previous {
                a.previousAllocation = prev.id
                // A new job version starts its reschedule count afresh.
                a.rescheduleAttempts = prev.jobVersion < ctx.input.jobVersion ? 0
                    : prev.clientStatus == .failed ? prev.rescheduleAttempts + 1 : prev.rescheduleAttempts
            }
            plan.placements.append(a)
            ctx.take(a)
            here[chosen.index] += 1
            for k in spreads.indices { spreads[k].placed(on: chosen.index) }
        }
        if failure.unplaced > 0 && !(quietIfInfeasible && failure.reasons.keys.allSatisfy { !$0.isExhaustion }) {
            plan.failures.append(failure)
        }
    }
}

extension Scheduler {
    /// Where in `ranking` the node a walk would choose is: highest score, then the name that
    /// sorts first.
    static func best(of ranking: [(index: Int, score: Double)], _ nodes: [Node]) -> Int? {
        var b: Int?
        for (k, r) in ranking.enumerated() {
            guard let cur = b else { b = k; continue }
            let s = ranking[cur]
            if r.score > s.score || (r.score == s.score && nodes[r.index].id < nodes[s.index].id) { b = k }
        }
        return b
    }

    /// The first distinct_property constraint that placing on `node` would break (no closure
    /// over the context in the walk's inner loop: that copied it for every node ranked).
    static func firstRefused(_ constraints: [Constraint], _ ctx: Context, _ node: Node, _ here: [Int]) -> Constraint? {
        for c in constraints where !ctx.distinctPropertyAllows(c, node, here) { return c }
        return nil
    }
}

/// What one instance of a group asks of a node.
struct Ask {
    var cpu: Int
    var memory: Int
    var disk: Int
    var drivers: Set<String>
    var staticPorts: [Int]

    init(_ g: TaskGroup) {
        cpu = g.tasks.reduce(0) { $0 + $1.resources.cpuMillicores }
        memory = g.tasks.reduce(0) { $0 + $1.resources.memoryMiB }
        disk = g.diskMiB
        drivers = Set(g.tasks.map(\.driver.rawValue))
        staticPorts = g.ports.compactMap(\.staticPort)
    }
}

/// Nodes by id, read from the cluster's slots (no dictionary built per evaluation).
struct NodesByID {
    let cluster: ClusterUse
    init(_ cluster: ClusterUse) { self.cluster = cluster }
    subscript(id: String) -> Node? { cluster.slot[id].map { cluster.nodes[$0] } }
}

/// The cluster as the plan so far leaves it: resources and ports in use per node (by slot, so
/// the inner loop does no hashing of node names), instances of the job's groups per node.
/// Starts from what the state keeps (``ClusterUse``) and changes only by what this plan places
/// and stops.
struct Context {
    let input: SchedulerInput
    let nodeIndex: [String: Int]
    /// What each node has in use and free, this plan counted.
    private(set) var room: Room
    /// (job, group) → node index → live instances.
    var instances: [String: [Int: Int]] = [:]
    var migrations: [String: Int] = [:]
    /// The job's allocations by id, built when a reschedule window needs a chain walked (a
    /// replacement is always of the same job).
    var byID: [String: Allocation] = [:]
    /// Where the next bounded walk over a large cluster starts.
    var cursor = 0
    /// What the job's namespace holds, for its quota.
    var quotaUsed = Quota.Usage()

    init(input: SchedulerInput) {
        self.input = input
        nodeIndex = input.cluster.slot
        room = Room(input.cluster)
        quotaUsed = input.job.map { input.cluster.usage(of: $0.namespace) } ?? Quota.Usage()
        for a in input.allocations where a.isLive && isOfScheduledJob(a) {
            guard let i = nodeIndex[a.nodeID] else { continue }
            instances[Self.key(a), default: [:]][i, default: 0] += 1
        }
    }

    static func key(namespace: String, jobID: String, group: String) -> String { namespace + "/" + jobID + "/" + group }
    static func key(_ a: Allocation) -> String { key(namespace: a.namespace, jobID: a.jobID, group: a.group) }

    /// Counts a placement in.
    mutating func take(_ a: Allocation) { add(a, 1) }

    /// Counts a live allocation that this plan stops out.
    mutating func release(_ a: Allocation) {
        guard a.isLive else { return }
        add(a, -1)
    }

    private mutating func add(_ a: Allocation, _ sign: Int) {
        if a.namespace == input.job?.namespace { quotaUsed.add(cpu: a.cpuMillicores, memory: a.memoryMiB, sign: sign) }
        guard let i = nodeIndex[a.nodeID] else { return }
        room.add(a, sign, on: i)
        if isOfScheduledJob(a) { instances[Self.key(a), default: [:]][i, default: 0] += sign }
    }

    /// Instances per node are read only for the job being scheduled (spreads, distinct hosts).
    private func isOfScheduledJob(_ a: Allocation) -> Bool { a.jobID == input.job?.id && a.namespace == input.job?.namespace }

    /// Instances of a group per node index.
    func counts(of key: String) -> [Int] {
        var out = Array(repeating: 0, count: input.nodes.count)
        for (i, c) in instances[key] ?? [:] { out[i] = c }
        return out
    }

    /// Why a node can never take this group (whatever else is placed), or nil.
    static func staticReason(_ node: Node, _ job: Job, _ constraints: [Constraint], _ ask: Ask) -> FailureReason? {
        if node.status == .down { return .nodeDown }
        if node.draining { return .nodeDraining }
        if node.eligibility == .ineligible { return .nodeIneligible }
        if !job.datacenters.contains("*") && !job.datacenters.contains(node.datacenter) { return .datacenter(node.datacenter) }
        // (Agents offer raw_exec only when told to: its description says how.)
        for d in ask.drivers.sorted() where !node.drivers.contains(d) { return .missingDriver(d) }
        for c in constraints where c.operator != .distinctHosts && c.operator != .distinctProperty {
            if !Feasibility.holds(c, on: node) { return .constraint(Feasibility.describe(c)) }
        }
        // Capacity is not node-only here (it is not part of the scheduling class): whether the
        // instance fits is `resourceReason`'s, node by node.
        return nil
    }

    func distinctPropertyAllows(_ c: Constraint, _ node: Node, _ here: [Int]) -> Bool {
        let limit = Int(c.value) ?? 1
        let value = Feasibility.resolve(c.attribute, on: node)
        var used = 0
        for (i, n) in input.nodes.enumerated() where here[i] > 0 && Feasibility.resolve(c.attribute, on: n) == value { used += here[i] }
        return used < limit
    }

    /// Dynamic ports from 20000–32000 not in use on the node, static ones as asked.
    mutating func assignPorts(_ group: TaskGroup, on i: Int) -> [String: Int] {
        var out: [String: Int] = [:]
        var used = room.ports(i)
        for p in group.ports {
            if let s = p.staticPort { out[p.label] = s; used.insert(s); continue }
            var candidate = 20000
            while used.contains(candidate) && candidate < 32000 { candidate += 1 }
            out[p.label] = candidate
            used.insert(candidate)
        }
        return out
    }
}

/// What each node has in use and free as the plan so far leaves it: the cluster's use, and what
/// this plan changed on the slots it touched (a bit per slot says which) — a plan touches a few
/// nodes, so the cluster's arrays are never copied. Kept apart from the context so the walk's
/// inner loop reads a small value: calling the large context's methods there copied all of it
/// for every node visited (a tenth of the leader's time at a million allocations).
struct Room {
    private let base: [ClusterUse.NodeUse]
    private let capacity: [ClusterUse.NodeUse]
    private let blockFree: [ClusterUse.NodeUse]
    private let clusterPorts: [Int: [Int: Int]]
    private var changed: [Int: ClusterUse.NodeUse] = [:]
    /// One bit per slot; a word covers one block of ``ClusterUse/blockFree`` (64 slots).
    private var touched: [UInt64]
    /// Ports in use on the slots this plan touched (the rest: as the cluster's use has them).
    private var portsTouched: [Int: Set<Int>] = [:]

    init(_ cluster: ClusterUse) {
        base = cluster.use
        capacity = cluster.capacity
        blockFree = cluster.blockFree
        clusterPorts = cluster.ports
        touched = Array(repeating: 0, count: (cluster.use.count + 63) / 64)
    }

    /// What is used on slot `i`, this plan's placements and stops counted.
    @inline(__always) func use(_ i: Int) -> ClusterUse.NodeUse {
        touched[i >> 6] & (1 << UInt64(i & 63)) == 0 ? base[i] : changed[i]!
    }

    /// No node of block `b` (slots 64b…64b+63) has the room for `ask`: none of them was touched
    /// by this plan and the most any has free of some resource is short of it.
    @inline(__always) func blockCannotFit(_ b: Int, _ ask: Ask) -> Bool {
        guard touched[b] == 0 else { return false }
        let f = blockFree[b]
        return f.cpuMillicores < ask.cpu || f.memoryMiB < ask.memory || f.diskMiB < ask.disk
    }

    /// Ports in use on slot `i`.
    func ports(_ i: Int) -> Set<Int> { portsTouched[i] ?? Set((clusterPorts[i] ?? [:]).keys) }

    mutating func add(_ a: Allocation, _ sign: Int, on i: Int) {
        var u = use(i)
        u.cpuMillicores += sign * a.cpuMillicores
        u.memoryMiB += sign * a.memoryMiB
        u.diskMiB += sign * a.diskMiB
        changed[i] = u
        touched[i >> 6] |= 1 << UInt64(i & 63)
        if !a.ports.isEmpty {
            var p = ports(i)
            if sign > 0 { p.formUnion(a.ports.values) } else { p.subtract(a.ports.values) }
            portsTouched[i] = p
        }
    }

    func resourceReason(_ i: Int, _ ask: Ask) -> FailureReason? {
        let node = capacity[i]
        let u = use(i)
        if u.cpuMillicores + ask.cpu > node.cpuMillicores { return .exhausted(.cpu) }
        if u.memoryMiB + ask.memory > node.memoryMiB { return .exhausted(.memory) }
        if u.diskMiB + ask.disk > node.diskMiB { return .exhausted(.disk) }
        if !ask.staticPorts.isEmpty {
            let held = ports(i)
            for p in ask.staticPorts where held.contains(p) { return .portInUse(p) }
        }
        return nil
    }

    /// Bin-packing: how full the node would be (CPU and memory alike); spread: how empty.
    func fit(_ i: Int, _ ask: Ask, _ algorithm: SchedulingAlgorithm) -> Double {
        let node = capacity[i]
        let u = use(i)
        let f = (Double(u.cpuMillicores + ask.cpu) / Double(max(1, node.cpuMillicores)) + Double(u.memoryMiB + ask.memory) / Double(max(1, node.memoryMiB))) / 2
        return algorithm == .binpack ? f : 1 - f
    }
}

/// How one spread stands while a group is placed: each node's value of the attribute (as a
/// small integer) and the instances per value, kept up to date as instances are placed, so
/// scoring a node is a few array reads.
struct SpreadState {
    let weight: Double
    let groupCount: Int
    /// Value number per node index; -1 when the node lacks the attribute.
    var valueOf: [Int]
    var perValue: [Int]
    /// Desired share per value number (nil = no target: spread evenly).
    var desired: [Double?]
    let hasTargets: Bool
    var total = 0

    init(_ s: Spread, nodes: [Node], here: [Int], groupCount: Int) {
        weight = Double(s.weight) / 100
        self.groupCount = max(1, groupCount)
        var numbers: [String: Int] = [:]
        valueOf = nodes.map { n in
            guard let v = Feasibility.resolve(s.attribute, on: n) else { return -1 }
            if let k = numbers[v] { return k }
            numbers[v] = numbers.count
            return numbers.count - 1
        }
        perValue = Array(repeating: 0, count: numbers.count)
        hasTargets = !s.targets.isEmpty
        desired = Array(repeating: nil, count: numbers.count)
        for t in s.targets { if let k = numbers[t.value] { desired[k] = Double(t.percent) / 100 * Double(max(1, groupCount)) } }
        for (i, c) in here.enumerated() where c > 0 {
            if valueOf[i] >= 0 { perValue[valueOf[i]] += c }
            total += c
        }
    }

    mutating func placed(on i: Int) {
        if valueOf[i] >= 0 { perValue[valueOf[i]] += 1 }
        total += 1
    }

    func score(_ i: Int) -> Double {
        let v = valueOf[i]
        guard v >= 0 else { return -weight }
        let have = Double(perValue[v])
        if let d = desired[v] { return weight * (d - have) / max(1, d) }
        guard !hasTargets else { return 0 }
        let even = Double(total + 1) / Double(max(1, perValue.count))
        return weight * (even - have) / max(1, even)
    }
}
