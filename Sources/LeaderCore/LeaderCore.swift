import CaravanModel
import ClusterState
import Scheduler
import HashTreeCollections
import Synchronization

/// What the leader's core needs from the process around it: the replicated state as it is now,
/// a way to propose a command to the log, and a place for log lines. The agent's shell proposes
/// through Raft; the simulation, `job plan` and what-if apply to a copy of the state in memory.
public protocol LeaderShell {
    /// The replicated state as it is now (every command this pass proposed that was applied shows in it).
    func currentState() async -> ClusterState
    /// Proposes a command; true once the state applied it, false when it was refused or not committed.
    func propose(_ command: Command, _ what: String) async -> Bool
    /// Something worth a line in the agent's log.
    func note(_ level: LeaderCore.Level, _ message: String, _ metadata: [String: String])
    /// Proposes several commands at once (the log batches them); each answer as ``propose(_:_:)``
    /// gives it. By default one after the other.
    func proposeAll(_ commands: [(Command, String)]) async -> [Bool]
    /// How many evaluations the core decides before it waits for their plans to commit: each
    /// is scheduled against the state with the plans decided before it placed (1: one at a time).
    var pipelineDepth: Int { get }
}

extension LeaderShell {
    public func proposeAll(_ commands: [(Command, String)]) async -> [Bool] {
        var out: [Bool] = []
        for (c, what) in commands { out.append(await propose(c, what)) }
        return out
    }

    public var pipelineDepth: Int { 1 }
}

extension LeaderShell where Self: Sendable {
    /// Proposes every command at once (a shell over Raft: the log batches them into one append)
    /// and gives the answers in the commands' order.
    public func proposeTogether(_ commands: [(Command, String)]) async -> [Bool] {
        await withTaskGroup(of: (Int, Bool).self) { g in
            for (i, (c, what)) in commands.enumerated() { g.addTask { (i, await self.propose(c, what)) } }
            var out = Array(repeating: false, count: commands.count)
            for await (i, ok) in g { out[i] = ok }
            return out
        }
    }
}

/// The leader's duties towards the cluster state, run once per pass — after every commit and at
/// least every 200 ms while an agent leads — by whatever shell holds it:
///
/// 1. Nodes: an agent that gossip shows alive is registered (`upsertNode`) when it is new or its
///    capacity, address or tags changed; one that gossip declares dead or gone is marked down,
///    which marks its allocations lost.
/// 2. Periodic jobs: each whose next cron time has come launches a child batch job; finished
///    launches beyond the newest few are purged.
/// 3. Jobs: what changed in the state (a job registered, an instance failed, a node died,
///    capacity freed) becomes evaluations in the broker (`EvalFeed`, `EvalBroker`); each is
///    reconciled by the scheduler against the latest state; a plan that changes something is
///    checked by the plan applier (never over-committing a node or a quota) and committed with
///    the evaluations recording what was done and what could not be placed.
/// 4. Rollouts: versions marked stable, canaries promoted, failed versions reverted.
///
/// It reads no clock and makes no ids of its own (both come from `Environment`), imports nothing
/// beyond the cluster state, the scheduler and the model, and holds only what a new leader may
/// lose: the broker lives in memory, a new leader starts by evaluating every job, and every job
/// is evaluated once a minute besides, so whatever was missed is redone.
public struct LeaderCore: Sendable {
    public enum Level: Sendable { case debug, info, warning }

    /// The clock, the id source and the time-zone rules the core reads through.
    public struct Environment: Sendable {
        /// Wall-clock Unix milliseconds.
        public var now: @Sendable () -> Int64
        public var newID: @Sendable () -> String
        /// A named time zone's rules, and whether they were read for this call (said once).
        public var zone: @Sendable (String) -> (rules: ZoneRules?, firstLook: Bool)

        public init(now: @escaping @Sendable () -> Int64, newID: @escaping @Sendable () -> String,
                    zone: @escaping @Sendable (String) -> (rules: ZoneRules?, firstLook: Bool) = { _ in (nil, false) }) {
            self.now = now
            self.newID = newID
            self.zone = zone
        }
    }

    /// An agent as gossip sees it: alive (or suspect) with the node it describes, or not.
    public struct Member: Sendable {
        public var name: String
        public var alive: Bool
        /// The node its metadata describes (nil when it has none or it could not be read).
        public var node: Node?
        /// How gossip sees it, for the log.
        public var status: String

