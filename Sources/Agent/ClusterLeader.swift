import CaravanModel
import Executor
#if canImport(Glibc)
import Glibc
#endif
import ClusterState
import Gossip
import Logging
import Metrics
import Raft
import Scheduler
import ServiceLifecycle
import Synchronization
import FoundationEssentials

/// The leader's duties towards the cluster state, after every commit and at least every 200 ms
/// while this agent leads:
///
/// 1. Nodes: an agent that gossip shows alive is registered (`UpsertNode`) when it is new or its
///    capacity, address or tags changed; one that gossip declares dead or gone is marked down,
///    which marks its allocations lost.
/// 2. Jobs: what changed in the state (a job registered, an instance failed, a node died,
///    capacity freed) becomes evaluations in the broker (`EvalFeed`, `EvalBroker`); each is
///    reconciled by the scheduler against the latest state; a plan that changes something is
///    checked by the plan applier (never over-committing a node) and committed with the
///    evaluations recording what was done and what could not be placed.
///
/// The broker lives in the leader's memory: a new leader starts by evaluating every job, and
/// every job is evaluated once a minute besides, so whatever was missed (a leader change, a lost
/// write) is redone and nothing is lost when leadership moves.
struct ClusterLeader: Service {
    let agent: Agent
    var interval: Duration = .milliseconds(200)
    /// Commands the state refused during the current pass.
    let refused = Refusals()

    final class Refusals: Sendable {
        let count = Mutex(0)
        func take() -> Int { count.withLock { n in defer { n = 0 }; return n } }
    }

