import CaravanModel

/// What the scheduler sees: the job (nil if it was purged), its current version, and the
/// cluster's nodes and allocations as the replicated state has them.
public struct SchedulerInput: Sendable {
    public var job: Job?
    public var jobVersion: Int
    public var jobStopped: Bool
    public var nodes: [Node]
    /// Every allocation in the cluster (the job's own and others', which hold resources).
    public var allocations: [Allocation]

    public init(job: Job?, jobVersion: Int, jobStopped: Bool, nodes: [Node], allocations: [Allocation]) {
        self.job = job
        self.jobVersion = jobVersion
        self.jobStopped = jobStopped
        self.nodes = nodes
        self.allocations = allocations
    }
}

/// Why some instances of a group could not be placed, by reason, for `job status` and `job plan`.
public struct PlacementFailure: Sendable, Equatable, CustomStringConvertible {
    public var group: String
    public var unplaced: Int
    public var nodesEvaluated: Int
    /// Reason → nodes it ruled out ("memory exhausted", "constraint ${attr.kernel.name} = linux", …).
    public var reasons: [String: Int]

    public var description: String {
        let why = reasons.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }
            .map { r in
                r.key.hasSuffix("exhausted") ? "\(r.key) on \(r.value) node\(r.value == 1 ? "" : "s")" : "\(r.key) filtered \(r.value)"
            }
        return "\(unplaced) of group \(group) not placed: " + (why.isEmpty ? "no nodes" : why.joined(separator: ", ")) + " (\(nodesEvaluated) nodes evaluated)"
    }
}

/// What an evaluation decided: allocations to create, allocations to stop, and what could not
/// be placed. The leader's plan applier checks it against the latest state before committing.
public struct Plan: Sendable, Equatable {
    public var placements: [Allocation] = []
    /// Existing allocations with their new desired status (stop or evict) and a reason.
    public var stops: [Allocation] = []
    public var failures: [PlacementFailure] = []
    public init() {}
    public var isEmpty: Bool { placements.isEmpty && stops.isEmpty }
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
        let nodesByID = Dictionary(uniqueKeysWithValues: input.nodes.map { ($0.id, $0) })
        for group in job.groups {
            let existing = mine.filter { $0.group == group.name && $0.desiredStatus == .run }
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
    private func reconcileCount(_ job: Job, _ group: TaskGroup, _ existing: [Allocation], _ nodes: [String: Node],
                                _ plan: inout Plan, _ ctx: inout Context) {
        var byIndex: [Int: Allocation] = [:]
        var needs: [(index: Int, previous: Allocation?)] = []
        for a in existing.sorted(by: { $0.createIndex > $1.createIndex }) {
            guard let i = Self.index(of: a.name) else { continue }
            if byIndex[i] == nil { byIndex[i] = a }
        }
        var destructive = 0
        let maxParallel = job.update.map { max(1, $0.maxParallel) } ?? Int.max
        for i in 0..<group.count {
            guard let a = byIndex[i] else { needs.append((i, nil)); continue }
            switch a.clientStatus {
            case .complete where job.type == .batch:
                continue  // batch work that finished is not re-run
            case .complete:
                needs.append((i, a))
            case .lost:
                needs.append((i, a))  // lost allocations are always replaced
            case .failed:
                if canReschedule(a, group.reschedule) { needs.append((i, a)) }
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
                } else if a.jobVersion < ctx.input.jobVersion && destructive < maxParallel {
                    destructive += 1
                    stop(a, "updated to job version \(ctx.input.jobVersion)", &plan, &ctx)
                    needs.append((i, a))
                }
            }
        }
        // Instances beyond the count are stopped, highest index first.
        for (i, a) in byIndex where i >= group.count && a.isLive { stop(a, "count reduced to \(group.count)", &plan, &ctx) }
        for a in existing where Self.index(of: a.name) == nil && a.isLive { stop(a, "unexpected name", &plan, &ctx) }
        place(job, group, needs: needs, only: nil, &plan, &ctx)
    }

