import CaravanModel
import Dispatch
import FoundationEssentials
import Metrics
#if canImport(Glibc)
import Glibc
#endif

/// An allocation the cluster assigned to this node, with the job version it belongs to.
public struct Assignment: Sendable {
    public var allocation: Allocation
    public var job: Job
    public init(allocation: Allocation, job: Job) {
        self.allocation = allocation
        self.job = job
    }
}

/// What this node tells the cluster about one allocation.
public struct AllocationReport: Sendable, Equatable {
    public var allocationID: String
    public var clientStatus: Allocation.ClientStatus
    public var description: String
    public var taskStates: [String: TaskState]
    /// Service checks by `<service>.<index>.<type>`.
    public var checks: [String: CheckStatus] = [:]
}

/// Runs this node's allocations: starts their tasks through the drivers (prestart tasks first,
/// poststop tasks last), restarts them by the group's restart policy, stops them with the task's
/// kill signal and then SIGKILL after the kill timeout, reports every change, and keeps what it
/// needs on disk (`<data-dir>/alloc/<id>/state.json`) to find its tasks again after a restart.
public actor Executor {
    public let root: String
    public let nodeName: String
    /// The address service checks probe (the agent's bind address: tasks share the host network).
    public let address: String
    let drivers: [TaskSpec.Driver: any TaskDriver]
    let report: @Sendable ([AllocationReport]) async -> Bool
    let now: @Sendable () -> Int64
    /// Called as each task's process is up (for benchmarks).
    let taskStarted: (@Sendable (_ allocation: String, _ task: String) -> Void)?
    /// The longest a task is given between its kill signal and SIGKILL, whatever its job asks
    /// (as Nomad's `max_kill_timeout`): a stopped task cannot hold its node and its namespace's
    /// quota for longer.
    public var maxKillTimeout: Duration = .seconds(30)

    public func setMaxKillTimeout(_ d: Duration) { maxKillTimeout = d }

    /// Host users tasks may not run as on this node (`--deny-task-uids`, …).
    public var userPolicy = TaskUserPolicy.standard
    public func setUserPolicy(_ p: TaskUserPolicy) { userPolicy = p }

    /// The task's kill timeout, capped.
    func killTimeout(_ spec: TaskSpec) -> Duration { min(spec.killTimeout, maxKillTimeout) }
    var allocs: [String: AllocRunner] = [:]
    var outbox: [String: AllocationReport] = [:]
    var flushing = false

    public init(root: String, nodeName: String, address: String = "127.0.0.1", drivers: [any TaskDriver],
                report: @escaping @Sendable ([AllocationReport]) async -> Bool,
                now: @escaping @Sendable () -> Int64 = { Executor.unixMillis() },
                taskStarted: (@Sendable (_ allocation: String, _ task: String) -> Void)? = nil) {
        self.taskStarted = taskStarted
        self.address = address
        self.root = root
        self.nodeName = nodeName
        self.drivers = Dictionary(drivers.map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        self.report = report
        self.now = now
    }

    /// Tasks by state on this node, for the agent's metrics.
    public func taskCounts() -> (running: Int, pending: Int, dead: Int) {
        var c = (running: 0, pending: 0, dead: 0)
        for r in allocs.values {
            for t in r.tasks.values {
                switch t.state.state {
                case .running: c.running += 1
                case .pending: c.pending += 1
                case .dead: c.dead += 1
                }
            }
        }
        return c
    }

    public static func unixMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    // MARK: - State of one allocation

    final class AllocRunner {
        var allocation: Allocation
        var job: Job
        var group: TaskGroup
        var tasks: [String: TaskRun] = [:]
        /// Why it is being stopped, once it is.
        var stopReason: String?
        /// Failed because a task failed (siblings are then killed).
        var failReason: String?
        /// Held more than its disk allowance: its files go once its tasks are dead.
        var diskExceeded = false
        var filesRemoved = false
        /// The cluster no longer lists it: forget it once its tasks are dead.
        var forgotten = false
        var lastReport: AllocationReport?
        var checks: [String: CheckStatus] = [:]
        var checkFailures: [String: Int] = [:]
        /// Bumped whenever checking starts or stops; a check loop of an older generation ends.
        var checkGeneration = 0
        var checking = false

        init(_ a: Allocation, job: Job, group: TaskGroup) {
            allocation = a
            self.job = job
            self.group = group
        }

        var directory: String = ""
    }

    struct TaskRun {
        var spec: TaskSpec
        var state = TaskState()
        var handle: TaskHandle?
        /// Unix ms of restarts inside the policy's interval.
        var restartTimes: [Int64] = []
        var generation = 0
        var starting = false
        var waitingToRestart = false
        var killRequested = false
        var hook: Lifecycle.Hook? { spec.lifecycle?.hook }
        var sidecar: Bool { spec.lifecycle?.sidecar ?? false }
        var isDead: Bool { state.state == .dead }
        var isActive: Bool { handle != nil || starting }
    }

    // MARK: - Inputs

    /// Makes this node run exactly the allocations the cluster assigns to it.
    public func sync(_ assignments: [Assignment]) {
        var seen = Set<String>()
        for a in assignments {
            seen.insert(a.allocation.id)
            if let r = allocs[a.allocation.id] {
                update(r, with: a)
            } else if a.allocation.desiredStatus == .run && (a.allocation.clientStatus == .pending || a.allocation.clientStatus == .running) {
                // Its id names its directory: one that could name another is never run.
                guard Allocation.isValidID(a.allocation.id) else { continue }
                admit(a)
            }
        }
        for (id, r) in allocs where !seen.contains(id) {
            r.forgotten = true
            if r.stopReason == nil { stop(r, reason: "allocation no longer exists") }
            finishIfDone(r)
        }
    }

    func admit(_ a: Assignment) {
        guard let group = a.job.groups.first(where: { $0.name == a.allocation.group }) else { return }
        let r = AllocRunner(a.allocation, job: a.job, group: group)
        r.directory = root + "/" + a.allocation.id
        for t in group.tasks {
            var run = TaskRun(spec: t)
            run.state.record(TaskEvent(time: now(), type: "Received", message: "Task received by node \(nodeName)"))
            r.tasks[t.name] = run
        }
        allocs[a.allocation.id] = r
        persist(r)
        advance(r)
    }

    func update(_ r: AllocRunner, with a: Assignment) {
        let wasVersion = r.allocation.jobVersion
        r.allocation.desiredStatus = a.allocation.desiredStatus
        r.allocation.desiredDescription = a.allocation.desiredDescription
        r.allocation.clientStatus = a.allocation.clientStatus == .lost ? .lost : r.allocation.clientStatus
        if a.allocation.jobVersion != wasVersion, let g = a.job.groups.first(where: { $0.name == r.group.name }) {
            // An in-place update: new job version, same tasks; nothing restarts.
            r.allocation.jobVersion = a.allocation.jobVersion
            r.job = a.job
            r.group = g
            for t in g.tasks { r.tasks[t.name]?.spec = t }
            persist(r)
        }
        if r.stopReason == nil {
            if a.allocation.clientStatus == .lost {
                stop(r, reason: "allocation lost: the cluster replaced it while this node was away")
            } else if a.allocation.desiredStatus != .run {
                stop(r, reason: a.allocation.desiredDescription.isEmpty ? "allocation stopped" : a.allocation.desiredDescription)
            }
        }
    }

    // MARK: - Driving tasks forward

    /// Starts whatever may start now, in lifecycle order.
    func advance(_ r: AllocRunner) {
        let tasks = r.tasks
        let prestartDone = tasks.values.filter { $0.hook == .prestart && !$0.sidecar }.allSatisfy { $0.isDead && !$0.state.failed }
        let prestartUp = tasks.values.filter { $0.hook == .prestart && $0.sidecar }.allSatisfy { $0.state.state == .running }
        let mainTasks = tasks.values.filter { $0.hook == nil }
        let mainRunning = !mainTasks.isEmpty && mainTasks.allSatisfy { $0.state.state == .running }
        let othersDead = tasks.values.filter { $0.hook != .poststop }.allSatisfy(\.isDead)
        for (name, t) in tasks where t.state.state == .pending && !t.isActive && !t.waitingToRestart && !t.killRequested {
            let mayStart: Bool
            if r.stopReason != nil || r.failReason != nil {
                mayStart = t.hook == .poststop && othersDead
            } else {
                switch t.hook {
                case .prestart: mayStart = true
                case nil: mayStart = prestartDone && prestartUp
                case .poststart: mayStart = mainRunning
                case .poststop: mayStart = othersDead
                }
            }
            if mayStart { start(r, name) }
        }
        if (r.stopReason != nil || r.failReason != nil) {
            // Tasks that never started will not now.
            for (name, t) in r.tasks where t.state.state == .pending && !t.isActive && !(t.hook == .poststop && !othersDead) {
                if t.hook == .poststop && othersDead && r.stopReason != nil { continue }
                r.tasks[name]!.waitingToRestart = false
                r.tasks[name]!.state.state = .dead
                r.tasks[name]!.state.finishedAt = now()
            }
        }
        refreshStatus(r)
    }

    func start(_ r: AllocRunner, _ name: String) {
        guard var t = r.tasks[name], let driver = drivers[t.spec.driver] else {
            let driverName = r.tasks[name]?.spec.driver.rawValue ?? "?"
            let error = DriverError("driver \(driverName) is not available on this node", event: "Failed Validation")
            r.tasks[name]?.state.record(TaskEvent(time: now(), type: "Driver Failure", message: error.description))
            taskFailedToStart(r, name, error)
            return
        }
        t.generation += 1
        t.starting = true
        r.tasks[name] = t
        let gen = t.generation
        let allocID = r.allocation.id
        let dirs = TaskDirectories(allocationDirectory: r.directory, taskName: name)
        let env = TaskEnvironment.build(allocation: r.allocation, job: r.job, group: r.group, task: t.spec, node: nodeName,
                                        directories: dirs, isolated: t.spec.driver != .rawExec, address: address)
        let cgroup = TaskCgroup(allocation: allocID, task: name)
        let memory = t.spec.resources.memoryMaxMiB ?? t.spec.resources.memoryMiB
        let ctx = TaskContext(allocationID: allocID, task: t.spec, directories: dirs, environment: env,
                              command: t.spec.config.command.map { TaskEnvironment.interpolate($0, env) },
                              arguments: t.spec.config.args.map { TaskEnvironment.interpolate($0, env) }, cgroup: cgroup,
                              userPolicy: userPolicy, fileSizeLimitBytes: Self.diskAllowanceBytes(r.group), onExit: { [weak self] status in
                                  guard let self else { return }
                                  Task { await self.exited(allocID, name, gen, status) }
                              })
        Task {
            do throws(DriverError) {
                try dirs.create()
                if t.spec.driver == .rawExec {
                    let strays = StrayProcesses.kill(allocation: allocID, task: name)
                    if !strays.isEmpty {
                        self.record(allocID, name, TaskEvent(time: self.now(), type: "Strays Killed",
                                                             message: "killed \(strays.count) untracked process(es) of this task left by an earlier run (pids \(strays.map(String.init).joined(separator: ", ")))"))
                    }
                }
                if cgroup.version != .none && (t.spec.driver != .rawExec || (driver as? RawExecDriver)?.useCgroups == true) {
                    let missing = cgroup.create(memoryMiB: memory, cpuMillicores: t.spec.resources.cpuMillicores,
                                                cpuHardLimit: t.spec.resources.cpuHardLimit)
                    if !missing.isEmpty {
                        self.record(allocID, name, TaskEvent(time: self.now(), type: "Limits", message: "not applied: " + missing.joined(separator: "; ")))
                    }
                }
                let handle = try await driver.start(ctx, events: { e in Task { await self.record(allocID, name, e) } })
                self.started(allocID, name, gen, handle)
            } catch {
                self.startFailed(allocID, name, gen, error)
            }
        }
    }

    func record(_ allocID: String, _ name: String, _ e: TaskEvent) {
        guard let r = allocs[allocID] else { return }
        r.tasks[name]?.state.record(e)
        refreshStatus(r)
    }

    func started(_ allocID: String, _ name: String, _ gen: Int, _ handle: TaskHandle) {
        guard let r = allocs[allocID], var t = r.tasks[name], t.generation == gen, t.starting else {
            // Its exit came first (it ended at once); that path already decided what follows.
            // What the driver set up for it (a container's state, its mounts) still goes.
            if let driver = allocs[allocID]?.tasks[name]?.spec.driver { drivers[driver]?.cleanup(handle) }
            return
        }
        t.starting = false
        t.handle = handle
        t.state.state = .running
        t.state.startedAt = now()
        t.state.record(TaskEvent(time: now(), type: "Started", message: "Task started by \(t.spec.driver.rawValue) (pid \(handle.pid))"))
        r.tasks[name] = t
        taskStarted?(allocID, name)
        persist(r)
        // Started after its allocation was told to stop (a poststop task is what runs then).
        if (r.stopReason != nil || r.failReason != nil) && t.hook != .poststop || t.killRequested { kill(r, name, now: r.diskExceeded) }
        advance(r)
    }

    func startFailed(_ allocID: String, _ name: String, _ gen: Int, _ error: DriverError) {
        guard let r = allocs[allocID], let t = r.tasks[name], t.generation == gen else { return }
        r.tasks[name]!.state.record(TaskEvent(time: now(), type: error.event, message: error.description))
        taskFailedToStart(r, name, error)
    }

    func taskFailedToStart(_ r: AllocRunner, _ name: String, _ error: DriverError) {
        r.tasks[name]?.starting = false
        // A task that cannot be started will not start on retry either when its input is wrong.
        ended(r, name, status: nil, retryable: error.recoverable, reason: error.description)
    }

    func exited(_ allocID: String, _ name: String, _ gen: Int, _ status: ExitStatus) {
        guard let r = allocs[allocID], var t = r.tasks[name], t.generation == gen else { return }
        let cg = TaskCgroup(allocation: allocID, task: name)
        let oom = (status.signal == Int(SIGKILL) || status.code == 137) && !t.killRequested && cg.hitMemoryLimit()
        if let h = t.handle { drivers[t.spec.driver]?.cleanup(h) }
        if t.starting {
            // It ended before its start was reported here (a short task on a busy node): it did
            // start, and its events say so.
            t.state.startedAt = now()
            t.state.record(TaskEvent(time: now(), type: "Started", message: "Task started by \(t.spec.driver.rawValue)"))
        }
        t.handle = nil
        t.starting = false
        t.state.exitCode = status.known ? status.code : nil
        if status.signal == Int(SIGXFSZ) {
            t.state.record(TaskEvent(time: now(), type: "Disk Limit Exceeded",
                                     message: "a file reached the allocation's disk allowance of \(Self.diskAllowanceBytes(r.group) >> 20) MiB (ephemeralDisk and logs)"))
        }
        if oom {
            Counter(label: "caravan_executor_oom_kills_total").increment()
            t.state.record(TaskEvent(time: now(), type: "OOM Killed",
                                     message: "OOM killed: memory limit of \(t.spec.resources.memoryMaxMiB ?? t.spec.resources.memoryMiB) MiB reached"))
        }
        t.state.record(TaskEvent(time: now(), type: "Terminated", message: status.description + (oom ? ", OOM Killed: true" : "")))
        r.tasks[name] = t
        ended(r, name, status: status, retryable: true, reason: oom ? "OOM killed" : status.description)
    }

    /// Decides what follows a task's end: done, restart later, or failed for good.
    func ended(_ r: AllocRunner, _ name: String, status: ExitStatus?, retryable: Bool, reason: String) {
        guard var t = r.tasks[name] else { return }
        let success = status.map { $0.known && $0.code == 0 } ?? false
        let stopping = r.stopReason != nil || r.failReason != nil || t.killRequested
        let batch = r.job.type == .batch || r.job.type == .sysbatch
        let runsToCompletion = batch || (t.hook == .prestart && !t.sidecar) || t.hook == .poststop
        if stopping || (success && runsToCompletion) {
            t.state.state = .dead
            t.state.failed = false
            t.state.finishedAt = now()
            r.tasks[name] = t
            endLeftovers(r, name)
        } else if retryable, let delay = restartDelay(&t, r.group.restart) {
            t.state.state = .pending
            t.state.restarts += 1
            Counter(label: "caravan_executor_task_restarts_total", dimensions: [("driver", t.spec.driver.rawValue)]).increment()
            t.waitingToRestart = true
            t.state.record(TaskEvent(time: now(), type: "Restarting", message: "Task restarting in \(Units.text(delay))"))
            r.tasks[name] = t
            let allocID = r.allocation.id, gen = t.generation
            Task {
                try? await Task.sleep(for: delay)
                self.restartDue(allocID, name, gen)
            }
        } else {
            t.state.state = .dead
            t.state.failed = true
            t.state.finishedAt = now()
            let p = r.group.restart
            t.state.record(TaskEvent(time: now(), type: "Not Restarting",
                                     message: retryable ? "Exceeded allowed attempts \(p.attempts) in interval \(Units.text(p.interval)) and mode is \"\(p.mode.rawValue)\""
                                                        : "Error was unrecoverable: \(reason)"))
            r.tasks[name] = t
            endLeftovers(r, name)
            if t.hook != .poststop && !(t.hook == .poststart) && r.failReason == nil {
                r.failReason = "task \(name) failed: \(reason)"
                stopChecks(r)
                for other in r.tasks.keys where other != name { kill(r, other, event: "Sibling Task Failed") }
            }
        }
        persist(r)
        advance(r)
        finishIfDone(r)
    }

    /// What a task that ended for good left running — a daemon it started, a `setsid` child —
    /// is killed (everything in its cgroup; for a plain process without one, every process that
    /// carries its allocation and task in its environment), and its cgroup removed.
    func endLeftovers(_ r: AllocRunner, _ name: String) {
        let cg = TaskCgroup(allocation: r.allocation.id, task: name)
        let (id, plain) = (r.allocation.id, r.tasks[name]?.spec.driver == .rawExec)
        // Off the executor: killing and waiting for the group to empty takes a moment.
        Self.removalQueue.async {
            for _ in 0..<20 {
                cg.killAll()
                if plain { StrayProcesses.kill(allocation: id, task: name) }
                if cg.isEmpty { break }
                usleep(50_000)
            }
            cg.remove()
        }
    }

    /// The delay before the next restart, or nil when the policy says stop (mode fail).
    func restartDelay(_ t: inout TaskRun, _ p: RestartPolicy) -> Duration? {
        let nowMs = now()
        let intervalMs = Int64(p.interval / .milliseconds(1))
        t.restartTimes.removeAll { nowMs - $0 >= intervalMs }
        if t.restartTimes.count < p.attempts {
            t.restartTimes.append(nowMs)
            return p.delay
        }
        guard p.mode == .delay, let oldest = t.restartTimes.first else { return nil }
        // Mode delay: wait out the interval, then start counting again.
        t.restartTimes = [oldest + intervalMs]
        return .milliseconds(max(p.delay / .milliseconds(1), Double(oldest + intervalMs - nowMs)))
    }

    func restartDue(_ allocID: String, _ name: String, _ gen: Int) {
        guard let r = allocs[allocID], let t = r.tasks[name], t.generation == gen, t.waitingToRestart else { return }
        r.tasks[name]!.waitingToRestart = false
        if r.stopReason != nil || r.failReason != nil {
            r.tasks[name]!.state.state = .dead
            r.tasks[name]!.state.finishedAt = now()
            advance(r)
            finishIfDone(r)
            return
        }
        start(r, name)
        refreshStatus(r)
    }

    // MARK: - Stopping

    func stop(_ r: AllocRunner, reason: String) {
        guard r.stopReason == nil else { return }
        r.stopReason = reason
        stopChecks(r)
        for name in r.tasks.keys { kill(r, name, event: "Killing", message: reason) }
        persist(r)
        advance(r)
        finishIfDone(r)
    }

    /// Sends the task its kill signal, then SIGKILL after its kill timeout (`now`: SIGKILL at once).
    func kill(_ r: AllocRunner, _ name: String, event: String = "Killing", message: String? = nil, now immediately: Bool = false) {
        guard var t = r.tasks[name], !t.isDead else { return }
        if t.waitingToRestart {
            t.killRequested = true
            t.waitingToRestart = false
            t.state.state = .dead
            t.state.finishedAt = now()
            r.tasks[name] = t
            return
        }
        // A task that never started is left to `advance` (a poststop task still has to run).
        guard t.handle != nil || t.starting else { return }
        t.killRequested = true
        guard let handle = t.handle, let driver = drivers[t.spec.driver] else { r.tasks[name] = t; return }
        let sig = immediately ? SIGKILL : Signals.number(t.spec.killSignal) ?? SIGTERM
        t.state.record(TaskEvent(time: now(), type: event, message: (message.map { $0 + "; " } ?? "")
                                 + (immediately ? "sent SIGKILL" : "sent \(t.spec.killSignal), SIGKILL after \(Units.text(killTimeout(t.spec)))")))
        r.tasks[name] = t
        driver.signal(handle, sig)
        if immediately { return }
        let gen = t.generation, allocID = r.allocation.id, timeout = killTimeout(t.spec)
        Task {
            try? await Task.sleep(for: timeout)
            self.killTimedOut(allocID, name, gen)
        }
    }

    func killTimedOut(_ allocID: String, _ name: String, _ gen: Int) {
        guard let r = allocs[allocID], let t = r.tasks[name], t.generation == gen, let h = t.handle else { return }
        r.tasks[name]!.state.record(TaskEvent(time: now(), type: "Killing", message: "kill timeout passed; sent SIGKILL"))
        drivers[t.spec.driver]?.signal(h, SIGKILL)
    }

    /// Once every task is dead: the final report, and the directory removed if the cluster forgot it.
    func finishIfDone(_ r: AllocRunner) {
        refreshStatus(r)
        guard r.tasks.values.allSatisfy(\.isDead) else { return }
        // Files go off the executor and off the disk watch's queue, one removal after another.
        let (dir, specs) = (r.directory, r.tasks.mapValues(\.spec))
        if r.forgotten {
            allocs[r.allocation.id] = nil
            outbox[r.allocation.id] = nil
            Self.removalQueue.async {
                Self.unmountRootfs(dir, specs)
                removeTree(dir)
            }
        } else if r.diskExceeded && !r.filesRemoved {
            r.filesRemoved = true
            persist(r)
            Self.removalQueue.async {
                Self.unmountRootfs(dir, specs)
                Self.removeAllButLogs(dir, specs)
            }
        }
    }

    // MARK: - Status and reports

    func clientStatus(_ r: AllocRunner) -> (Allocation.ClientStatus, String) {
        let all = r.tasks.values
        if let why = r.failReason, all.allSatisfy(\.isDead) { return (.failed, why) }
        if r.allocation.clientStatus == .lost { return (.lost, r.stopReason ?? "lost") }
        if all.allSatisfy(\.isDead) {
            return (.complete, r.stopReason ?? "All tasks have completed")
        }
        let main = all.filter { $0.hook == nil }
        if !main.isEmpty && main.allSatisfy({ $0.state.state == .running }) { return (.running, "Tasks are running") }
        if main.contains(where: { $0.state.state == .running || $0.state.state == .dead }) && r.job.type != .service && r.job.type != .system {
            return (.running, "Tasks are running")
        }
        return (.pending, r.failReason ?? r.stopReason ?? "Tasks are starting")
    }

    func refreshStatus(_ r: AllocRunner) {
        let (status, description) = clientStatus(r)
        if status == .running && !r.checking && r.stopReason == nil && r.failReason == nil && !r.group.services.isEmpty { startChecks(r) }
        let rep = AllocationReport(allocationID: r.allocation.id, clientStatus: status, description: description,
                                   taskStates: r.tasks.mapValues(\.state), checks: r.checks)
        guard rep != r.lastReport else { return }
        r.lastReport = rep
        // A lost allocation's end is not reported: the cluster already replaced it.
        if r.allocation.clientStatus == .lost || r.forgotten { return }
        outbox[r.allocation.id] = rep
        if !flushing {
            flushing = true
            Task { await self.flush() }
        }
    }

    func flush() async {
        // Gather what changes within a few milliseconds into one Raft entry.
        try? await Task.sleep(for: .milliseconds(5))
        while !outbox.isEmpty {
            let batch = Array(outbox.values)
            outbox.removeAll()
            if await report(batch) { continue }
            // Keep the newest of each, and try again shortly.
            for b in batch where outbox[b.allocationID] == nil { outbox[b.allocationID] = b }
            try? await Task.sleep(for: .milliseconds(500))
        }
        flushing = false
    }

    public func handle(allocation: String, task: String) -> TaskHandle? { allocs[allocation]?.tasks[task]?.handle }

    /// Runs a command inside a running task (`caravan alloc exec`): isolated and container tasks
    /// through `runc exec`, raw_exec tasks as a process with the task's environment.
    public func execute(allocation: String, task: String, command: [String], timeout: Duration) async throws(DriverError) -> (code: Int, output: String) {
        let c = try commandContext(allocation: allocation, task: task, command: command, running: false)
        return await c.driver.execute(c.handle, command: command, environment: c.environment, directory: c.directory, timeout: timeout)
    }

    /// Starts an interactive command in a running task (`alloc exec -i`, with `tty` a terminal).
    public func interactive(allocation: String, task: String, command: [String], tty: Bool,
                            rows: UInt16 = 24, columns: UInt16 = 80) async throws(DriverError) -> ExecSession {
        let c = try commandContext(allocation: allocation, task: task, command: command, running: true)
        guard let what = c.driver.interactiveCommand(c.handle, command: command, environment: c.environment, directory: c.directory, tty: tty) else {
            throw DriverError("command \(command[0]) not found for task \(task)")
        }
        return try await ExecSession.start(what, tty: tty, rows: rows, columns: columns)
    }

    /// Where a command in a task runs: the task's handle and driver, its environment and its
    /// directory. With `running`, a task that has ended (though its handle is kept) is refused too.
    private func commandContext(allocation: String, task: String, command: [String], running: Bool) throws(DriverError)
        -> (handle: TaskHandle, driver: any TaskDriver, environment: [String: String], directory: String) {
        guard let r = allocs[allocation], let t = r.tasks[task] else { throw DriverError("this node runs no task \(task) of allocation \(allocation)") }
        guard let handle = t.handle, let driver = drivers[t.spec.driver], !(running && t.isDead) else {
            throw DriverError("task \(task) is not running (\(t.state.state.rawValue))")
        }
        guard !command.isEmpty else { throw DriverError("no command given", event: "Failed Validation") }
        let dirs = TaskDirectories(allocationDirectory: r.directory, taskName: task)
        let env = TaskEnvironment.build(allocation: r.allocation, job: r.job, group: r.group, task: t.spec, node: nodeName,
                                        directories: dirs, isolated: t.spec.driver != .rawExec, address: address)
        return (handle, driver, env, dirs.task)
    }

    /// The log files of one task (rotated ones first), or nil if this node does not hold it.
    public func logFiles(allocation: String, task: String, stderr: Bool) -> [String]? {
        guard let r = allocs[allocation], r.tasks[task] != nil else {
            // Forgotten allocations' logs are gone with their directory; finished ones stay readable.
            let dirs = TaskDirectories(allocationDirectory: root + "/" + allocation, taskName: task)
            return access(dirs.stdout, F_OK) == 0 ? LogRotation.files(stderr ? dirs.stderr : dirs.stdout) : nil
        }
        let dirs = TaskDirectories(allocationDirectory: r.directory, taskName: task)
        return LogRotation.files(stderr ? dirs.stderr : dirs.stdout)
    }

    /// Whether the task has ended for good (dead, not waiting to restart), or is unknown here.
    public func taskHasEnded(allocation: String, task: String) -> Bool {
        guard let t = allocs[allocation]?.tasks[task] else { return true }
        return t.isDead && !t.waitingToRestart
    }

    /// What the disk watch looks at in one allocation whose tasks may be running.
    struct DiskTarget: Sendable {
        var allocation: String
        var directory: String
        /// Its `ephemeralDisk` plus what its tasks' logs may keep (both streams, every file).
        var limitBytes: Int
        var diskMiB: Int
        var logs: [(path: String, maxBytes: Int, maxFiles: Int)]
        var containerTasks: Set<String>
    }

    /// What an allocation of `group` may keep on disk: its `ephemeralDisk` and, on top, what
    /// its tasks' logs may keep (both streams, every rotated file). No file a task writes may
    /// grow past it either (RLIMIT_FSIZE), so one runaway file is stopped at once.
    public static func diskAllowanceBytes(_ group: TaskGroup) -> Int { group.diskMiB << 20 }

    func diskTargets() -> [DiskTarget] {
        allocs.values.compactMap { r in
            // Every allocation with a task that may still write (a poststop task after a failure too).
            guard r.tasks.values.contains(where: \.isActive) else { return nil }
            var logs: [(path: String, maxBytes: Int, maxFiles: Int)] = []
            for (name, t) in r.tasks where t.isActive {
                let dirs = TaskDirectories(allocationDirectory: r.directory, taskName: name)
                logs += [dirs.stdout, dirs.stderr].map { ($0, t.spec.logs.maxFileSizeMiB << 20, t.spec.logs.maxFiles) }
            }
            return DiskTarget(allocation: r.allocation.id, directory: r.directory, limitBytes: Self.diskAllowanceBytes(r.group),
                              diskMiB: r.group.ephemeralDiskMiB, logs: logs,
                              containerTasks: Set(r.tasks.filter { $0.value.spec.driver == .container }.keys))
        }
    }

    /// Every `interval` until cancelled: rotates task logs past their size, then fails each
    /// allocation whose directory holds more than its `ephemeralDisk` and its logs' allowance
    /// (as the kubelet evicts a pod past its ephemeral-storage limit). The files are walked off
    /// the executor, so a large tree never holds up the tasks' bookkeeping.
    public nonisolated func watchDisk(every interval: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            for t in await diskTargets() {
                // Walked on a thread of its own, not one of the few the agent's tasks share.
                let measured = await withCheckedContinuation { c in
                    Self.walkQueue.async {
                        for l in t.logs { LogRotation.rotateIfNeeded(l.path, maxBytes: l.maxBytes, maxFiles: l.maxFiles) }
                        c.resume(returning: DiskUsage.measure(t.directory, stopAt: t.limitBytes, containerTasks: t.containerTasks))
                    }
                }
                switch measured {
                case .bytes(let used) where used > t.limitBytes:
                    await diskExceeded(t.allocation, "ephemeral disk exceeded: over \(t.limitBytes >> 20) MiB used (ephemeralDisk \(min(t.diskMiB, t.limitBytes >> 20)) MiB and its logs' \((t.limitBytes >> 20) - min(t.diskMiB, t.limitBytes >> 20)) MiB)")
                case .tooDeep:
                    await diskExceeded(t.allocation, "ephemeral disk exceeded: directories nested deeper than \(DiskUsage.maxDepth) levels")
                case .foreignFilesystem:
                    await diskExceeded(t.allocation, "ephemeral disk exceeded: another filesystem inside its directories (a mount or a subvolume) would not be counted")
                case .tooMany:
                    await diskExceeded(t.allocation, "ephemeral disk exceeded: more than \(DiskUsage.maxEntries) files and directories")
                case .bytes: break
                }
            }
        }
    }

    /// Fails the allocation: its tasks are killed and not restarted; the cluster places it anew
    /// (elsewhere, with an empty directory) as its reschedule policy says.
    /// Its tasks get SIGKILL at once (no grace to write more in), and once they are dead its
    /// files are removed but for its logs.
    func diskExceeded(_ allocID: String, _ reason: String) {
        guard let r = allocs[allocID] else { return }
        if !r.diskExceeded { Counter(label: "caravan_executor_disk_limit_kills_total").increment() }
        r.diskExceeded = true
        if r.failReason == nil && r.stopReason == nil { r.failReason = reason }
        stopChecks(r)
        for name in r.tasks.keys {
            r.tasks[name]?.killRequested = false
            kill(r, name, event: "Disk Limit Exceeded", message: reason, now: true)
        }
        persist(r)
        advance(r)
        finishIfDone(r)
    }

    static let walkQueue = DispatchQueue(label: "caravan.executor.disk")
    static let removalQueue = DispatchQueue(label: "caravan.executor.removal")

    /// Detaches what a container task left mounted as its root (its driver does when the task
    /// ends; not when the agent was down then). Reached through descriptors, never a link.
    static func unmountRootfs(_ directory: String, _ specs: [String: TaskSpec]) {
        for (name, spec) in specs where spec.driver == .container {
            let task = open(directory + "/" + name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard task >= 0 else { continue }
            let bundle = openat(task, "bundle", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            close(task)
            guard bundle >= 0 else { continue }
            _ = umount2("/proc/self/fd/\(bundle)/rootfs", Int32(MNT_DETACH) | 8 /* UMOUNT_NOFOLLOW */)
            close(bundle)
        }
    }

    /// Frees what an allocation over its allowance wrote: everything in its directory but its
    /// tasks' log files, each cut to its size (kept for `alloc logs` until the cluster forgets
    /// it). Through descriptors and raw names: nothing renamed, nothing followed.
    static func removeAllButLogs(_ directory: String, _ specs: [String: TaskSpec]) {
        let top = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard top >= 0 else { return }
        defer { close(top) }
        func each(_ dir: Int32, _ body: ([CChar]) -> Void) {
            let listing = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard listing >= 0, let d = fdopendir(listing) else { if listing >= 0 { close(listing) }; return }
            var names: [[CChar]] = []
            while let e = readdir(d) {
                let n: [CChar] = withUnsafeBytes(of: e.pointee.d_name) { raw in raw.prefix { $0 != 0 }.map { CChar(bitPattern: $0) } }
                if n != [0x2E] && n != [0x2E, 0x2E] { names.append(n) }
            }
            closedir(d)
            names.forEach(body)
        }
        let keep = Array("alloc".utf8CString.dropLast())
        let state = [Array("state.json".utf8CString.dropLast()), Array("state.json.tmp".utf8CString.dropLast())]
        each(top) { n in if n != keep && !state.contains(n) { removeEntry(top, n) } }
        let shared = openat(top, "alloc", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard shared >= 0 else { return }
        defer { close(shared) }
        each(shared) { n in if n != Array("logs".utf8CString.dropLast()) { removeEntry(shared, n) } }
        let logs = openat(shared, "logs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard logs >= 0 else { return }
        defer { close(logs) }
        // Per stream, the live file and the newest maxFiles − 1 rotated ones: what logs may keep.
        var kept: Set<String> = []
        for (name, spec) in specs {
            for stream in [name + ".stdout", name + ".stderr"] {
                kept.insert(stream)
                let dirs = TaskDirectories(allocationDirectory: directory, taskName: name)
                let rotated = LogRotation.rotated(stream == name + ".stdout" ? dirs.stdout : dirs.stderr)
                for i in rotated.suffix(max(0, min(spec.logs.maxFiles, 100) - 1)) { kept.insert("\(stream).\(i)") }
            }
        }
        each(logs) { n in
            let text = String(decoding: n.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let owner = kept.contains(text) && Array(text.utf8CString.dropLast()) == n
                ? specs.first { name, _ in text.hasPrefix(name + ".stdout") || text.hasPrefix(name + ".stderr") } : nil
            var st = stat()
            guard let (_, spec) = owner, fstatat(logs, n + [0], &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_mode & S_IFMT == S_IFREG else {
                removeEntry(logs, n)
                return
            }
            let fd = openat(logs, n + [0], O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            var fs = stat()
            if fd >= 0, fstat(fd, &fs) == 0, fs.st_mode & S_IFMT == S_IFREG, fs.st_nlink == 1 {
                ftruncate(fd, off_t(min(Int(fs.st_size), spec.logs.maxFileSizeMiB << 20)))
            } else {
                removeEntry(logs, n)
            }
            if fd >= 0 { close(fd) }
        }
    }

    // MARK: - Service checks

    func startChecks(_ r: AllocRunner) {
        let runs = CheckRun.all(group: r.group, ports: r.allocation.ports)
        guard !runs.isEmpty else { return }
        r.checking = true
        r.checkGeneration += 1
        let gen = r.checkGeneration, allocID = r.allocation.id
        for c in runs {
            if r.checks[c.name] == nil { r.checks[c.name] = .pending }
            Task {
                while true {
                    try? await Task.sleep(for: c.check.interval)
                    guard let probe = self.probe(allocID, gen, c) else { return }
                    let (status, output) = await probe()
                    guard self.checkResult(allocID, gen, c, status, output) else { return }
                }
            }
        }
    }

    func stopChecks(_ r: AllocRunner) {
        r.checking = false
        r.checkGeneration += 1
    }

    /// The probe to run now, or nil when checking this allocation has stopped.
    func probe(_ allocID: String, _ gen: Int, _ c: CheckRun) -> (@Sendable () async -> (CheckStatus, String))? {
        guard let r = allocs[allocID], r.checkGeneration == gen, r.checking else { return nil }
        let timeout = c.check.timeout, host = address
        switch c.check.type {
        case .http:
            guard let port = c.port else { return { (.critical, "no port") } }
            let path = c.check.path ?? "/"
            return { await Probe.http(host: host, port: port, path: path, timeout: timeout) }
        case .tcp:
            guard let port = c.port else { return { (.critical, "no port") } }
            return { await Probe.tcp(host: host, port: port, timeout: timeout) }
        case .script:
            guard let t = r.tasks[c.task], let handle = t.handle, let driver = drivers[t.spec.driver], let cmd = c.check.command else {
                return { (.critical, "task \(c.task) is not running") }
            }
            let dirs = TaskDirectories(allocationDirectory: r.directory, taskName: c.task)
            let env = TaskEnvironment.build(allocation: r.allocation, job: r.job, group: r.group, task: t.spec, node: nodeName,
                                            directories: dirs, isolated: t.spec.driver != .rawExec, address: address)
            let command = [cmd] + c.check.args.map { TaskEnvironment.interpolate($0, env) }
            return {
                let (code, output) = await driver.execute(handle, command: command, environment: env, directory: dirs.task, timeout: timeout)
                // Nomad's convention: 0 passing, 1 warning, anything else critical.
                return (code == 0 ? .passing : code == 1 ? .warning : .critical, output)
            }
        }
    }

    /// Records a check's result; false when checking has stopped. After `restartAfter`
    /// consecutive failures the task is restarted (its restart policy counts it).
    func checkResult(_ allocID: String, _ gen: Int, _ c: CheckRun, _ status: CheckStatus, _ output: String) -> Bool {
        guard let r = allocs[allocID], r.checkGeneration == gen, r.checking else { return false }
        let was = r.checks[c.name]
        r.checks[c.name] = status
        if status == .critical {
            r.checkFailures[c.name, default: 0] += 1
        } else {
            r.checkFailures[c.name] = 0
        }
        if was != status, r.tasks[c.task] != nil {
            let line = output.split(separator: "\n").last.map(String.init) ?? ""
            r.tasks[c.task]!.state.record(TaskEvent(time: now(), type: status == .passing ? "Check Passing" : "Check Failing",
                                                    message: "\(c.name): \(status.rawValue)\(line.isEmpty ? "" : " (\(line.prefix(200)))")"))
        }
        if c.check.restartAfter > 0, (r.checkFailures[c.name] ?? 0) >= c.check.restartAfter,
           let t = r.tasks[c.task], let handle = t.handle, let driver = drivers[t.spec.driver] {
            r.checkFailures[c.name] = 0
            r.tasks[c.task]!.state.record(TaskEvent(time: now(), type: "Restart Signaled",
                                                    message: "check \(c.name) failed \(c.check.restartAfter) times in a row"))
            driver.signal(handle, Signals.number(t.spec.killSignal) ?? SIGTERM)
            let taskGen = t.generation, timeout = killTimeout(t.spec), name = c.task
            Task {
                try? await Task.sleep(for: timeout)
                self.killTimedOut(allocID, name, taskGen)
            }
            // Checking starts again once the task runs again.
            stopChecks(r)
        }
        refreshStatus(r)
        return r.checking && r.checkGeneration == gen
    }

    // MARK: - Persistence and recovery

    struct Persisted: Codable {
        struct PTask: Codable {
            var state: TaskState
            var handle: TaskHandle?
            var restartTimes: [Int64]
            var killRequested: Bool
        }
        var id: String
        var namespace: String
        var jobID: String
        var jobVersion: Int
        var group: String
        var name: String
        var nodeID: String
        var cpu: Int
        var memory: Int
        var disk: Int
        var ports: [String: Int]
        var job: String
        var stopReason: String?
        var failReason: String?
        var tasks: [String: PTask]
        /// Failed for disk: once its tasks are dead its files are removed (again after a restart).
        var diskExceeded: Bool?
    }

    func persist(_ r: AllocRunner) {
        let a = r.allocation
        let p = Persisted(id: a.id, namespace: a.namespace, jobID: a.jobID, jobVersion: a.jobVersion, group: a.group, name: a.name,
                          nodeID: a.nodeID, cpu: a.cpuMillicores, memory: a.memoryMiB, disk: a.diskMiB, ports: a.ports,
                          job: JobFile.render(r.job), stopReason: r.stopReason, failReason: r.failReason,
                          tasks: r.tasks.mapValues { .init(state: $0.state, handle: $0.handle, restartTimes: $0.restartTimes, killRequested: $0.killRequested) },
                          diskExceeded: r.diskExceeded ? true : nil)
        guard let data = try? JSONEncoder().encode(p) else { return }
        mkdirAll(r.directory)
        try? writeFile(r.directory + "/state.json", String(decoding: data, as: UTF8.self))
    }

    /// Loads what the previous run left and finds its tasks again: those still running are
    /// watched, not restarted; those that ended meanwhile are handled by their restart policy.
    /// Returns how many tasks were found running.
    @discardableResult
    public func recover() -> Int {
        mkdirAll(root)
        // Allocation ids are not listed to tasks: a task cannot find (and fill) another's directory.
        chmod(root, 0o711)
        var found = 0
        for id in listDirectory(root) where !id.hasPrefix(".") {
            guard let text = readSmallFile(root + "/" + id + "/state.json"),
                  let p = try? JSONDecoder().decode(Persisted.self, from: Data(text.utf8)),
                  let job = try? JobFile.parse(p.job, file: "state", stored: true), let group = job.groups.first(where: { $0.name == p.group }) else { continue }
            var a = Allocation(id: p.id, jobID: p.jobID, jobVersion: p.jobVersion, group: p.group, name: p.name, nodeID: p.nodeID,
                               cpuMillicores: p.cpu, memoryMiB: p.memory, diskMiB: p.disk)
            a.namespace = p.namespace
            a.ports = p.ports
            let r = AllocRunner(a, job: job, group: group)
            r.directory = root + "/" + id
            r.stopReason = p.stopReason
            r.failReason = p.failReason
            r.diskExceeded = p.diskExceeded ?? false
            allocs[id] = r
            var lost: [String] = []
            for t in group.tasks {
                guard let pt = p.tasks[t.name] else { continue }
                var run = TaskRun(spec: t)
                run.state = pt.state
                run.restartTimes = pt.restartTimes
                run.killRequested = pt.killRequested
                run.generation = 1
                if let h = pt.handle, let driver = drivers[t.driver] {
                    let allocID = id, name = t.name
                    if driver.recover(h, onExit: { [weak self] (status: ExitStatus) in
                        guard let self else { return }
                        Task { await self.exited(allocID, name, 1, status) }
                    }) {
                        run.handle = h
                        found += 1
                    } else {
                        lost.append(t.name)
                        run.handle = h
                    }
                } else if run.state.state == .running {
                    lost.append(t.name)
                } else if run.state.state == .pending && run.state.restarts > 0 {
                    // It was waiting to restart when the agent stopped.
                    run.state.state = .pending
                }
                r.tasks[t.name] = run
            }
            for name in lost { exited(id, name, 1, .unknown) }
            advance(r)
            finishIfDone(r)
        }
        return found
    }
}
