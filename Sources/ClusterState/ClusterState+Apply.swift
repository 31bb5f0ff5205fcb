import CaravanModel

/// Each command's effect on the state, one function per command (`apply` dispatches).
extension ClusterState {
    /// A registration logged as job text (agents before 2026-12-07): parsed as it was then.
    mutating func applyRegisterJob(_ text: String, index: UInt64) -> Outcome {
        let job: Job
        do { job = try JobFile.parse(text, file: "job", stored: true) } catch { return .rejected(error.description) }
        return applyRegister(job, index: index)
    }

    mutating func applyRegister(_ job: Job, index: UInt64) -> Outcome {
        let key = JobKey(job.namespace, job.id)
        // Once namespaces are in use a job goes only into one that exists (the API checks
        // first; this settles a register racing the namespace's delete). Logs from before
        // namespaces replay as they were.
        if namespacesInUse && !namespaceExists(job.namespace) && jobs[key] == nil {
            return .rejected("namespace \(job.namespace) does not exist")
        }
        if let why = registrationRefusal(job) { return .rejected(why) }
        // Every registration asks the scheduler to look at the job (its evaluation id follows
        // from the index, so the API can name it).
        upsert([Evaluation.pending(for: key, priority: job.priority, .jobRegister, index: index)], index)
        if let cur = jobs[key], cur.job == job, !cur.stopped { return .applied }  // unchanged: no new version
        let version = jobs[key].map { $0.version + 1 } ?? 0
        let record = JobRecord(job: job, text: JobFile.render(job), version: version, stopped: false,
                               createIndex: jobs[key]?.createIndex ?? index, modifyIndex: index)
        jobs[key] = record
        versions[key, default: []].insert(record, at: 0)
        if versions[key]!.count > Self.versionsKept { versions[key]!.removeLast() }
        touch(.jobs, index)
        return .applied
    }

    mutating func applyDeregisterJob(_ ns: String, _ id: String, _ purge: Bool, index: UInt64) -> Outcome {
        let key = JobKey(ns, id)
        guard var cur = jobs[key] else { return .rejected("job \(id) is not registered") }
        if purge {
            jobs[key] = nil
            versions[key] = nil
            periodicLaunches[key] = nil
            // Its finished allocations and its evaluations go with it: a job registered again
            // under the same id starts afresh (a batch job runs again). Live allocations stay
            // until the leader has stopped them.
            let finished = allocations(ofJob: key).filter { !$0.isLive }
            for a in finished { setAllocation(nil, id: a.id) }
            if !finished.isEmpty { touch(.allocations, index) }
            let evals = evaluations(ofJob: key)
            for e in evals { setEvaluation(nil, id: e.id) }
            if !evals.isEmpty { touch(.evaluations, index) }
        } else {
            cur.stopped = true
            cur.modifyIndex = index
            jobs[key] = cur
            upsert([Evaluation.pending(for: key, priority: cur.job.priority, .jobDeregister, index: index)], index)
        }
        touch(.jobs, index)
        return .applied
    }

    mutating func applyUpsertNode(_ n: Node, index: UInt64) -> Outcome {
    var n = n
        if let cur = nodes[n.id] {
            n.createIndex = cur.createIndex
            n.eligibility = cur.eligibility
            n.draining = cur.draining
        } else {
            n.createIndex = index
        }
        n.modifyIndex = index
        setNode(n)
        touch(.nodes, index)
        return .applied
    }

    mutating func applyNodeStatus(_ id: String, _ status: Node.Status, index: UInt64) -> Outcome {
        guard var n = nodes[id] else { return .rejected("node \(id) is not registered") }
        n.status = status
        n.modifyIndex = index
        setNode(n)
        touch(.nodes, index)
        if status == .down {
            // Its allocations are lost; the scheduler replaces them.
            for a in liveAllocations(onNode: id) {
                var lost = a
                lost.clientStatus = .lost
                lost.clientDescription = "node \(id) is down"
                lost.modifyIndex = index
                setAllocation(lost, id: a.id)
                touch(.allocations, index)
            }
        }
        return .applied
    }