        public init(name: String, alive: Bool, node: Node?, status: String) {
            self.name = name
            self.alive = alive
            self.node = node
            self.status = status
        }
    }

    /// What a pass did, for the shell's metrics.
    public struct Report: Sendable, Equatable {
        public var evaluations = 0
        public var placements = 0
        public var planRejections = 0
        public var evaluationsGivenUp = 0
        /// Instances not placed, by the class of the reason (`reasonClass`).
        public var failedPlacements: [String: Int] = [:]
        public var broker = EvalBroker.Stats()
        public init() {}
    }

    /// The last failure description recorded per job, so a job that cannot be placed does not
    /// write the same evaluation every pass.
    var lastFailures: [ClusterState.JobKey: [String: String]] = [:]
    /// The evaluations waiting for the scheduler, and what feeds them.
    public var broker = EvalBroker()
    public var feed = EvalFeed()

    public init() {}

    /// One pass. `members`: what gossip shows (nil: leave nodes as they are).
    public mutating func pass(_ shell: some LeaderShell, members: [Member]?, _ env: Environment) async -> Report {
        if let members { await syncNodes(shell, members) }
        await launchPeriodicJobs(shell, env)
        let report = await reconcileJobs(shell, env)
        for (c, what) in Self.rolloutActions(await shell.currentState(), now: env.now()) {
            shell.note(.info, what, [:])
            _ = await shell.propose(c, what)
        }
        return report
    }

    // MARK: - Nodes

    func syncNodes(_ shell: some LeaderShell, _ members: [Member]) async {
        let state = await shell.currentState()
        for m in members {
            let existing = state.nodes[m.name]
            if m.alive, let n = m.node {
                let changed = existing.map { e in
                    e.status != .ready || e.address != n.address || e.cpuMillicores != n.cpuMillicores || e.memoryMiB != n.memoryMiB
                        || e.diskMiB != n.diskMiB || e.meta != n.meta || e.attributes != n.attributes || e.drivers != n.drivers
                } ?? true
                if changed { _ = await shell.propose(.upsertNode(n), "register node \(m.name)") }
            } else if !m.alive, let e = existing, e.status == .ready {
                shell.note(.info, "marking node down", ["node": m.name, "gossip": m.status])
                _ = await shell.propose(.nodeStatus(id: m.name, status: .down), "mark node \(m.name) down")
            }
        }
    }

    // MARK: - Jobs

    /// Feeds the broker with what changed since the last pass, then works through it: each
    /// delivered evaluation is scheduled and its plan committed (acknowledged), or handed back
    /// when the commit fails (redelivered later; given up after three deliveries and recorded as
    /// failed). Evaluations that could not place everything wait in the broker until capacity
    /// grows.
    mutating func reconcileJobs(_ shell: some LeaderShell, _ env: Environment) async -> Report {
        var report = Report()
        let fed = feed.changes(in: await shell.currentState(), now: env.now(), newID: env.newID)
        for e in fed.evaluations { broker.enqueue(e) }
        if fed.unblock { _ = broker.unblock() }
        let depth = max(1, shell.pipelineDepth)
        while true {
            // Up to `depth` evaluations decided against the state as the plans decided before
            // them leave it, then their commands proposed together.
            var state = await shell.currentState()
            var batch: [(delivery: EvalBroker.Delivery, decision: Decision)] = []
            while batch.count < depth, let d = broker.dequeue(now: env.now()) {
                let decision = decide(d.evaluation, state, env, &report)
                if batch.count + 1 < depth, case .commit(.applyPlan(let allocations, _), _, _) = decision {
                    // What it places and keeps running counts for the next decisions; what it
                    // stops frees nothing until it is committed (a plan that fails to commit
                    // must not have made room for another).
                    _ = state.apply(.applyPlan(allocations: allocations.filter { $0.desiredStatus == .run }, evaluations: []),
                                    index: state.lastIndex + 1)
                }
                batch.append((d, decision))
            }
            if batch.isEmpty { break }
            let commands = batch.compactMap { item -> (Command, String)? in
                if case .commit(let c, let what, _) = item.decision { return (c, what) }
                return nil
            }
            var answers = await shell.proposeAll(commands)[...]
            // Only the allocations table (a persistent trie) is kept: a whole state copy held
            // while the store applies the next commands would make it copy its plain tables
            // (every node) once per batch.
            let committedAllocations = commands.isEmpty ? state.allocations : await shell.currentState().allocations
            for (d, decision) in batch {
                var ok = true
                if case .commit(_, _, let after) = decision {
                    ok = answers.popFirst() ?? false
                    if ok, let after { committed(after, committedAllocations, shell, env, &report) }
                }
                let id = d.evaluation.id
                do {
                    if ok {
                        try broker.ack(id, token: d.token)
                    } else {
                        shell.note(.info, "evaluation handed back", ["evaluation": id, "job": d.evaluation.jobID, "attempt": "\(d.attempt)"])
                        try broker.nack(id, token: d.token, now: env.now())
                    }
                } catch {
                    shell.note(.warning, "evaluation answered too late", ["evaluation": id, "error": "\(error)"])
                }
            }
        }
        let failed = broker.takeFailed()
        if !failed.isEmpty {
            shell.note(.warning, "evaluations given up", ["evaluations": "\(failed.map(\.id))"])
            report.evaluationsGivenUp += failed.count
            _ = await shell.propose(.upsertEvaluations(failed), "record the evaluations given up")
        }
        report.broker = broker.stats
        return report
    }

