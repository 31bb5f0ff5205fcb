import CaravanModel
import Foundation
@testable import Executor
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// The exec driver needs root and runc; CI runs as root with runc installed.
let canRunContainers = geteuid() == 0 && RuncDriver(stateRoot: "/tmp").fingerprint().usable

@Suite("Executor: exec (runc)", .enabled(if: canRunContainers)) struct ExecDriverTests {
    func executor(_ root: String, _ log: ReportLog) -> Executor {
        Executor(root: root + "/alloc", nodeName: "n1", drivers: [RuncDriver(name: .exec, stateRoot: root + "/runc")], report: log.sink)
    }

    @Test("an exec task runs isolated: its own PID namespace and hostname, host /usr read-only, task dirs writable")
    func isolated() async throws {
        let root = tempDir("exec")
        let log = ReportLog()
        let ex = executor(root, log)
        let script = "echo pid=$$ host=$(hostname); touch /usr/x 2>/dev/null && echo usr-writable || echo usr-ro; echo hi > /local/f && echo local-ok; echo dir=$CARAVAN_TASK_DIR"
        await ex.sync([assignment("e1", type: .batch, tasks: [shell("main", script, driver: .exec)])])
        try await log.wait("complete", { $0?.clientStatus == .complete || $0?.clientStatus == .failed }, id: "e1")
        let files = try #require(await ex.logFiles(allocation: "e1", task: "main", stderr: false))
        let out = String(decoding: LogRotation.read(files, offset: 0, length: 4096).bytes, as: UTF8.self)
        #expect(out == "pid=1 host=main\nusr-ro\nlocal-ok\ndir=/local\n", "\(log.report("e1")!)")
        #expect(readSmallFile(root + "/alloc/e1/main/local/f") == "hi\n")
    }

    @Test("an exec task runs as nobody with no capabilities, a seccomp filter, its own /etc, and nothing of the agent's or other allocations' files")
    func leastPrivilege() async throws {
        let root = tempDir("exec-priv")
        let log = ReportLog()
        let ex = executor(root, log)
        // A neighbour allocation with a file of its own, and the agent's keyring beside them.
        try "k".write(toFile: root + "/keyring.json", atomically: true, encoding: .utf8)
        let script = """
            [ "$(id -u)" -ge 2000000 ] && [ "$(id -g)" = "$(id -u)" ] && echo own-uid || echo "shared uid $(id -u)"
            grep CapEff /proc/self/status
            cat /etc/shadow >/dev/null 2>&1 && echo shadow-read || echo shadow-refused
            test -e /etc/caravan && echo etc-caravan || echo no-etc-caravan
            cat \(root)/keyring.json >/dev/null 2>&1 && echo keyring-read || echo keyring-refused
            cat \(root)/alloc/n1/main/local/mine >/dev/null 2>&1 && echo neighbour-read || echo neighbour-refused
            unshare -U true 2>/dev/null && echo unshare-ok || echo unshare-refused
            awk 'BEGIN { print "awk-ok" }'
            echo x > /local/a && echo local-writable
            echo x > /alloc/b && echo alloc-writable
            echo x > /secrets/c && echo secrets-writable
            echo x > /tmp/d && echo tmp-writable
            """
        await ex.sync([assignment("n1", type: .batch, tasks: [shell("main", "echo secret > /local/mine", driver: .exec)])])
        try await log.wait("neighbour done", { $0?.clientStatus == .complete }, id: "n1")
        await ex.sync([assignment("n1", type: .batch, tasks: [shell("main", "echo secret > /local/mine", driver: .exec)]),
                       assignment("p1", type: .batch, tasks: [shell("main", script, driver: .exec)])])
        try await log.wait("complete", { $0?.clientStatus == .complete || $0?.clientStatus == .failed }, id: "p1")
        let files = try #require(await ex.logFiles(allocation: "p1", task: "main", stderr: false))
        let out = String(decoding: LogRotation.read(files, offset: 0, length: 8192).bytes, as: UTF8.self)
        let errFiles = await ex.logFiles(allocation: "p1", task: "main", stderr: true) ?? []
        let err = String(decoding: LogRotation.read(errFiles, offset: 0, length: 8192).bytes, as: UTF8.self)
        #expect(!out.isEmpty, "stderr: \(err)")
        #expect(out == """
            own-uid
            CapEff:\t0000000000000000
            shadow-refused
            no-etc-caravan
            keyring-refused
            neighbour-refused
            unshare-refused
            awk-ok
            local-writable
            alloc-writable
            secrets-writable
            tmp-writable

            """, "\(log.report("p1")!)")
        // Commands run in the task run as its user too.
        await ex.sync([assignment("p2", tasks: [shell("main", "exec sleep 60", driver: .exec)])])
        try await log.wait("running", { $0?.clientStatus == .running }, id: "p2")
        let who = try await ex.execute(allocation: "p2", task: "main", command: ["id", "-u"], timeout: .seconds(10))
        #expect(who.output.trimmingCharacters(in: .whitespacesAndNewlines) == String(TaskUser.dynamic("p2", "main").uid), "\(who)")
        var stop = assignment("p2", tasks: [shell("main", "exec sleep 60", driver: .exec)])
        stop.allocation.desiredStatus = .stop
        await ex.sync([stop])
        // By default an exec task may not run as root: it fails before it starts, saying why.
        var asRoot = shell("main", "echo uid=$(id -u); grep CapEff /proc/self/status; test -e /etc/shadow && echo shadow || echo no-shadow", driver: .exec)
        asRoot.user = "root"
        await ex.sync([assignment("r0", type: .batch, tasks: [asRoot])])
        try await log.wait("root refused", { $0?.clientStatus == .failed }, id: "r0")
        #expect(log.report("r0")!.taskStates["main"]?.events.contains {
            $0.type == "Failed Validation" && $0.message.contains("user root (uid 0) may not run exec tasks on this node (its agent denies uids 0)")
        } == true, "\(log.report("r0")!)")
        // So may a group the agent denies, also when the user is the task's own.
        await ex.setUserPolicy(TaskUserPolicy(deniedUids: [], deniedGids: [65534...65534], drivers: [.exec]))
        var asNobody = shell("main", "true", driver: .exec)
        asNobody.user = "nobody"
        await ex.sync([assignment("n0", type: .batch, tasks: [asNobody])])
        try await log.wait("nogroup refused", { $0?.clientStatus == .failed }, id: "n0")
        #expect(log.report("n0")!.taskStates["main"]?.events.contains { $0.message.contains("group 65534 may not run exec tasks on this node (its agent denies gids 65534)") } == true)
        // An agent that allows root: the task keeps the reduced capability set (and still no host /etc).
        await ex.setUserPolicy(.none)
        await ex.sync([assignment("r1", type: .batch, tasks: [asRoot])])
        try await log.wait("root task done", { $0?.clientStatus == .complete }, id: "r1")
        let rootOut = String(decoding: LogRotation.read(try #require(await ex.logFiles(allocation: "r1", task: "main", stderr: false)), offset: 0,
                                                        length: 4096).bytes, as: UTF8.self)
        #expect(rootOut.hasPrefix("uid=0\nCapEff:\t00000000a80405fb\nno-shadow"), "\(rootOut)")
        // An unknown user is refused with its name.
        var ghost = shell("main", "true", driver: .exec)
        ghost.user = "no-such-user"
        await ex.sync([assignment("g1", type: .batch, tasks: [ghost])])
        try await log.wait("refused", { $0?.clientStatus == .failed }, id: "g1")
        #expect(log.report("g1")!.taskStates["main"]?.events.contains { $0.message.contains("user no-such-user is not in /etc/passwd") } == true)
    }

    @Test("what a root task plants (links, FIFOs) is not followed by the agent at its next start; namespaces and io_uring are refused")
    func plantedLinksAndFifosAreNotFollowed() async throws {
        let root = tempDir("exec-plant")
        let log = ReportLog()
        let ex = executor(root, log)
        await ex.setUserPolicy(.none)
        let victim = root + "/victim"
        try FileManager.default.createDirectory(atPath: victim, withIntermediateDirectories: true)
        try "untouched\n".write(toFile: victim + "/file", atomically: true, encoding: .utf8)
        // First run (as root): replace the logs directory with a link to the host and the log
        // file with a FIFO, then fail. Second run: say so and check the syscalls.
        let script = """
            if [ ! -e /local/ran ]; then
              touch /local/ran
              rm -f /alloc/logs/main.stdout; mkfifo /alloc/logs/main.stdout
              rm -rf /alloc/logs/other; ln -s \(victim) /alloc/logs/other
              exit 1
            fi
            echo second run
            python3 -c 'import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); r = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0); print("clone-newuser", r, os.strerror(ctypes.get_errno())); r = libc.syscall(425, 8, 0); print("io_uring", r, os.strerror(ctypes.get_errno()))'
            """
        var t = shell("main", script, driver: .exec)
        t.user = "root"
        await ex.sync([assignment("f1", type: .batch, tasks: [t], restart: RestartPolicy(attempts: 1, interval: .seconds(60), delay: .milliseconds(50), mode: .fail))])
        try await log.wait("the second run ends", { $0?.clientStatus == .complete || $0?.clientStatus == .failed }, id: "f1")
        let out = String(decoding: LogRotation.read(try #require(await ex.logFiles(allocation: "f1", task: "main", stderr: false)), offset: 0,
                                                    length: 4096).bytes, as: UTF8.self)
        #expect(out.contains("second run"), "\(log.report("f1")!)")
        #expect(out.contains("clone-newuser -1 Operation not permitted") && out.contains("io_uring -1 Operation not permitted"), "\(out)")
        #expect(try String(contentsOfFile: victim + "/file", encoding: .utf8) == "untouched\n")
        // A task may not be named after the allocation's own directory, nor take a system group.
        var reserved = shell("alloc", "true", driver: .exec)
        reserved.user = "nobody"
        var shadow = shell("main", "true", driver: .exec)
        shadow.user = "nobody:shadow"
        var numeric = shell("main", "true", driver: .exec)
        numeric.user = "42"
        await ex.sync([assignment("f2", type: .batch, tasks: [reserved]), assignment("f3", type: .batch, tasks: [shadow])])
        await ex.sync([assignment("f2", type: .batch, tasks: [reserved]), assignment("f3", type: .batch, tasks: [shadow]),
                       assignment("f4", type: .batch, tasks: [numeric])])
        try await log.wait("refused", { $0?.clientStatus == .failed }, id: "f2")
        try await log.wait("refused", { $0?.clientStatus == .failed }, id: "f3")
        #expect(log.report("f2")!.taskStates["alloc"]?.events.contains { $0.message.contains("task name alloc is reserved") } == true)
        #expect(log.report("f3")!.taskStates["main"]?.events.contains { $0.message.contains("system group") } == true)
        // A bare uid takes its account's group (42 is _apt on Debian: nogroup), or is refused a system group.
        try await log.wait("numeric user settled", { $0?.clientStatus == .complete || $0?.clientStatus == .failed }, id: "f4")
        let numericOK = log.report("f4")!.clientStatus == .complete
            || log.report("f4")!.taskStates["main"]?.events.contains { $0.message.contains("system group") } == true
        #expect(numericOK, "\(log.report("f4")!)")
    }

    @Test("an interactive command in an exec task gets a terminal inside the container, input and a resize")
    func interactiveTerminal() async throws {
        let root = tempDir("exec-tty")
        let log = ReportLog()
        let ex = executor(root, log)
        await ex.sync([assignment("t1", tasks: [shell("main", "exec sleep 60", driver: .exec)])])
        try await log.wait("running", { $0?.clientStatus == .running }, id: "t1")
        let session = try await ex.interactive(allocation: "t1", task: "main", command: ["sh"], tty: true, rows: 30, columns: 100)
        session.write(Array("stty size; tty; echo term=$TERM\n".utf8))
        session.write(Array("exit 7\n".utf8))
        var out: [UInt8] = []
        for await (_, bytes) in session.output() { out += bytes }
        let status = await session.wait()
        session.finish()
        let text = String(decoding: out, as: UTF8.self)
        #expect(status.code == 7, "\(text)")
        #expect(text.contains("30 100") && text.contains("/dev/pts/0") && text.contains("term=xterm"), "\(text)")
        // Without a terminal: pipes, stdout and stderr apart, end of input.
        let piped = try await ex.interactive(allocation: "t1", task: "main", command: ["sh", "-c", "cat; echo e >&2"], tty: false)
        piped.write(Array("in\n".utf8))
        piped.closeInput()
        var got: [ExecSession.Output: [UInt8]] = [:]
        for await (kind, bytes) in piped.output() { got[kind, default: []] += bytes }
        #expect(await piped.wait().code == 0)
        piped.finish()
        #expect(got[.stdout] == Array("in\n".utf8) && got[.stderr] == Array("e\n".utf8))
        var stop = assignment("t1", tasks: [shell("main", "exec sleep 60", driver: .exec)])
        stop.allocation.desiredStatus = .stop
        await ex.sync([stop])
    }

    @Test("a task over its 32 MiB memory limit is OOM-killed and reported as such")
    func oomKilled() async throws {
        let root = tempDir("oom")
        let log = ReportLog()
        let ex = executor(root, log)
        // dd's 128 MiB block buffer is filled from /dev/zero: the memory must really be used.
        let hog = shell("hog", "exec dd if=/dev/zero of=/dev/null bs=128M count=1", driver: .exec, memory: 32)
        await ex.sync([assignment("o1", type: .batch, tasks: [hog],
                                  restart: RestartPolicy(attempts: 0, interval: .seconds(60), delay: .milliseconds(10), mode: .fail))])
        try await log.wait("failed", { $0?.clientStatus == .failed }, id: "o1")
        let st = try #require(log.report("o1")?.taskStates["hog"])
        #expect(st.failed && st.exitCode == 137)
        #expect(st.events.contains { $0.type == "OOM Killed" }, "\(st.events)")
        // The task's cgroups are gone soon after it is dead (removed off the executor's actor).
        let cgroup = "/sys/fs/cgroup/memory/caravan/o1-hog"
        let deadline = ContinuousClock.now + .seconds(10)
        while access(cgroup, F_OK) == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(access(cgroup, F_OK) != 0)
    }

    @Test("an exec task keeps running across an executor restart and is stopped afterwards")
    func recovers() async throws {
        let root = tempDir("exec-recover")
        let log1 = ReportLog()
        var ex: Executor? = executor(root, log1)
        let a = assignment("r1", tasks: [shell("main", "exec sleep 60", driver: .exec)])
        await ex!.sync([a])
        try await log1.wait("running", { $0?.clientStatus == .running }, id: "r1")
        let pid = try #require(await ex!.handle(allocation: "r1", task: "main")).pid
        // No runc process stays beside the task: the handle is the container's init itself, a
        // child of this process (the supervisor is a subreaper), running the task's command.
        let runcs = listDirectory("/proc").filter { p in
            Int(p) != nil && readSmallFile("/proc/\(p)/comm") == "runc\n"
                && (readSmallFile("/proc/\(p)/cmdline") ?? "").contains("caravan-r1-main")
        }
        #expect(runcs.isEmpty, "runc processes left for the task: \(runcs)")
        for _ in 0..<250 where readSmallFile("/proc/\(pid)/comm") != "sleep\n" { try await Task.sleep(for: .milliseconds(20)) }
        #expect(readSmallFile("/proc/\(pid)/comm") == "sleep\n")
        #expect(ProcessSupervisor.shared.isSubreaper && ProcessSupervisor.children().contains(pid))
        ex = nil
        let log2 = ReportLog()
        let ex2 = executor(root, log2)
        #expect(await ex2.recover() == 1)
        #expect(await ex2.handle(allocation: "r1", task: "main")?.pid == pid)
        var stop = a
        stop.allocation.desiredStatus = .stop
        await ex2.sync([stop])
        try await log2.wait("complete", { $0?.clientStatus == .complete }, id: "r1")
        #expect(log2.report("r1")?.taskStates["main"]?.restarts == 0)
    }
}