    mutating func applyNodeEligibility(_ id: String, _ el: Node.Eligibility, index: UInt64) -> Outcome {
        guard var n = nodes[id] else { return .rejected("node \(id) is not registered") }
        n.eligibility = el
        n.modifyIndex = index
        setNode(n)
        touch(.nodes, index)
        return .applied
    }

    mutating func applyNodeDrain(_ id: String, _ d: Bool, index: UInt64) -> Outcome {
        guard var n = nodes[id] else { return .rejected("node \(id) is not registered") }
        n.draining = d
        if d { n.eligibility = .ineligible }
        n.modifyIndex = index
        setNode(n)
        touch(.nodes, index)
        return .applied
    }

    /// `checked` (plans written since 2026-12-07): the state has the last word on what a plan
    /// does. A new live allocation is made only if its node is schedulable and it fits there —
    /// CPU, memory, disk and its ports — after the plan's stops and updates; the rest is not made
    /// and the job gets a pending evaluation. And a plan changes only what the leader decides
    /// (desired status, job version): what the node reported (client status, task states,
    /// checks) stays as the state has it, so a plan decided before its allocation was lost or
    /// finished does not bring it back to life. Unchecked (older logs): applied as written.
    mutating func applyApplyPlan(_ allocs: [Allocation], _ evals: [Evaluation], index: UInt64, checked: Bool) -> Outcome {
        // Stops and updates first: what they free is there for the placements.
        var placements: [Allocation] = []
        var refused: [Allocation] = []
        for var a in allocs {
            guard let current = allocations[a.id] else {
                if checked && a.isLive { placements.append(a); continue }
                a.createIndex = index
                a.modifyIndex = index
                setAllocation(a, id: a.id)
                continue
            }
            if checked {
                (a.clientStatus, a.clientDescription, a.taskStates, a.checks) = (current.clientStatus, current.clientDescription, current.taskStates, current.checks)
            }
            a.createIndex = current.createIndex
            a.modifyIndex = index
            setAllocation(a, id: a.id)
        }
        // What already runs of each count-based job the plan places (looked up once per job).
        var running: [JobKey: Set<Instance>] = [:]
        for var a in placements {
            // A plan decided while an earlier one's fate was unknown (a commit that timed out, a
            // leader that lost and regained the lead), applied after that one committed after all.
            let key = JobKey(a.namespace, a.jobID)
            if running[key] == nil { running[key] = liveInstances(of: key) }
            if !use.fits(a) || running[key]!.contains(Instance(a)) {
                refused.append(a)
                continue
            }
            if jobs[key].map({ $0.job.type == .service || $0.job.type == .batch }) == true { running[key]!.insert(Instance(a)) }
            a.createIndex = index
            a.modifyIndex = index
            setAllocation(a, id: a.id)
        }
        if !allocs.isEmpty {
            touch(.allocations, index)
            collectGarbage(jobs: Set(allocs.map { JobKey($0.namespace, $0.jobID) }))
        }
        var evals = evals
        for key in Set(refused.map { JobKey($0.namespace, $0.jobID) }).sorted() {
            let nodes = Set(refused.filter { $0.namespace == key.namespace && $0.jobID == key.id }.map(\.nodeID)).sorted()
            for i in evals.indices where evals[i].jobID == key.id && evals[i].namespace == key.namespace {
                evals[i].statusDescription += "; placements on \(nodes.joined(separator: ", ")) no longer fit when applied"
            }
            evals.append(Evaluation.pending(for: key, priority: jobs[key]?.job.priority ?? 50, .queued, index: index))
        }
        upsert(evals, index)
        return .applied
    }

    /// An instance of a job: its name and the job version it runs.
    struct Instance: Hashable {
        var name: String
        var version: Int
        init(_ a: Allocation) { (name, version) = (a.name, a.jobVersion) }
    }