    /// A job scheduled against a state: the scheduler's plan, what the plan applier accepts of
    /// it, and the input both read. The one pipeline the leader, `job plan` and what-if share.
    public struct Scheduled: Sendable {
        public var input: SchedulerInput
        public var plan: Plan
        public var verdict: PlanApplier.Verdict
    }

    /// Schedules job `key` as `job` (its record's, unless given) against `view`.
    public static func schedule(_ key: ClusterState.JobKey, in view: SchedulingView, job asked: Job? = nil, now: Int64?,
                                newID: @escaping () -> String) -> Scheduled {
        let rec = view.state.jobs[key]
        let job = asked ?? rec?.job
        let version: Int
        if let asked, let rec {
            version = rec.job != asked || rec.stopped ? rec.version + 1 : rec.version
        } else {
            version = rec?.version ?? 0
        }
        let input = view.input(for: key, job: job, version: version, stopped: asked == nil ? rec?.stopped ?? true : false, now: now)
        let scheduler = Scheduler(algorithm: SchedulingAlgorithm(rawValue: view.state.schedulerAlgorithm) ?? .binpack, newID: newID)
        let plan = job == nil
            ? Scheduler.stopAll(jobID: key.id, namespace: key.namespace, allocations: input.allocations)
            : scheduler.schedule(input)
        let verdict = PlanApplier.verify(plan, cluster: input.cluster, quotas: view.quotas)
        return Scheduled(input: input, plan: plan, verdict: verdict)
    }

    /// What one evaluation comes to: nothing to commit, or a command and what to do once it is.
    enum Decision {
        case done
        case commit(Command, String, AfterCommit?)
    }

    /// What a committed plan leaves to the core's own books.
    struct AfterCommit {
        var key: ClusterState.JobKey
        var failures: [String: String]
        var answered: Evaluation
        var priority: Int
        var refused: Bool
        /// The plan's new allocations: the state may refuse some when it applies the plan (no
        /// longer fits), so what was placed is counted from the state once committed.
        var placements: [String]
        var stopped: Int
        /// The plan placed, stopped or updated something (worth a line in the log).
        var changed: Bool
    }

