import CaravanModel
import ClusterState
import Scheduler

extension LeaderCore {
    // MARK: - Rollouts

    /// What the leader does about jobs with an `update` policy: a version whose instances have
    /// all been healthy for `minHealthyTime` (and no older ones run) is marked stable; with
    /// `autoPromote`, a version whose canaries have all been healthy for `minHealthyTime` is
    /// promoted; with
    /// `autoRevert`, a version that is not stable and has a failed instance — or one not healthy
    /// `healthyDeadline` after its node received it — is replaced by the newest stable version's
    /// definition.
    public static func rolloutActions(_ state: ClusterState, now: Int64) -> [(Command, String)] {
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
                   $0.stable && $0.version < rec.version && $0.job != rec.job && state.registrationRefusal($0.job) == nil
               }) {
                let why = failed ? "has a failed instance"
                    : overdue ? "has an instance not healthy within \(Units.text(u.healthyDeadline))"
                    : "made no progress within \(Units.text(u.progressDeadline))"
                out.append((.register(target.job),
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
    func launchPeriodicJobs(_ shell: some LeaderShell, _ env: Environment) async {
        let state = await shell.currentState()
        let now = env.now() / 1000
        for old in Self.expiredLaunches(state) {
            shell.note(.info, "forgetting a finished periodic launch", ["job": old.id])
            _ = await shell.propose(.deregisterJob(namespace: old.namespace, id: old.id, purge: true), "purge the finished launch \(old.id)")
        }
        for (key, rec) in state.jobs.sorted(by: { $0.key < $1.key }) where !rec.stopped {
            guard let p = rec.job.periodic else { continue }
            guard let last = state.periodicLaunches[key] else {
                _ = await shell.propose(.periodicLaunch(namespace: key.namespace, id: key.id, time: now), "start the schedule of \(key.id)")
                continue
            }
            let (zone, firstLook) = p.hasNamedZone ? env.zone(p.timeZone) : (nil, false)
            if p.hasNamedZone && zone == nil {
                if firstLook {
                    shell.note(.warning, "periodic job not launched: this leader's tz database has no such time zone", ["job": key.id, "zone": p.timeZone])
                }
                continue
            }
            guard let next = p.next(after: last, zone: zone), next <= now else { continue }
            let children = state.jobs.values.filter { $0.job.meta["caravan.periodic.parent"] == key.id && $0.job.namespace == key.namespace }
            let running = children.contains { c in state.allocations(ofJob: .init(c.job.namespace, c.job.id)).contains(where: \.isLive) }
            if p.prohibitOverlap && running {
                shell.note(.info, "periodic launch skipped: the previous one still runs", ["job": key.id])
            } else {
                let child = Periodic.child(of: rec.job, at: next)
                if let why = state.registrationRefusal(child) {
                    // Its namespace no longer allows a driver it uses (or the parent, stored
                    // before ids were checked, is too long to name a launch): this launch is
                    // skipped, and said once, as a failed evaluation of the periodic job.
                    shell.note(.warning, "periodic launch refused", ["job": key.id, "why": why])
                    var e = Evaluation(id: env.newID(), jobID: key.id, priority: rec.job.priority, triggeredBy: .periodic)
                    e.namespace = key.namespace
                    e.status = .failed
                    e.statusDescription = "periodic launch \(child.id) not run: \(why)"
                    _ = await shell.propose(.upsertEvaluations([e]), "record the refused launch of \(key.id)")
                } else {
                    shell.note(.info, "periodic launch", ["job": key.id, "child": child.id])
                    guard await shell.propose(.register(child), "launch \(child.id)") else { continue }
                }
            }
            _ = await shell.propose(.periodicLaunch(namespace: key.namespace, id: key.id, time: next), "record the launch of \(key.id)")
        }
    }

    /// Launches kept per periodic job; older ones that have finished are purged.
    public static let launchesKept = 5

    /// Finished launches (no live allocation) beyond the newest `launchesKept` of their
    /// periodic job — or of a periodic job that no longer exists.
    public static func expiredLaunches(_ state: ClusterState) -> [ClusterState.JobKey] {
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
}