    /// The live instances of a count-based job (service, batch): a new one of the same name and
    /// version beside them would be a duplicate — what a plan decided again after an earlier
    /// commit timed out makes when that commit landed after all. (Canaries and updates run a
    /// newer version beside the old; replacements follow the stop of what they replace, applied
    /// first.) Empty for other jobs, whose instances share names across nodes.
    func liveInstances(of key: JobKey) -> Set<Instance> {
        guard let type = jobs[key]?.job.type, type == .service || type == .batch else { return [] }
        return Set((allocationsByJob[key] ?? []).compactMap { allocations[$0] }.filter(\.isLive).map(Instance.init))
    }

    mutating func applyClientUpdate(_ updates: [ClientAllocationUpdate], index: UInt64) -> Outcome {
        for u in updates {
            guard var a = allocations[u.allocationID] else { continue }
            // A lost or finished allocation does not come back to life.
            if a.clientStatus == .lost || a.clientStatus == .complete || a.clientStatus == .failed { continue }
            a.clientStatus = u.clientStatus
            a.clientDescription = u.description
            if let ts = u.taskStates { a.taskStates = ts }
            if let cs = u.checks { a.checks = cs }
            a.modifyIndex = index
            setAllocation(a, id: u.allocationID)
            touch(.allocations, index)
        }
        return .applied
    }

    mutating func applyUpsertEvaluations(_ evals: [Evaluation], index: UInt64) -> Outcome {
        upsert(evals, index)
        return .applied
    }

    mutating func applyMarkStable(_ ns: String, _ id: String, _ version: Int, index: UInt64) -> Outcome {
        let key = JobKey(ns, id)
        guard let cur = jobs[key] else { return .rejected("job \(id) is not registered") }
        guard let i = versions[key]?.firstIndex(where: { $0.version == version }) else {
            return .rejected("job \(id) has no version \(version)")
        }
        versions[key]![i].stable = true
        if cur.version == version { jobs[key]!.stable = true }
        touch(.jobs, index)
        return .applied
    }

    mutating func applyUpsertNamespace(_ n: Namespace, index: UInt64) -> Outcome {
    var n = n
        namespacesInUse = true
        n.createIndex = namespaces[n.name]?.createIndex ?? index
        n.modifyIndex = index
        namespaces[n.name] = n
        touch(.namespaces, index)
        return .applied
    }

    mutating func applyDeleteNamespace(_ name: String, index: UInt64) -> Outcome {
        guard name != Namespace.defaultName else { return .rejected("namespace default cannot be deleted") }
        guard namespaces[name] != nil else { return .rejected("namespace \(name) does not exist") }
        let jobsIn = jobs.keys.filter { $0.namespace == name }.count
        guard jobsIn == 0 else { return .rejected("namespace \(name) holds \(jobsIn) job\(jobsIn == 1 ? "" : "s"); stop and purge them first") }
        namespaces[name] = nil
        touch(.namespaces, index)
        return .applied
    }

    mutating func applyPromote(_ ns: String, _ id: String, _ version: Int, index: UInt64) -> Outcome {
        let key = JobKey(ns, id)
        guard let cur = jobs[key] else { return .rejected("job \(id) is not registered") }
        guard cur.version == version else { return .rejected("job \(id) version \(version) is not its current version (\(cur.version))") }
        guard (cur.job.update?.canary ?? 0) > 0 else { return .rejected("job \(id) version \(version) has no canaries to promote (update.canary is 0)") }
        guard !cur.promoted else { return .applied }
        // Promoting places the new version's instances: its drivers must be allowed now.
        if let why = driverRefusal(cur.job) { return .rejected(why) }
        jobs[key]!.promoted = true
        jobs[key]!.modifyIndex = index
        if let i = versions[key]?.firstIndex(where: { $0.version == version }) { versions[key]![i].promoted = true }
        touch(.jobs, index)
        return .applied
    }

    mutating func applySchedulerConfig(_ algorithm: String, index: UInt64) -> Outcome {
        guard Self.algorithms.contains(algorithm) else {
            return .rejected("scheduler algorithm \(algorithm) is not one of \(Self.algorithms.joined(separator: ", "))")
        }
        schedulerAlgorithm = algorithm
        touch(.config, index)
        return .applied
    }