    /// Schedules the job of one evaluation against `state` and says what to commit: the plan
    /// with the evaluations it answers (or only the evaluations, for a periodic template or a
    /// purged job). The broker and the core's books change here only for what needs no commit.
    mutating func decide(_ delivered: Evaluation, _ state: ClusterState, _ env: Environment, _ report: inout Report) -> Decision {
        let key = ClusterState.JobKey(delivered.namespace, delivered.jobID)
        let view = SchedulingView(state)
        let rec = state.jobs[key]
        let mine = state.evaluations(ofJob: key)
        let jobKey = EvalBroker.JobKey(delivered)
        if rec?.job.periodic != nil {
            // A template: its launches are the jobs that run.
            var done = mine.filter { $0.status == .pending }
            guard !done.isEmpty else { return .done }
            for i in done.indices { done[i].status = .complete; done[i].statusDescription = "periodic: launches follow the schedule" }
            return .commit(.upsertEvaluations(done), "complete the evaluations of \(key.id)", nil)
        }
        if rec == nil && !state.allocations(ofJob: key).contains(where: \.isLive) {
            // Purged and nothing left running: only its pending evaluations to answer.
            broker.forgetBlocked(jobKey)
            var done = mine.filter { $0.status == .pending || $0.status == .blocked }
            guard !done.isEmpty else { return .done }
            for i in done.indices { done[i].status = .complete; done[i].statusDescription = "job purged" }
            return .commit(.upsertEvaluations(done), "complete the evaluations of \(key.id)", nil)
        }
        let now = env.now()
        let scheduled = Self.schedule(key, in: view, now: now, newID: env.newID)
        let (plan, input, verdict) = (scheduled.plan, scheduled.input, scheduled.verdict)
        if let at = Self.recheckAt(plan, input, now: now) { feed.wakeAt[key] = at }
        // A system job fails per node: one group may have several (joined, never a duplicate key).
        let failures = Dictionary(plan.failures.map { ($0.group, $0.description) }, uniquingKeysWith: { $0 == $1 || $0.contains($1) ? $0 : $0 + "; " + $1 })
        // Evaluations the API created (a register, a stop) are answered by this one; so is the
        // delivered one when it is a blocked evaluation retried.
        let pending = mine.filter { $0.status == .pending || ($0.id == delivered.id && $0.status == .blocked) }
            .sorted { $0.createIndex < $1.createIndex }
        guard !plan.isEmpty || !pending.isEmpty || (lastFailures[key] ?? [:]) != failures else {
            if !failures.isEmpty { broker.block(mine.first { $0.status == .blocked } ?? delivered) }
            return .done
        }
        let refused = verdict.rejectedNodes + verdict.rejectedNamespaces.map { "namespace " + $0 }
        let outcome = "placed \(verdict.accepted.placements.count), stopped \(verdict.accepted.stops.count), updated in place \(verdict.accepted.updates.count)"
            + (refused.isEmpty ? "" : ", plan refused on \(refused.joined(separator: ", ")) (retrying)")
        var evals = pending.isEmpty ? [delivered] : pending
        for i in evals.indices {
            evals[i].namespace = key.namespace
            evals[i].failedPlacements = failures
            evals[i].status = failures.isEmpty ? .complete : .blocked
            evals[i].statusDescription = outcome
        }
        // Earlier evaluations that were blocked are answered by this one: everything placed
        // now (capacity freed, a node joined), or still blocked and superseded.
        let ids = Set(evals.map(\.id))
        for var old in mine where old.status == .blocked && !ids.contains(old.id) {
            old.status = failures.isEmpty ? .complete : .canceled
            if failures.isEmpty { old.failedPlacements = [:] }
            old.statusDescription += failures.isEmpty ? "; unblocked: placed by evaluation \(evals[0].id.prefix(8))"
                : "; superseded by evaluation \(evals[0].id.prefix(8))"
            evals.append(old)
        }
        report.evaluations += 1
        if !refused.isEmpty { report.planRejections += 1 }
        for f in plan.failures {
            for (reason, _) in f.reasons { report.failedPlacements[reason.metricClass, default: 0] += f.unplaced }
        }
        let after = AfterCommit(key: key, failures: failures, answered: evals[0], priority: delivered.priority, refused: !refused.isEmpty,
                                placements: verdict.accepted.placements.map(\.id), stopped: verdict.accepted.stops.count, changed: !verdict.accepted.isEmpty)
        return .commit(.applyPlan(allocations: verdict.accepted.stops + verdict.accepted.updates + verdict.accepted.placements, evaluations: evals),
                       "apply the plan for job \(key.id)", after)
    }

    /// The core's books once a plan committed: the job's failures remembered, its blocked
    /// evaluation kept or forgotten, and what the plan applier refused evaluated again.
    mutating func committed(_ a: AfterCommit, _ allocations: TreeDictionary<String, Allocation>, _ shell: some LeaderShell, _ env: Environment,
                            _ report: inout Report) {
        let placed = a.placements.reduce(0) { $0 + (allocations[$1] == nil ? 0 : 1) }
        report.placements += placed
        lastFailures[a.key] = a.failures
        let jobKey = EvalBroker.JobKey(a.answered)
        if a.failures.isEmpty { broker.forgetBlocked(jobKey) } else { broker.block(a.answered) }
        if a.refused {
            // What the plan applier refused is evaluated again against the state just committed.
            var again = Evaluation(id: env.newID(), jobID: a.key.id, priority: a.priority, triggeredBy: .queued)
            again.namespace = a.key.namespace
            broker.enqueue(again)
        }
        if a.changed {
            shell.note(.info, "plan committed", ["job": a.key.id, "placed": "\(placed)", "stopped": "\(a.stopped)"])
        }
    }