    func run() async throws {
        var memory = Memory()
        var seen: UInt64 = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            if await agent.raft.status().role == .leader {
                await syncNodes()
                await launchPeriodicJobs()
                await reconcileJobs(&memory)
                for (c, what) in Self.rolloutActions(agent.store.current, now: Executor.unixMillis()) {
                    agent.logger.info("\(what)")
                    await commit(c, what)
                }
                // Again as soon as anything is committed (a job registered, an allocation
                // stopped), or after `interval` for what gossip and the clock bring — but never
                // at once after a pass the state refused something of: a refusal is committed
                // too, and would wake a pass that proposes it again.
                if refused.take() > 0 {
                    try? await Task.sleep(for: interval)
                    seen = await agent.raft.status().applied
                }
                seen = await agent.raft.waitApplied(after: seen, wait: interval)
            } else {
                memory = Memory()
                try? await Task.sleep(for: interval)
            }
        }
    }

    struct Memory {
        /// The last failure description recorded per job, so a job that cannot be placed does
        /// not write the same evaluation every pass.
        var lastFailures: [ClusterState.JobKey: [String: String]] = [:]
        /// The evaluations waiting for the scheduler, and what feeds them.
        var broker = EvalBroker()
        var feed = EvalFeed()
    }

    // MARK: - Nodes

    func syncNodes() async {
        let state = agent.store.current
        for m in await agent.gossip.members() {
            let alive = m.status == .alive || m.status == .suspect
            let existing = state.nodes[m.name]
            if alive, let meta = NodeMetadata.decode(m.metadata) {
                var n = Node(id: m.name, address: m.address.host, cpuMillicores: meta.capacity.cpuMillicores,
                             memoryMiB: meta.capacity.memoryMiB, diskMiB: meta.capacity.diskMiB)
                n.meta = meta.tags
                n.attributes = meta.attributes.merging(["kernel.name": "linux", "unique.hostname": m.name]) { old, _ in old }
                for d in meta.drivers { n.attributes["driver.\(d)"] = "1" }
                n.drivers = meta.drivers
                let changed = existing.map { e in
                    e.status != .ready || e.address != n.address || e.cpuMillicores != n.cpuMillicores || e.memoryMiB != n.memoryMiB
                        || e.diskMiB != n.diskMiB || e.meta != n.meta || e.attributes != n.attributes || e.drivers != n.drivers
                } ?? true
                if changed { await commit(.upsertNode(n), "register node \(m.name)") }
            } else if !alive, let e = existing, e.status == .ready {
                agent.logger.info("marking node down", metadata: ["node": "\(m.name)", "gossip": "\(m.status)"])
                await commit(.nodeStatus(id: m.name, status: .down), "mark node \(m.name) down")
            }
        }
    }

    // MARK: - Jobs

    /// Feeds the broker with what changed since the last pass, then works through it: each
    /// delivered evaluation is scheduled and its plan committed (acknowledged), or handed back
    /// when the commit fails (redelivered later; given up after three deliveries and recorded as
    /// failed). Evaluations that could not place everything wait in the broker until capacity
    /// grows.
    func reconcileJobs(_ memory: inout Memory) async {
        let now = Executor.unixMillis()
        let fed = memory.feed.changes(in: agent.store.current, now: now, newID: { AllocationID.make() })
        for e in fed.evaluations { memory.broker.enqueue(e) }
        if fed.unblock { memory.broker.unblock() }
        while let d = memory.broker.dequeue(now: Executor.unixMillis()) {
            let id = d.evaluation.id
            do {
                if await evaluate(d.evaluation, &memory) {
                    try memory.broker.ack(id, token: d.token)
                } else {
                    agent.logger.info("evaluation handed back", metadata: ["evaluation": "\(id)", "job": "\(d.evaluation.jobID)", "attempt": "\(d.attempt)"])
                    try memory.broker.nack(id, token: d.token, now: Executor.unixMillis())
                }
            } catch {
                agent.logger.warning("evaluation answered too late", metadata: ["evaluation": "\(id)", "error": "\(error)"])
            }
        }
        let failed = memory.broker.takeFailed()
        if !failed.isEmpty {
            agent.logger.warning("evaluations given up", metadata: ["evaluations": "\(failed.map(\.id))"])
            Counter(label: "caravan_scheduler_evaluations_failed_total").increment(by: failed.count)
            await commit(.upsertEvaluations(failed), "record the evaluations given up")
        }
        let stats = memory.broker.stats
        Gauge(label: "caravan_scheduler_broker_ready").record(stats.ready)
        Gauge(label: "caravan_scheduler_broker_blocked").record(stats.blocked)
        Gauge(label: "caravan_scheduler_broker_waiting").record(stats.waiting + stats.delayed)
    }

    /// Schedules the job of one evaluation against the latest state and commits the plan with the
    /// evaluations it answers. False when the commit failed (the evaluation is handed back).
    func evaluate(_ delivered: Evaluation, _ memory: inout Memory) async -> Bool {
        let key = ClusterState.JobKey(delivered.namespace, delivered.jobID)
        let view = SchedulingView(agent.store.current)
        let rec = view.state.jobs[key]
        let mine = view.state.evaluations(ofJob: key)
        let jobKey = EvalBroker.JobKey(delivered)
        if rec?.job.periodic != nil {
            // A template: its launches are the jobs that run.
            var done = mine.filter { $0.status == .pending }
            guard !done.isEmpty else { return true }
            for i in done.indices { done[i].status = .complete; done[i].statusDescription = "periodic: launches follow the schedule" }
            return await commit(.upsertEvaluations(done), "complete the evaluations of \(key.id)")
        }
        if rec == nil && !view.allocations.contains(where: { $0.jobID == key.id && $0.namespace == key.namespace && $0.isLive }) {
            // Purged and nothing left running: only its pending evaluations to answer.
            memory.broker.forgetBlocked(jobKey)
            var done = mine.filter { $0.status == .pending || $0.status == .blocked }
            guard !done.isEmpty else { return true }
            for i in done.indices { done[i].status = .complete; done[i].statusDescription = "job purged" }
            return await commit(.upsertEvaluations(done), "complete the evaluations of \(key.id)")
        }
        let now = Executor.unixMillis()
        let input = view.input(for: key, job: rec?.job, version: rec?.version ?? 0, stopped: rec?.stopped ?? true, now: now)
        let scheduler = Scheduler(algorithm: SchedulingAlgorithm(rawValue: view.state.schedulerAlgorithm) ?? .binpack, newID: { AllocationID.make() })
        let plan = rec == nil
            ? Scheduler.stopAll(jobID: key.id, namespace: key.namespace, allocations: input.allocations)
            : scheduler.schedule(input)
        if let at = Self.recheckAt(plan, input, now: now) { memory.feed.wakeAt[key] = at }
        let failures = Dictionary(uniqueKeysWithValues: plan.failures.map { ($0.group, $0.description) })
        // Evaluations the API created (a register, a stop) are answered by this one; so is the
        // delivered one when it is a blocked evaluation retried.
        let pending = mine.filter { $0.status == .pending || ($0.id == delivered.id && $0.status == .blocked) }
            .sorted { $0.createIndex < $1.createIndex }
        guard !plan.isEmpty || !pending.isEmpty || (memory.lastFailures[key] ?? [:]) != failures else {
            if !failures.isEmpty { memory.broker.block(mine.first { $0.status == .blocked } ?? delivered) }
            return true
        }
        let verdict = PlanApplier.verify(plan, nodes: input.nodes, allocations: input.allocations, quotas: view.quotas)
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
        let ok = await commit(.applyPlan(allocations: verdict.accepted.stops + verdict.accepted.updates + verdict.accepted.placements,
                                         evaluations: evals),
                              "apply the plan for job \(key.id)")
        Counter(label: "caravan_scheduler_evaluations_total").increment()
        if !refused.isEmpty { Counter(label: "caravan_scheduler_plan_rejections_total").increment() }
        for f in plan.failures {
            for (reason, _) in f.reasons {
                Counter(label: "caravan_scheduler_failed_placements_total", dimensions: [("reason", Self.reasonClass(reason))]).increment(by: f.unplaced)
            }
        }
        guard ok else { return false }
        Counter(label: "caravan_scheduler_placements_total").increment(by: verdict.accepted.placements.count)
        memory.lastFailures[key] = failures
        if failures.isEmpty { memory.broker.forgetBlocked(jobKey) } else { memory.broker.block(evals[0]) }
        if !refused.isEmpty {
            // What the plan applier refused is evaluated again against the state just committed.
            var again = Evaluation(id: AllocationID.make(), jobID: key.id, priority: delivered.priority, triggeredBy: .queued)
            again.namespace = key.namespace
            memory.broker.enqueue(again)
        }
        if !verdict.accepted.isEmpty {
            agent.logger.info("plan committed", metadata: ["job": "\(key.id)", "placed": "\(verdict.accepted.placements.count)",
                                                           "stopped": "\(verdict.accepted.stops.count)"])
        }
        return true
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

    /// A placement failure's reason without the job's own values ("constraint ${attr.x} = y" →
    /// "constraint"), so the metric has few series.
    static func reasonClass(_ reason: String) -> String {
        if reason.hasSuffix("exhausted") || reason.hasPrefix("node ") { return reason.replacing(" ", with: "_") }
        if reason.hasPrefix("missing driver") { return "missing_driver" }
        if reason.hasPrefix("port ") { return "port_in_use" }
        if reason.hasPrefix("constraint distinct_hosts") { return "distinct_hosts" }
        if reason.hasPrefix("constraint distinct_property") { return "distinct_property" }
        return String(reason.prefix { $0 != " " })
    }

    // MARK: - Rollouts

    /// What the leader does about jobs with an `update` policy: a version whose instances have
    /// all been healthy for `minHealthyTime` (and no older ones run) is marked stable; with
    /// `autoPromote`, a version whose canaries have all been healthy for `minHealthyTime` is
    /// promoted; with
    /// `autoRevert`, a version that is not stable and has a failed instance — or one not healthy
    /// `healthyDeadline` after its node received it — is replaced by the newest stable version's
    /// definition.
    static func rolloutActions(_ state: ClusterState, now: Int64) -> [(Command, String)] {
        var out: [(Command, String)] = []
        for (key, rec) in state.jobs.sorted(by: { $0.key < $1.key }) {
            guard let u = rec.job.update, !rec.stopped, !rec.stable, rec.job.periodic == nil else { continue }
            let current = state.allocations(ofJob: key).filter { $0.desiredStatus == .run }
            let mine = current.filter { $0.jobVersion == rec.version }
            // An instance that is not healthy `healthyDeadline` after its node received it counts as failed.
            let deadline = Int64(u.healthyDeadline / .milliseconds(1))
            let overdue = mine.contains { a in
                guard !a.isHealthy, a.clientStatus != .failed, let seen = a.firstEvent else { return false }
                return now - seen > deadline
            }
            let failed = mine.contains { $0.clientStatus == .failed }
            let older = current.contains { $0.jobVersion < rec.version && $0.isLive }
            /// Instances of the version in group `g` healthy for `minHealthyTime`.
            func settled(_ g: TaskGroup) -> Int {
                mine.filter { $0.group == g.name && Scheduler.settled($0, u.minHealthyTime, now: now) }.count
            }
            // Canaries waiting for a promotion wait for a person, not for progress.
            var waiting: [TaskGroup] = []
            if u.canary > 0 && !rec.promoted {
                let input = SchedulingView.promotionInput(state, key, rec)
                waiting = rec.job.groups.filter { g in Scheduler.awaitingPromotion(rec.job, g, current.filter { $0.group == g.name }, input) }
            }
            // A rollout (older instances still live) makes progress when an instance of the new
            // version becomes healthy; none within `progressDeadline` of the last (or of the
            // version's first instance reaching its node) and it has stalled.
            let stalled = waiting.isEmpty && older
                && Self.lastProgress(mine).map { now - $0 > Int64(u.progressDeadline / .milliseconds(1)) } == true
            if u.autoRevert, failed || overdue || stalled,
               let target = (state.versions[key] ?? []).first(where: {
                   $0.stable && $0.version < rec.version && $0.text != rec.text && state.driverRefusal($0.job) == nil
               }) {
                let why = failed ? "has a failed instance"
                    : overdue ? "has an instance not healthy within \(Units.text(u.healthyDeadline))"
                    : "made no progress within \(Units.text(u.progressDeadline))"
                out.append((.registerJob(text: target.text),
                            "auto-revert: job \(key.id) version \(rec.version) \(why); registering stable version \(target.version) again"))
                continue
            }
            if stalled {
                // Said once, as a failed evaluation of the job (`caravan eval list`).
                let id = Evaluation.id(at: UInt64.max - UInt64(rec.version), for: key)
                if state.evaluations[id] == nil {
                    var e = Evaluation(id: id, jobID: key.id, priority: rec.job.priority, triggeredBy: .rollingUpdate)
                    e.namespace = key.namespace
                    e.status = .failed
                    e.statusDescription = "the rollout of version \(rec.version) made no progress within \(Units.text(u.progressDeadline)) "
                        + "(no new instance became healthy); fix the job and run it again, or caravan job revert \(key.id) VERSION"
                    out.append((.upsertEvaluations([e]), "job \(key.id) version \(rec.version): rollout stalled"))
                }
                continue
            }
            if !waiting.isEmpty {
                if u.autoPromote && state.driverRefusal(rec.job) == nil && waiting.allSatisfy({ settled($0) >= min(u.canary, $0.count) }) {
                    out.append((.promote(namespace: key.namespace, id: key.id, version: rec.version),
                                "auto-promote: the canaries of job \(key.id) version \(rec.version) are healthy"))
                }
                continue
            }
            if !older && rec.job.groups.allSatisfy({ settled($0) >= $0.count }) {
                out.append((.markStable(namespace: key.namespace, id: key.id, version: rec.version), "job \(key.id) version \(rec.version) is stable"))
            }
        }
        return out
    }

    /// When a rollout last moved: the latest start of a healthy instance of the version, or the
    /// first of its instances reaching its node (Unix ms); nil before any has.
    static func lastProgress(_ mine: [Allocation]) -> Int64? {
        let arrived = mine.compactMap(\.firstEvent).min()
        let healthy = mine.filter(\.isHealthy).compactMap(\.lastStart).max()
        let last = max(arrived ?? 0, healthy ?? 0)
        return last > 0 ? last : nil
    }

    // MARK: - Periodic jobs

    /// Launches each periodic job whose next cron time has come: registers a child batch job
    /// `<id>-periodic-<time>` (skipped while an earlier child still runs, when overlap is
    /// prohibited) and records the launch through Raft. A job seen for the first time starts
    /// its schedule from now, so registering one does not replay the past.
    func launchPeriodicJobs() async {
        let state = agent.store.current
        let now = Int64(ContinuousClock.now.unixSeconds)
        for old in Self.expiredLaunches(state) {
            agent.logger.info("forgetting a finished periodic launch", metadata: ["job": "\(old.id)"])
            await commit(.deregisterJob(namespace: old.namespace, id: old.id, purge: true), "purge the finished launch \(old.id)")
        }
        for (key, rec) in state.jobs.sorted(by: { $0.key < $1.key }) where !rec.stopped {
            guard let p = rec.job.periodic else { continue }
            guard let last = state.periodicLaunches[key] else {
                await commit(.periodicLaunch(namespace: key.namespace, id: key.id, time: now), "start the schedule of \(key.id)")
                continue
            }
            let (zone, firstLook) = p.hasNamedZone ? Self.zoneRules(p.timeZone) : (nil, false)
            if p.hasNamedZone && zone == nil {
                if firstLook {
                    agent.logger.warning("periodic job not launched: this leader's tz database has no such time zone",
                                         metadata: ["job": "\(key.id)", "zone": "\(p.timeZone)"])
                }
                continue
            }
            guard let next = p.next(after: last, zone: zone), next <= now else { continue }
            let children = state.jobs.values.filter { $0.job.meta["caravan.periodic.parent"] == key.id && $0.job.namespace == key.namespace }
            let running = children.contains { c in state.allocations(ofJob: .init(c.job.namespace, c.job.id)).contains(where: \.isLive) }
            if p.prohibitOverlap && running {
                agent.logger.info("periodic launch skipped: the previous one still runs", metadata: ["job": "\(key.id)"])
            } else {
                let child = Periodic.child(of: rec.job, at: next)
                if let why = state.driverRefusal(child) {
                    // Its namespace no longer allows a driver it uses: this launch is skipped, and
                    // said once, as a failed evaluation of the periodic job.
                    agent.logger.warning("periodic launch refused", metadata: ["job": "\(key.id)", "why": "\(why)"])
                    var e = Evaluation(id: AllocationID.make(), jobID: key.id, priority: rec.job.priority, triggeredBy: .periodic)
                    e.namespace = key.namespace
                    e.status = .failed
                    e.statusDescription = "periodic launch \(child.id) not run: \(why)"
                    await commit(.upsertEvaluations([e]), "record the refused launch of \(key.id)")
                } else {
                    agent.logger.info("periodic launch", metadata: ["job": "\(key.id)", "child": "\(child.id)"])
                    guard await commit(.registerJob(text: JobFile.render(child)), "launch \(child.id)") else { continue }
                }
            }
            await commit(.periodicLaunch(namespace: key.namespace, id: key.id, time: next), "record the launch of \(key.id)")
        }
    }

    /// Launches kept per periodic job; older ones that have finished are purged.
    static let launchesKept = 5

    /// Finished launches (no live allocation) beyond the newest `launchesKept` of their
    /// periodic job — or of a periodic job that no longer exists.
    static func expiredLaunches(_ state: ClusterState) -> [ClusterState.JobKey] {
        var byParent: [ClusterState.JobKey: [ClusterState.JobRecord]] = [:]
        for rec in state.jobs.values {
            guard let parent = rec.job.meta["caravan.periodic.parent"] else { continue }
            byParent[.init(rec.job.namespace, parent), default: []].append(rec)
        }
        var out: [ClusterState.JobKey] = []
        for (parent, children) in byParent {
            let keep = state.jobs[parent]?.job.periodic == nil ? 0 : launchesKept
            for c in children.sorted(by: { $0.createIndex > $1.createIndex }).dropFirst(keep) {
                let key = ClusterState.JobKey(c.job.namespace, c.job.id)
                let allocs = state.allocations(ofJob: key)
                // Finished: stopped, or run with nothing live left (one still being placed stays).
                if (c.stopped || !allocs.isEmpty) && !allocs.contains(where: \.isLive) { out.append(key) }
            }
        }
        return out.sorted()
    }

    /// The rules of a named time zone from this machine's tz database (`tzdata`), read once.
    /// `firstLook` is true when the database was read for this call.
    static func zoneRules(_ name: String) -> (rules: ZoneRules?, firstLook: Bool) {
        guard ZoneRules.isZoneName(name) else { return (nil, false) }
        return zoneCache.withLock { cache in
            if let known = cache[name] { return (known, false) }
            let rules = FileManager.default.contents(atPath: "/usr/share/zoneinfo/" + name).flatMap { ZoneRules.parse(tzif: Array($0)) }
            cache[name] = rules
            return (rules, true)
        }
    }

    private static let zoneCache = Mutex<[String: ZoneRules?]>([:])

    @discardableResult
    func commit(_ c: Command, _ what: String) async -> Bool {
        do {
            let answer = try await agent.raft.apply(c.encode(), timeout: .seconds(5))
            if answer.first != 0 {
                refused.count.withLock { $0 += 1 }
                agent.logger.warning("cluster state refused a command", metadata: ["what": "\(what)", "why": "\(String(decoding: answer.dropFirst(), as: UTF8.self))"])
                return false
            }
            return true
        } catch {
            agent.logger.debug("could not commit", metadata: ["what": "\(what)", "error": "\(error)"])
            return false
        }
    }
}

/// Random 128-bit identifiers in the 8-4-4-4-12 hex form.
enum AllocationID {
    static func make() -> String {
        var g = SystemRandomNumberGenerator()
        let hex = (0..<16).map { _ in String(UInt8.random(in: 0...255, using: &g), radix: 16) }.map { $0.count == 1 ? "0" + $0 : $0 }.joined()
        let c = Array(hex)
        return String(c[0..<8]) + "-" + String(c[8..<12]) + "-" + String(c[12..<16]) + "-" + String(c[16..<20]) + "-" + String(c[20..<32])
    }
}

extension ContinuousClock.Instant {
    /// Wall-clock Unix seconds (the periodic schedule is in wall time, not in monotonic time).
    var unixSeconds: Int {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return ts.tv_sec
    }
}