    /// System and sysbatch: one instance on every feasible node.
    private func reconcileSystem(_ job: Job, _ group: TaskGroup, _ existing: [Allocation], _ nodes: [String: Node],
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

    private func canReschedule(_ a: Allocation, _ p: ReschedulePolicy) -> Bool {
        p.unlimited || a.rescheduleAttempts < p.attempts
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
        var failure = PlacementFailure(group: group.name, unplaced: 0, nodesEvaluated: 0, reasons: [:])
        var spreads = (job.spreads + group.spreads).map { SpreadState($0, job: job, group: group, ctx: ctx) }
        for need in needs {
            var best: (node: Node, score: Double)?
            var reasons: [String: Int] = [:]
            var evaluated = 0
            for node in ctx.input.nodes where only == nil || node.id == only {
                evaluated += 1
                if let why = ctx.infeasible(node, job, group, ask) {
                    reasons[why, default: 0] += 1
                    continue
                }
                let s = ctx.score(node, job, group, ask, algorithm, spreads)
                if best == nil || s > best!.score || (s == best!.score && node.id < best!.node.id) { best = (node, s) }
            }
            guard let chosen = best else {
                failure.unplaced += 1
                failure.nodesEvaluated = evaluated
                failure.reasons = reasons
                continue
            }
            var a = Allocation(id: newID(), jobID: job.id, jobVersion: ctx.input.jobVersion, group: group.name,
                               name: "\(job.id).\(group.name)[\(need.index)]", nodeID: chosen.node.id,
                               cpuMillicores: ask.cpu, memoryMiB: ask.memory, diskMiB: ask.disk)
            a.namespace = job.namespace
            a.ports = ctx.assignPorts(group, on: chosen.node.id)
            if let prev = need.previous {
                a.previousAllocation = prev.id
                a.rescheduleAttempts = prev.clientStatus == .failed ? prev.rescheduleAttempts + 1 : prev.rescheduleAttempts
            }
            plan.placements.append(a)
            ctx.take(a)
            for i in spreads.indices { spreads[i].placed(on: chosen.node.id) }
        }
        if failure.unplaced > 0 && !(quietIfInfeasible && failure.reasons.keys.allSatisfy { !$0.hasSuffix("exhausted") }) {
            plan.failures.append(failure)
        }
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
        disk = g.ephemeralDiskMiB
        drivers = Set(g.tasks.map(\.driver.rawValue))
        staticPorts = g.ports.compactMap(\.staticPort)
    }
}

/// The cluster as the plan so far leaves it: resources and ports in use per node, instances
/// of each group per node and per attribute value.
struct Context {
    let input: SchedulerInput
    var cpu: [String: Int] = [:]
    var memory: [String: Int] = [:]
    var disk: [String: Int] = [:]
    var ports: [String: Set<Int>] = [:]
    /// (job, group) → node → live instances.
    var instances: [String: [String: Int]] = [:]
    var migrations: [String: Int] = [:]

    init(input: SchedulerInput) {
        self.input = input
        for a in input.allocations where a.isLive { take(a) }
    }

    static func key(_ a: Allocation) -> String { a.namespace + "/" + a.jobID + "/" + a.group }

    mutating func take(_ a: Allocation) {
        cpu[a.nodeID, default: 0] += a.cpuMillicores
        memory[a.nodeID, default: 0] += a.memoryMiB
        disk[a.nodeID, default: 0] += a.diskMiB
        ports[a.nodeID, default: []].formUnion(a.ports.values)
        instances[Self.key(a), default: [:]][a.nodeID, default: 0] += 1
    }

    mutating func release(_ a: Allocation) {
        guard a.isLive else { return }
        cpu[a.nodeID, default: 0] -= a.cpuMillicores
        memory[a.nodeID, default: 0] -= a.memoryMiB
        disk[a.nodeID, default: 0] -= a.diskMiB
        ports[a.nodeID, default: []].subtract(a.ports.values)
        instances[Self.key(a), default: [:]][a.nodeID, default: 0] -= 1
    }

