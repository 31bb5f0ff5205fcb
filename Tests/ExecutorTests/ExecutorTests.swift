import CaravanModel
@testable import Executor
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing

/// Collects what the executor reports, and waits for a condition on it with a deadline.
///
/// A passing wait returns as soon as the condition holds.
final class ReportLog: Sendable {
    let latest = Mutex<[String: AllocationReport]>([:])
    let count = Mutex(0)

    var sink: @Sendable ([AllocationReport]) async -> Bool {
        { reports in
            self.latest.withLock { m in for r in reports { m[r.allocationID] = r } }
            self.count.withLock { $0 += reports.count }
            return true
        }
    }

    func report(_ id: String) -> AllocationReport? { latest.withLock { $0[id] } }

    func wait(_ what: String, timeout: Duration = .seconds(120), _ check: (AllocationReport?) -> Bool, id: String) async throws {
        // The budget counts polls, not wall time: while the suite's CPU-bound simulations hold
        // every thread of the cooperative pool, neither the executor nor this loop runs, and
        // that time must not count against the executor.
        let polls = Int(timeout / .milliseconds(20))
        for _ in 0..<polls {
            if check(report(id)) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        if check(report(id)) { return }
        Issue.record("timed out waiting for \(what); last report: \(String(describing: report(id)))")
        throw CancellationError()
    }
}

func tempDir(_ name: String) -> String {
    let d = "/tmp/caravan-executor-tests/\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    mkdirAll(d)
    return d
}

func assignment(_ id: String, type: Job.Kind = .service, tasks: [TaskSpec], restart: RestartPolicy? = nil,
                ports: [String: Int] = [:]) -> Assignment {
    var g = TaskGroup(name: "g", count: 1, for: type, tasks: tasks)
    if let restart { g.restart = restart }
    var job = Job(id: "job-\(id)", groups: [g])
    job.type = type
    var a = Allocation(id: id, jobID: job.id, jobVersion: 0, group: "g", name: "\(job.id).g[0]", nodeID: "n1",
                       cpuMillicores: 100, memoryMiB: 64, diskMiB: 10)
    a.ports = ports
    return Assignment(allocation: a, job: job)
}

func shell(_ name: String, _ script: String, driver: TaskSpec.Driver = .rawExec, memory: Int = 64) -> TaskSpec {
    var t = TaskSpec(name: name, driver: driver, config: DriverConfig(command: "/bin/sh", args: ["-c", script]))
    t.resources = Resources(cpuMillicores: 100, memoryMiB: memory)
    t.killTimeout = .seconds(2)
    return t
}

let fastRestart = RestartPolicy(attempts: 2, interval: .seconds(60), delay: .milliseconds(50), mode: .fail)

@Suite("Executor: raw_exec") struct RawExecTests {
    @Test("a task runs with Caravan's environment and its output lands in the task's log file")
    func runsAndLogs() async throws {
        let root = tempDir("raw")
        let log = ReportLog()
        let ex = Executor(root: root, nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        let a = assignment("a1", type: .batch, tasks: [shell("main", "echo id=$CARAVAN_ALLOC_ID port=$CARAVAN_PORT_http mem=$CARAVAN_MEMORY_LIMIT; echo oops >&2")],
                           ports: ["http": 25123])
        await ex.sync([a])
        try await log.wait("complete", { $0?.clientStatus == .complete }, id: "a1")
        let files = try #require(await ex.logFiles(allocation: "a1", task: "main", stderr: false))
        let out = String(decoding: LogRotation.read(files, offset: 0, length: 1 << 16).bytes, as: UTF8.self)
        #expect(out == "id=a1 port=25123 mem=64\n")
        let err = try #require(await ex.logFiles(allocation: "a1", task: "main", stderr: true))
        #expect(String(decoding: LogRotation.read(err, offset: 0, length: 100).bytes, as: UTF8.self) == "oops\n")
        let st = try #require(log.report("a1")?.taskStates["main"])
        #expect(st.state == .dead && !st.failed && st.exitCode == 0)
        #expect(st.events.map(\.type) == ["Received", "Started", "Terminated"])
    }

    /// A driver whose task ends before its start is reported back (a short task on a busy node).
    final class EndsAtOnce: TaskDriver, @unchecked Sendable {
        let cleanups = Mutex(0)
        var name: TaskSpec.Driver { .rawExec }
        func fingerprint() -> (usable: Bool, detail: String) { (true, "") }
        func start(_ context: TaskContext, events: @Sendable (TaskEvent) -> Void) async throws(DriverError) -> TaskHandle {
            context.onExit(ProcessExitStatus(code: 0))
            try? await Task.sleep(for: .milliseconds(100))
            return TaskHandle(pid: 1, startTime: 0)
        }
        func recover(_ handle: TaskHandle, onExit: @escaping @Sendable (ProcessExitStatus) -> Void) -> Bool { false }
        func signal(_ handle: TaskHandle, _ signal: Int32) {}
        func cleanup(_ handle: TaskHandle) { cleanups.withLock { $0 += 1 } }
        func execute(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                     timeout: Duration) async -> (code: Int, output: String) { (0, "") }
        func interactiveCommand(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                                tty: Bool) -> InteractiveCommand? { nil }
    }

    @Test("a task that ends before its start is reported still says it started, and what the driver set up goes")
    func endsBeforeItsStartIsReported() async throws {
        let log = ReportLog()
        let driver = EndsAtOnce()
        let ex = Executor(root: tempDir("raw-quick"), nodeName: "n1", drivers: [driver], report: log.sink)
        await ex.sync([assignment("q1", type: .batch, tasks: [shell("main", "true")])])
        try await log.wait("complete", { $0?.clientStatus == .complete }, id: "q1")
        let st = try #require(log.report("q1")?.taskStates["main"])
        #expect(st.events.map(\.type) == ["Received", "Started", "Terminated"])
        #expect(st.startedAt != nil)
        let deadline = ContinuousClock.now + .seconds(5)
        while driver.cleanups.withLock({ $0 }) == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(driver.cleanups.withLock { $0 } == 1)
    }

    @Test("a task that names a user runs as it, and so do commands run in it", .enabled(if: geteuid() == 0))
    func runsAsItsUser() async throws {
        let log = ReportLog()
        let ex = Executor(root: tempDir("raw-user"), nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        var t = shell("main", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); echo x > local/f && echo local-writable; exec sleep 60")
        t.user = "nobody"
        await ex.sync([assignment("u1", tasks: [t])])
        try await log.wait("running", { $0?.clientStatus == .running }, id: "u1")
        for _ in 0..<500 {
            let files = await ex.logFiles(allocation: "u1", task: "main", stderr: false) ?? []
            if String(decoding: LogRotation.read(files, offset: 0, length: 4096).bytes, as: UTF8.self).contains("local-writable") { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        let files = try #require(await ex.logFiles(allocation: "u1", task: "main", stderr: false))
        #expect(String(decoding: LogRotation.read(files, offset: 0, length: 4096).bytes, as: UTF8.self) == "uid=65534 gid=65534 groups=65534\nlocal-writable\n")
        let who = try await ex.execute(allocation: "u1", task: "main", command: ["id", "-u"], timeout: .seconds(10))
        #expect(who.output == "65534\n", "\(who)")
        var stop = assignment("u1", tasks: [t])
        stop.allocation.desiredStatus = .stop
        await ex.sync([stop])
        // An agent that checks raw_exec users refuses a task that would run as it (root) unnamed.
        await ex.setUserPolicy(TaskUserPolicy(deniedUids: [0...0], drivers: [.rawExec]))
        await ex.sync([assignment("u2", type: .batch, tasks: [shell("main", "true")])])
        try await log.wait("refused", { $0?.clientStatus == .failed }, id: "u2")
        #expect(log.report("u2")!.taskStates["main"]?.events.contains { $0.message.contains("user the agent's user (uid 0) may not run raw_exec tasks") } == true,
                "\(log.report("u2")!)")
    }

    @Test("a crashing task restarts per policy, then stops with attempts exhausted and fails the allocation")
    func restartsThenFails() async throws {
        let log = ReportLog()
        let ex = Executor(root: tempDir("crash"), nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        await ex.sync([assignment("a2", tasks: [shell("main", "exit 3")], restart: fastRestart)])
        try await log.wait("failed", { $0?.clientStatus == .failed }, id: "a2")
        let st = try #require(log.report("a2")?.taskStates["main"])
        #expect(st.state == .dead && st.failed && st.restarts == 2 && st.exitCode == 3)
        #expect(st.events.filter { $0.type == "Restarting" }.count == 2)
        #expect(st.events.last?.type == "Not Restarting")
        #expect(st.events.last?.message.contains("Exceeded allowed attempts 2") == true)
    }

    @Test("a missing command is a clear task event and fails only that allocation")
    func missingCommand() async throws {
        let log = ReportLog()
        let ex = Executor(root: tempDir("missing"), nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        var bad = TaskSpec(name: "main", driver: .rawExec, config: DriverConfig(command: "no-such-command-here"))
        bad.killTimeout = .seconds(1)
        await ex.sync([assignment("a3", tasks: [bad], restart: fastRestart), assignment("ok", tasks: [shell("main", "sleep 30")])])
        try await log.wait("failed", { $0?.clientStatus == .failed }, id: "a3")
        try await log.wait("other running", { $0?.clientStatus == .running }, id: "ok")
        let ev = try #require(log.report("a3")?.taskStates["main"]?.events)
        #expect(ev.contains { $0.type == "Driver Failure" && $0.message.contains("command no-such-command-here not found") })
        await ex.sync([])
    }

    @Test("stopping sends the kill signal, then SIGKILL after the kill timeout")
    func killTimeout() async throws {
        let log = ReportLog()
        let ex = Executor(root: tempDir("kill"), nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        var a = assignment("a4", tasks: [shell("main", "trap '' TERM; echo ready; while true; do sleep 0.1; done")])
        await ex.sync([a])
        try await log.wait("running", { $0?.clientStatus == .running }, id: "a4")
        a.allocation.desiredStatus = .stop
        let t0 = ContinuousClock.now
        await ex.sync([a])
        try await log.wait("complete", { $0?.clientStatus == .complete }, id: "a4")
        let took = ContinuousClock.now - t0
        #expect(took >= .seconds(2))
        let st = try #require(log.report("a4")?.taskStates["main"])
        #expect(st.exitCode == 137 && !st.failed)
        #expect(st.events.contains { $0.message.contains("sent SIGKILL") })
    }

    @Test("a job's kill timeout is capped by the agent's: a task ignoring SIGTERM cannot linger for its hour")
    func killTimeoutIsCapped() async throws {
        let log = ReportLog()
        let ex = Executor(root: tempDir("kill-cap"), nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        await ex.setMaxKillTimeout(.seconds(1))
        var t = shell("main", "trap '' TERM; while true; do sleep 0.1; done")
        t.killTimeout = .seconds(3600)
        var a = assignment("a9", tasks: [t])
        await ex.sync([a])
        try await log.wait("running", { $0?.clientStatus == .running }, id: "a9")
        a.allocation.desiredStatus = .stop
        let t0 = ContinuousClock.now
        await ex.sync([a])
        try await log.wait("complete", { $0?.clientStatus == .complete }, id: "a9")
        #expect(ContinuousClock.now - t0 < .seconds(10))
        let st = try #require(log.report("a9")?.taskStates["main"])
        #expect(st.exitCode == 137 && st.events.contains { $0.message.contains("SIGKILL after 1s") }, "\(st.events)")
    }

    @Test("prestart tasks run before the main task, poststop after it")
    func lifecycle() async throws {
        let root = tempDir("hooks")
        let log = ReportLog()
        let ex = Executor(root: root, nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        var pre = shell("pre", "echo pre >> $CARAVAN_ALLOC_DIR/order")
        pre.lifecycle = Lifecycle(hook: .prestart)
        // It takes a moment: a poststop task is not killed for starting after the stop.
        var post = shell("post", "sleep 0.5; echo post >> $CARAVAN_ALLOC_DIR/order")
        post.lifecycle = Lifecycle(hook: .poststop)
        let main = shell("main", "echo main >> $CARAVAN_ALLOC_DIR/order")
        await ex.sync([assignment("a5", type: .batch, tasks: [post, main, pre])])
        try await log.wait("complete", { $0?.clientStatus == .complete }, id: "a5")
        #expect(readSmallFile(root + "/a5/alloc/order") == "pre\nmain\npost\n")
    }

    @Test("stopping a service runs its poststop task after the main task is killed")
    func poststopOnStop() async throws {
        let root = tempDir("poststop")
        let log = ReportLog()
        let ex = Executor(root: root, nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        // It takes a moment: a poststop task is not killed for starting after the stop.
        var post = shell("post", "sleep 0.5; echo post >> $CARAVAN_ALLOC_DIR/order")
        post.lifecycle = Lifecycle(hook: .poststop)
        var a = assignment("p1", tasks: [shell("main", "echo main >> $CARAVAN_ALLOC_DIR/order; exec sleep 60"), post])
        await ex.sync([a])
        try await log.wait("running", { $0?.clientStatus == .running }, id: "p1")
        a.allocation.desiredStatus = .stop
        await ex.sync([a])
        try await log.wait("complete", { $0?.clientStatus == .complete }, id: "p1")
        #expect(readSmallFile(root + "/p1/alloc/order") == "main\npost\n")
        #expect(log.report("p1")?.taskStates["post"]?.state == .dead)
    }

    @Test("what a task leaves running when it ends (a setsid child) is killed with it")
    func leftoversEndWithTheirTask() async throws {
        let log = ReportLog()
        let root = tempDir("leftovers")
        let ex = Executor(root: root, nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        await ex.sync([assignment("l1", type: .batch, tasks: [shell("main", "setsid sleep 1000 > /dev/null 2>&1 < /dev/null & echo $! > pid")])])
        try await log.wait("done", { $0?.clientStatus == .complete }, id: "l1")
        let pid = try #require(Int32((readSmallFile(root + "/l1/main/pid") ?? "").filter(\.isNumber)))
        for _ in 0..<100 where kill(pid, 0) == 0 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(kill(pid, 0) != 0, "the setsid child \(pid) outlived its task")
    }

    @Test("after an agent restart the same process is found again, not restarted; one that died meanwhile is restarted")
    func recovers() async throws {
        let root = tempDir("recover")
        let log1 = ReportLog()
        var ex: Executor? = Executor(root: root, nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log1.sink)
        await ex!.sync([assignment("keep", tasks: [shell("main", "sleep 60")]), assignment("dies", tasks: [shell("main", "sleep 60")], restart: fastRestart)])
        try await log1.wait("running", { $0?.clientStatus == .running }, id: "keep")
        try await log1.wait("running", { $0?.clientStatus == .running }, id: "dies")
        let keepPid = try #require(await ex!.handle(allocation: "keep", task: "main")).pid
        let diesPid = try #require(await ex!.handle(allocation: "dies", task: "main")).pid
        let diesStart = try #require(ProcessIdentity.startTime(of: diesPid))
        ex = nil  // the agent goes away; its tasks do not
        kill(diesPid, SIGKILL)
        // The signal lands asynchronously: the new executor must look once the process has ended.
        for _ in 0..<5000 where ProcessIdentity.isAlive(pid: diesPid, startTime: diesStart) { try await Task.sleep(for: .milliseconds(2)) }
        #expect(ProcessIdentity.startTime(of: keepPid) != nil)
        let log2 = ReportLog()
        let ex2 = Executor(root: root, nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log2.sink)
        #expect(await ex2.recover() == 1)
        #expect(await ex2.handle(allocation: "keep", task: "main")?.pid == keepPid)
        try await log2.wait("restarted", { ($0?.taskStates["main"]?.restarts ?? 0) == 1 && $0?.clientStatus == .running }, id: "dies")
        let ev = try #require(log2.report("dies")?.taskStates["main"]?.events)
        #expect(ev.contains { $0.message.contains("exit code unknown") })
        #expect(log2.report("keep")?.taskStates["main"]?.restarts ?? 0 == 0)
        await ex2.sync([])
        try await log2.wait("gone", { _ in ProcessIdentity.startTime(of: keepPid) == nil }, id: "keep")
    }
}

/// An agent killed after starting a task but before saving its state comes back without the
/// task's pid: the process it started must not keep running beside a second copy.
@Suite("Executor: untracked processes") struct StrayProcessTests {
    @Test func aTaskStartedBeforeTheStateWasSavedIsNotRunTwice() async throws {
        let root = tempDir("strays")
        let log1 = ReportLog()
        var ex: Executor? = Executor(root: root, nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log1.sink)
        await ex!.sync([assignment("twice", tasks: [shell("main", "sleep 120")])])
        try await log1.wait("running", { $0?.clientStatus == .running }, id: "twice")
        let first = try #require(await ex!.handle(allocation: "twice", task: "main")).pid
        let firstStart = try #require(ProcessIdentity.startTime(of: first))
        ex = nil
        // As if the agent died before `state.json` recorded the process.
        unlink(root + "/twice/state.json")
        let log2 = ReportLog()
        let ex2 = Executor(root: root, nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log2.sink)
        #expect(await ex2.recover() == 0)
        await ex2.sync([assignment("twice", tasks: [shell("main", "sleep 120")])])
        try await log2.wait("running again", { $0?.clientStatus == .running }, id: "twice")
        let second = try #require(await ex2.handle(allocation: "twice", task: "main")).pid
        #expect(second != first)
        for _ in 0..<2500 where ProcessIdentity.isAlive(pid: first, startTime: firstStart) { try await Task.sleep(for: .milliseconds(2)) }
        #expect(!ProcessIdentity.isAlive(pid: first, startTime: firstStart), "the first copy still runs")
        let events = log2.report("twice")?.taskStates["main"]?.events ?? []
        #expect(events.contains { $0.type == "Strays Killed" && $0.message.contains("\(first)") }, "\(events)")
        await ex2.sync([])
        try await log2.wait("gone", { _ in ProcessIdentity.startTime(of: second) == nil }, id: "twice")
    }
}

@Suite("Executor: service checks") struct ServiceCheckTests {
    @Test("http and tcp checks pass against a running server and are reported with the allocation")
    func httpAndTCP() async throws {
        let root = tempDir("checks")
        mkdirAll(root + "/www")
        try writeFile(root + "/www/index.html", "ok")
        let log = ReportLog()
        let ex = Executor(root: root, nodeName: "n1", address: "127.0.0.1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        let port = Int.random(in: 31000...39000)
        var a = assignment("h1", tasks: [TaskSpec(name: "web", driver: .rawExec,
                                                   config: DriverConfig(command: "busybox", args: ["httpd", "-f", "-p", "127.0.0.1:${CARAVAN_PORT_http}", "-h", root + "/www"]))],
                           ports: ["http": port])
        a.job.groups[0].services = [ServiceSpec(name: "web", port: "http", checks: [
            Check(type: .http, path: "/index.html", interval: .milliseconds(100), timeout: .seconds(1)),
            Check(type: .tcp, interval: .milliseconds(100), timeout: .seconds(1)),
            Check(type: .http, path: "/missing", interval: .milliseconds(100), timeout: .seconds(1)),
        ])]
        await ex.sync([a])
        try await log.wait("checks", {
            $0?.checks["web.0.http"] == .passing && $0?.checks["web.1.tcp"] == .passing && $0?.checks["web.2.http"] == .critical
        }, id: "h1")
        let events = try #require(log.report("h1")?.taskStates["web"]?.events)
        #expect(events.contains { $0.type == "Check Failing" && $0.message.contains("HTTP 404") })
        await ex.sync([])
    }

    @Test("a script check that keeps failing restarts its task (check_restart)")
    func checkRestart() async throws {
        let log = ReportLog()
        let ex = Executor(root: tempDir("check-restart"), nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        var a = assignment("s1", tasks: [shell("main", "sleep 600")], restart: fastRestart)
        a.job.groups[0].services = [ServiceSpec(name: "app", checks: [
            Check(type: .script, command: "/bin/sh", args: ["-c", "echo not ready; exit 2"], interval: .milliseconds(100), timeout: .seconds(1), restartAfter: 2),
        ])]
        await ex.sync([a])
        try await log.wait("a restart", { ($0?.taskStates["main"]?.restarts ?? 0) >= 1 }, id: "s1")
        let events = try #require(log.report("s1")?.taskStates["main"]?.events)
        #expect(events.contains { $0.type == "Check Failing" && $0.message.contains("not ready") })
        #expect(events.contains { $0.type == "Restart Signaled" })
        await ex.sync([])
    }
}

@Suite("Executor: CPU hard limit", .enabled(if: geteuid() == 0 && TaskCgroup.detected != .none)) struct CPUQuotaTests {
    @Test("cpuHardLimit caps a busy task at its reservation with a CFS quota")
    func quota() async throws {
        let root = tempDir("quota")
        let log = ReportLog()
        let ex = Executor(root: root, nodeName: "n1", drivers: [RawExecDriver(useCgroups: true)], report: log.sink)
        var busy = shell("spin", "while :; do :; done")
        busy.resources.cpuHardLimit = true  // 100m: a tenth of one CPU
        await ex.sync([assignment("q1", tasks: [busy])])
        try await log.wait("running", { $0?.clientStatus == .running }, id: "q1")
        let pid = try #require(await ex.handle(allocation: "q1", task: "spin")).pid
        let group = TaskCgroup(allocation: "q1", task: "spin")
        if group.version == .v1 {
            #expect(readSmallFile(group.dir("cpu") + "/cpu.cfs_quota_us")?.filter(\.isNumber) == "10000")
        } else {
            #expect(readSmallFile(group.dir("") + "/cpu.max")?.hasPrefix("10000 100000") == true)
        }
        // It gets at most about a tenth of a CPU (ticks are 1/100 s): 10 a second, 20 allowed.
        func cpuTicks() -> Int {
            let fields = (readSmallFile("/proc/\(pid)/stat") ?? "").split(separator: ")").last?.split(separator: " ") ?? []
            return fields.count > 13 ? (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0) : 0
        }
        // Per second of wall time measured, not slept: a busy test machine may sleep longer.
        let before = cpuTicks(), start = ContinuousClock.now
        try await Task.sleep(for: .seconds(1))
        let used = cpuTicks() - before, elapsed = (ContinuousClock.now - start) / .seconds(1)
        #expect(Double(used) / elapsed <= 20, "the task used \(used) ticks of CPU in \(elapsed) s")
        await ex.sync([])
        for _ in 0..<500 where kill(pid, 0) == 0 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(kill(pid, 0) != 0, "the task is stopped with its allocation")
    }
}

@Suite("Executor: process supervisor") struct ProcessSupervisorTests {
    /// Another thread keeps creating pipes without close-on-exec while tasks are spawned: each
    /// task must hold only stdin, stdout and stderr (the child closes the rest before exec).
    @Test("a task holds only stdin, stdout and stderr, even while another thread creates descriptors")
    func noDescriptorLeaksIntoATask() async throws {
        final class Flag: @unchecked Sendable { let stop = Atomic<Bool>(false); let made = Atomic<Int>(0) }
        let flag = Flag()
        var thread = pthread_t()
        let arg = Unmanaged.passRetained(flag).toOpaque()
        pthread_create(&thread, nil, { arg in
            let flag = Unmanaged<Flag>.fromOpaque(arg!).takeRetainedValue()
            var fds: [Int32] = [0, 0]
            while !flag.stop.load(ordering: .relaxed) {
                guard pipe(&fds) == 0 else { continue }  // no O_CLOEXEC, on purpose
                flag.made.add(1, ordering: .relaxed)
                close(fds[0]); close(fds[1])
                usleep(20)  // thousands a second, without taking a core from the rest of the suite
            }
            return nil
        }, arg)
        defer { flag.stop.store(true, ordering: .relaxed); pthread_join(thread, nil) }
        let dir = "/tmp/caravan-fdleak-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for i in 0..<20 {
            // Long enough to be there however long a loaded run takes to get back here.
            let spec = SpawnSpec(path: "/bin/sleep", arguments: ["sleep", "600"], environment: [], workingDirectory: dir,
                                 stdoutPath: dir + "/out", stderrPath: dir + "/err")
            let ended = ExitLatch()
            let pid = try await ProcessSupervisor.shared.spawn(spec) { ended.finish($0) }
            defer { kill(pid, SIGKILL) }
            guard let list = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else {
                // Say what ended it (a signal from elsewhere, or an exit).
                Issue.record("spawn \(i): task \(pid) is gone at once: \(await ended.wait().map(\.description) ?? "?")")
                continue
            }
            let target = { (fd: Int) in (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? "" }
            // Beyond 0–2 only what the new program opens itself may show (the dynamic loader
            // reading a library, caught mid-start on a loaded machine): no pipe or socket of ours.
            let extra = list.compactMap { Int($0) }.filter { $0 > 2 }.map { "\($0) → \(target($0))" }
            #expect(!extra.contains { $0.contains("pipe:") || $0.contains("socket:") || $0.contains("caravan") }, "spawn \(i): the task holds \(extra)")
            #expect(list.compactMap { Int($0) }.filter { $0 <= 2 }.sorted() == [0, 1, 2])
            // Its stdin is /dev/null, its output the files asked for.
            #expect(target(0) == "/dev/null" && target(1) == dir + "/out" && target(2) == dir + "/err")
        }
        #expect(flag.made.load(ordering: .relaxed) > 0, "the racing thread ran")
    }
}

/// cgroup v2 through its file interface, in a tree laid out as the kernel lays out the unified
/// hierarchy (these machines run v1, so the kernel's own v2 cannot be exercised here).
@Suite("Executor: cgroup v2 files") struct CgroupV2Tests {
    @Test("limits are written as the unified hierarchy expects, and an OOM kill is read from memory.events")
    func unifiedHierarchy() throws {
        let root = tempDir("cgroup2")
        try "cpuset cpu io memory hugetlb pids rdma misc\n".write(toFile: root + "/cgroup.controllers", atomically: true, encoding: .utf8)
        #expect(TaskCgroup.detect(root: root) == .v2)
        let group = TaskCgroup(name: "a1-web", version: .v2, root: root)
        #expect(group.runcPath == "/caravan/a1-web/ctr")
        // What the kernel creates with each directory.
        mkdirAll(group.dir(""))
        let files = ["memory.max", "memory.swap.max", "cpu.weight", "cpu.max", "pids.max", "cgroup.subtree_control", "cgroup.procs", "memory.events"]
        for f in files { FileManager.default.createFile(atPath: group.dir("") + "/" + f, contents: nil) }
        for f in ["/cgroup.subtree_control", "/caravan/cgroup.subtree_control"] { FileManager.default.createFile(atPath: root + f, contents: nil) }
        #expect(group.create(memoryMiB: 64, cpuMillicores: 250, cpuHardLimit: true, pids: 100).isEmpty)
        func read(_ f: String) -> String { readSmallFile(group.dir("") + "/" + f) ?? "" }
        #expect(read("memory.max") == String(64 << 20))
        #expect(read("memory.swap.max") == "0")
        #expect(read("cpu.weight") == "25")
        #expect(read("cpu.max") == "25000 100000")
        #expect(read("pids.max") == "100")
        #expect(readSmallFile(root + "/caravan/cgroup.subtree_control") == "+memory +cpu +pids")
        group.add(pid: 4242)
        #expect(read("cgroup.procs") == "4242")
        #expect(!group.hitMemoryLimit())
        try "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n".write(toFile: group.dir("") + "/memory.events", atomically: true, encoding: .utf8)
        #expect(group.hitMemoryLimit())
        // Without the files (no such controller enabled), the limit is named as not applied.
        let bare = TaskCgroup(name: "a2-web", version: .v2, root: root)
        #expect(bare.create(memoryMiB: 64, cpuMillicores: 100).contains("memory limit"))
    }
}