    /// When the job must be looked at again although nothing else changes: a failed instance's
    /// delayed reschedule falls due, or a rolling update's new instances have been healthy for
    /// `minHealthyTime`.
    static func recheckAt(_ plan: Plan, _ input: SchedulerInput, now: Int64) -> Int64? {
        var times = Array(plan.delayed.values)
        if let job = input.job, let u = job.update {
            let mine = input.allocations.filter { $0.jobID == job.id && $0.namespace == job.namespace && $0.desiredStatus == .run }
            if mine.contains(where: { $0.jobVersion < input.jobVersion && $0.isLive }) {
                for a in mine where a.jobVersion == input.jobVersion && a.isHealthy && !Scheduler.settled(a, u.minHealthyTime, now: now) {
                    if let at = Scheduler.settlesAt(a, u.minHealthyTime) { times.append(at) }
                }
            }
        }
        return times.min()
    }

}

/// A copy of the cluster state that proposals apply to at once, in memory: what the seeded
/// simulation, what-if and tests run the core on. Not shared between tasks.
public final class StateCopy: LeaderShell, @unchecked Sendable {
    public private(set) var state: ClusterState
    public private(set) var index: UInt64
    /// Every command applied, in order.
    public private(set) var applied: [Command] = []
    /// Every command proposed, refused ones too, in order: the log a Raft group would hold.
    public private(set) var log: [Command] = []
    /// Why each refused command was refused.
    public private(set) var refusals: [String] = []

    /// Evaluations decided before their plans are applied (``LeaderShell/pipelineDepth``).
    public let pipelineDepth: Int

    public init(_ state: ClusterState, pipelineDepth: Int = 1) {
        self.state = state
        index = state.lastIndex
        self.pipelineDepth = pipelineDepth
    }

    public func currentState() async -> ClusterState { state }

    public func propose(_ command: Command, _ what: String) async -> Bool { apply(command) }

    /// Applies a command as the log would; false (and the reason kept) when the state refuses it.
    @discardableResult
    public func apply(_ command: Command) -> Bool {
        index += 1
        log.append(command)
        switch state.apply(command, index: index) {
        case .applied, .ignoredAsUnknown:
            applied.append(command)
            return true
        case .rejected(let why):
            refusals.append(why)
            return false
        }
    }

    public func note(_ level: LeaderCore.Level, _ message: String, _ metadata: [String: String]) {}

    /// What nodes do with what they are given, in one step: pending allocations that should run
    /// are reported running (a stand-in for the executors, between two passes).
    public func startPending() {
        let starting = state.allocations.values.filter { $0.desiredStatus == .run && $0.clientStatus == .pending }
        if !starting.isEmpty {
            apply(.clientUpdate(starting.sorted { $0.id < $1.id }.map { .init(allocationID: $0.id, clientStatus: .running, description: "") }))
        }
    }
}

extension LeaderCore {
    /// Runs passes on `copy` until one changes nothing (at most `maxPasses`); the clock moves on
    /// by `step` before each pass (so delayed reschedules and rollout timers fall due), and
    /// `between` runs after each (a stand-in for the nodes: tasks start, finish). The number of
    /// passes that changed something.
    @discardableResult
    public mutating func settle(_ copy: StateCopy, clock: inout Int64, step: Int64 = 0, maxPasses: Int = 50, newID: @escaping @Sendable () -> String,
                                between: (StateCopy) -> Void = { _ in }) async -> Int {
        var changing = 0
        for _ in 0..<maxPasses {
            clock += step
            let at = clock
            let before = copy.applied.count
            _ = await pass(copy, members: nil, Environment(now: { at }, newID: newID))
            between(copy)
            guard copy.applied.count > before else { break }
            changing += 1
        }
        return changing
    }
}

/// Ids `prefix1`, `prefix2`, … in order: runs on a copy are the same every time.
public final class CountingIDs: Sendable {
    let prefix: String
    let count = Mutex(0)
    public init(_ prefix: String) { self.prefix = prefix }
    public func next() -> String { prefix + String(count.withLock { $0 += 1; return $0 }) }
}