    /// The first reason the node cannot take one more instance, or nil.
    func infeasible(_ node: Node, _ job: Job, _ group: TaskGroup, _ ask: Ask) -> String? {
        if node.status == .down { return "node down" }
        if node.draining { return "node draining" }
        if node.eligibility == .ineligible { return "node ineligible" }
        if !job.datacenters.contains("*") && !job.datacenters.contains(node.datacenter) { return "datacenter \(node.datacenter)" }
        for d in ask.drivers.sorted() where !node.drivers.contains(d) { return "missing driver \(d)" }
        for c in job.constraints + group.constraints {
            switch c.operator {
            case .distinctHosts:
                let key = job.namespace + "/" + job.id + "/" + group.name
                if (instances[key]?[node.id] ?? 0) > 0 { return Feasibility.describe(c) }
            case .distinctProperty:
                let limit = Int(c.value) ?? 1
                let value = Feasibility.resolve(c.attribute, on: node)
                let key = job.namespace + "/" + job.id + "/" + group.name
                let used = input.nodes.filter { Feasibility.resolve(c.attribute, on: $0) == value }
                    .reduce(0) { $0 + (instances[key]?[$1.id] ?? 0) }
                if used >= limit { return "constraint distinct_property \(c.attribute)" }
            default:
                if !Feasibility.holds(c, on: node) { return Feasibility.describe(c) }
            }
        }
        if (cpu[node.id] ?? 0) + ask.cpu > node.cpuMillicores { return "cpu exhausted" }
        if (memory[node.id] ?? 0) + ask.memory > node.memoryMiB { return "memory exhausted" }
        if (disk[node.id] ?? 0) + ask.disk > node.diskMiB { return "disk exhausted" }
        for p in ask.staticPorts where ports[node.id]?.contains(p) == true { return "port \(p) in use" }
        return nil
    }

    /// Higher is better: bin-packing (or spreading) fit, then affinities, spreads, and a
    /// penalty for instances of the same group already on the node.
    func score(_ node: Node, _ job: Job, _ group: TaskGroup, _ ask: Ask, _ algorithm: SchedulingAlgorithm, _ spreads: [SpreadState]) -> Double {
        let cpuFill = Double((cpu[node.id] ?? 0) + ask.cpu) / Double(max(1, node.cpuMillicores))
        let memFill = Double((memory[node.id] ?? 0) + ask.memory) / Double(max(1, node.memoryMiB))
        let fit = (cpuFill + memFill) / 2
        var score = algorithm == .binpack ? fit : 1 - fit
        for a in job.affinities + group.affinities {
            let c = Constraint(attribute: a.attribute, operator: a.operator, value: a.value)
            if Feasibility.holds(c, on: node) { score += Double(a.weight) / 100 }
        }
        let key = job.namespace + "/" + job.id + "/" + group.name
        let here = instances[key]?[node.id] ?? 0
        score -= Double(here) / Double(max(1, group.count))
        for sp in spreads { score += sp.score(node.id) }
        return score
    }

    /// Dynamic ports from 20000–32000 not in use on the node, static ones as asked.
    mutating func assignPorts(_ group: TaskGroup, on node: String) -> [String: Int] {
        var out: [String: Int] = [:]
        var used = ports[node] ?? []
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

/// How one spread stands while a group is placed: each node's value of the attribute and the
/// instances per value, kept up to date as instances are placed (so scoring a node is O(1)).
struct SpreadState {
    let spread: Spread
    let groupCount: Int
    var valueOf: [String: String] = [:]
    var perValue: [String: Int] = [:]
    var total = 0
    let distinctValues: Int

    init(_ s: Spread, job: Job, group: TaskGroup, ctx: Context) {
        spread = s
        groupCount = max(1, group.count)
        for n in ctx.input.nodes { if let v = Feasibility.resolve(s.attribute, on: n) { valueOf[n.id] = v } }
        distinctValues = max(1, Set(valueOf.values).count)
        let key = job.namespace + "/" + job.id + "/" + group.name
        for (node, count) in ctx.instances[key] ?? [:] where count > 0 {
            if let v = valueOf[node] { perValue[v, default: 0] += count }
            total += count
        }
    }

    mutating func placed(on node: String) {
        if let v = valueOf[node] { perValue[v, default: 0] += 1 }
        total += 1
    }

    func score(_ node: String) -> Double {
        let w = Double(spread.weight) / 100
        guard let value = valueOf[node] else { return -w }
        let have = Double(perValue[value] ?? 0)
        if let target = spread.targets.first(where: { $0.value == value }) {
            let desired = Double(target.percent) / 100 * Double(groupCount)
            return w * (desired - have) / max(1, desired)
        }
        guard spread.targets.isEmpty else { return 0 }
        let even = Double(total + 1) / Double(distinctValues)
        return w * (even - have) / max(1, even)
    }
}