    mutating func applyPeriodicLaunch(_ ns: String, _ id: String, _ time: Int64, index: UInt64) -> Outcome {
        let key = JobKey(ns, id)
        periodicLaunches[key] = max(periodicLaunches[key] ?? .min, time)
        touch(.jobs, index)
        return .applied
    }
}

extension ClusterState {
    /// Every create and modify index the objects in this state carry (with repeats).
    public var objectIndexes: [UInt64] {
        var out: [UInt64] = []
        for r in jobs.values { out += [r.createIndex, r.modifyIndex] }
        for l in versions.values { for r in l { out += [r.createIndex, r.modifyIndex] } }
        for n in nodes.values { out += [n.createIndex, n.modifyIndex] }
        for a in allocations.values { out += [a.createIndex, a.modifyIndex] }
        for e in evaluations.values { out += [e.createIndex, e.modifyIndex] }
        for n in namespaces.values { out += [n.createIndex, n.modifyIndex] }
        return out
    }

    /// How another cluster's indexes become this one's when its state is restored at `index`:
    /// the distinct values, in order, end at `index` (the newest restored is the restore's),
    /// so order among restored objects is kept and this cluster's next writes are newer. Only
    /// when there are more distinct values than `index` do the oldest share 1. 0 stays 0.
    public struct Rebasing: Sendable {
        let renumbered: [UInt64: UInt64]
        let index: UInt64

        public init(_ indexes: [UInt64], to index: UInt64) {
            let distinct = Array(Set(indexes.filter { $0 > 0 })).sorted()
            var out: [UInt64: UInt64] = [0: 0]
            for (rank, v) in distinct.enumerated() {
                let behind = UInt64(distinct.count - 1 - rank)
                out[v] = index > behind ? index - behind : 1
            }
            (renumbered, self.index) = (out, index)
        }

        /// `v` as this cluster's (a value it was not made from is kept no newer than `index`).
        public func callAsFunction(_ v: UInt64) -> UInt64 { renumbered[v] ?? min(v, index) }
    }

    /// This state, read from another cluster's snapshot, made this cluster's at `index` (where
    /// the restore was committed): every table changed at `index`, so blocking reads and the
    /// leader see it all as new; every object's own indexes renumbered by `rebase`
    /// (``Rebasing``), so whatever this cluster writes next is newer than anything restored and
    /// their order is kept; and nodes not in `members` (the other cluster's, not this
    /// one's) are down, so their allocations are lost and placed again on this cluster's nodes.
    public mutating func adopt(at index: UInt64, members: Set<String>, rebase: Rebasing) {
        func re(_ v: inout UInt64) { v = rebase(v) }
        for k in Array(jobs.keys) { re(&jobs[k]!.createIndex); re(&jobs[k]!.modifyIndex) }
        for k in Array(versions.keys) {
            for i in versions[k]!.indices { re(&versions[k]![i].createIndex); re(&versions[k]![i].modifyIndex) }
        }
        for k in Array(nodes.keys) {
            var n = nodes[k]!
            re(&n.createIndex); re(&n.modifyIndex)
            setNode(n)
        }
        // Indexes are not what the allocation and evaluation indexes file by: changed in place.
        for k in Array(allocations.keys) { re(&allocations[k]!.createIndex); re(&allocations[k]!.modifyIndex) }
        for k in Array(evaluations.keys) { re(&evaluations[k]!.createIndex); re(&evaluations[k]!.modifyIndex) }
        rebuildAllocationMarks()
        for k in Array(namespaces.keys) { re(&namespaces[k]!.createIndex); re(&namespaces[k]!.modifyIndex) }
        lastIndex = index
        for t in Table.allCases { tableIndex[t] = index }
        for id in nodes.keys.sorted() where !members.contains(id) && nodes[id]?.status != .down {
            _ = applyNodeStatus(id, .down, index: index)
        }
    }
}
