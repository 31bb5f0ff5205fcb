import CUV
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// How a supervised process ended.
public struct ExitStatus: Sendable, Equatable, CustomStringConvertible {
    /// The exit code, or 128 + the signal number when a signal ended it.
    public var code: Int
    /// The signal that ended it, 0 if it exited by itself.
    public var signal: Int
    /// False when the process was not this agent's child (found again after a restart):
    /// its end was seen, its exit code was not.
    public var known: Bool

    public init(code: Int, signal: Int = 0, known: Bool = true) {
        self.code = code
        self.signal = signal
        self.known = known
    }

    public static let unknown = ExitStatus(code: -1, signal: 0, known: false)

    public var description: String {
        guard known else { return "exit code unknown (the task was found again after an agent restart, or ended while the agent was down)" }
        return signal != 0 ? "Exit Code: \(code), Signal: \(signal)" : "Exit Code: \(code)"
    }
}

/// What to start: an executable, its arguments and environment, and where its output goes.
public struct SpawnSpec: Sendable {
    public var path: String
    /// argv, including argv[0].
    public var arguments: [String]
    /// `KEY=VALUE` strings.
    public var environment: [String]
    public var workingDirectory: String?
    public var stdoutPath: String?
    public var stderrPath: String?
    /// Descriptors for stdin, stdout and stderr (instead of /dev/null and the paths above).
    public var stdinFD: Int32?
    public var stdoutFD: Int32?
    public var stderrFD: Int32?
    /// A terminal (a pty's slave path) for all three, made the controlling terminal.
    public var terminal: String?

    public init(path: String, arguments: [String], environment: [String], workingDirectory: String? = nil,
                stdoutPath: String? = nil, stderrPath: String? = nil) {
        self.path = path
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
    }
}

public struct SpawnError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Starts and watches processes on one libuv loop running on its own thread: `posix_spawn`
/// starts them (the child keeps stdin, stdout and stderr and closes every other descriptor before
/// exec), and a pidfd per process, polled by the loop, calls back when one exits (its status is
/// reaped with `waitid(P_PIDFD)`; for a process found again after an agent restart, which is no
/// longer this agent's child, the end is seen but not the code). No helper process runs per task.
///
/// Processes are started in their own session (detached), so they outlive the agent; their
/// output goes straight to files, so nothing breaks when the agent is gone. The process is a
/// child subreaper: a container's init, orphaned when `runc create` exits, becomes its child, so
/// its exit code is known without a runc process staying beside it.
public final class ProcessSupervisor: @unchecked Sendable {
    public static let shared = ProcessSupervisor()

    typealias ExitHandler = @Sendable (ExitStatus) -> Void
    private enum Request {
        case spawn(SpawnSpec, ExitHandler, @Sendable (Result<Int32, SpawnError>) -> Void)
        case watch(Int32, ExitHandler)
    }

    // Touched only on the loop thread, except `pending` (locked) and `wakeup` (uv_async_send is thread-safe).
    private let loop: UnsafeMutablePointer<uv_loop_t>
    private let wakeup: UnsafeMutablePointer<uv_async_t>
    private let pending = Mutex<[Request]>([])
    private let sweep: UnsafeMutablePointer<uv_timer_t>
    /// Processes whose exit a pidfd watches (they are reaped by that watch).
    /// Updated at once by `watch` (from any thread), so the orphan sweep never reaps a process
    /// whose watch is still on its way to the loop.
    private let watched = Mutex<Set<Int32>>([])
    /// Whether orphans among this process's descendants become its children.
    public let isSubreaper: Bool

    private init() {
        isSubreaper = caravan_set_subreaper() == 0
        loop = .allocate(capacity: 1)
        uv_loop_init(loop)
        sweep = .allocate(capacity: 1)
        wakeup = .allocate(capacity: 1)
        wakeup.pointee.data = nil
        uv_async_init(loop, wakeup) { handle in
            guard let handle, let me = handle.pointee.data else { return }
            Unmanaged<ProcessSupervisor>.fromOpaque(me).takeUnretainedValue().drain()
        }
        wakeup.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        // As a subreaper, orphans of the tasks' own children (a task that started something in
        // the background and exited) end up here: every 2 s, those that have exited are reaped,
        // so they do not linger as zombies.
        uv_timer_init(loop, sweep)
        sweep.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_timer_start(sweep, { t in
            guard let t, let me = t.pointee.data else { return }
            Unmanaged<ProcessSupervisor>.fromOpaque(me).takeUnretainedValue().reapOrphans()
        }, 2000, 2000)
        uv_unref(UnsafeMutableRawPointer(sweep).assumingMemoryBound(to: uv_handle_t.self))
        var thread = pthread_t()
        let me = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { arg in
            let s = Unmanaged<ProcessSupervisor>.fromOpaque(arg!).takeRetainedValue()
            uv_run(s.loop, UV_RUN_DEFAULT)
            return nil
        }, me)
        pthread_detach(thread)
    }

    /// Starts a process; `onExit` is called once, on the loop thread, when it ends.
    /// Returns its pid.
    public func spawn(_ spec: SpawnSpec, onExit: @escaping @Sendable (ExitStatus) -> Void) async throws(SpawnError) -> Int32 {
        let result: Result<Int32, SpawnError> = await withCheckedContinuation { c in
            submit(.spawn(spec, onExit, { c.resume(returning: $0) }))
        }
        return try result.get()
    }

    /// Watches a process this agent did not start in this run (or no longer knows as a child);
    /// `onExit` is called once when it ends (at once if it is already gone).
    public func watch(pid: Int32, onExit: @escaping @Sendable (ExitStatus) -> Void) {
        watched.withLock { _ = $0.insert(pid) }
        submit(.watch(pid, onExit))
    }

    private func submit(_ r: Request) {
        pending.withLock { $0.append(r) }
        uv_async_send(wakeup)
    }

    private func drain() {
        let requests = pending.withLock { q -> [Request] in defer { q.removeAll() }; return q }
        for r in requests {
            switch r {
            case .spawn(let spec, let onExit, let done): done(startProcess(spec, onExit))
            case .watch(let pid, let onExit): startWatch(pid, onExit)
            }
        }
    }

    final class Box {
        let onExit: ExitHandler
        let pid: Int32
        unowned let supervisor: ProcessSupervisor
        var fd: Int32 = -1
        init(_ onExit: @escaping ExitHandler, pid: Int32, supervisor: ProcessSupervisor) {
            self.onExit = onExit
            self.pid = pid
            self.supervisor = supervisor
        }
    }

    /// Reaps children that have exited, are not watched, and are not of this process's own
    /// session: orphans of tasks (every task runs in a session of its own, and so do its
    /// descendants unless they start another). Children something else in the process started
    /// in its session (a Foundation `Process`) are left to whoever waits for them.
    private func reapOrphans() {
        guard isSubreaper else { return }
        let mine = getsid(0)
        let watched = self.watched.withLock { $0 }
        for pid in Self.children() where !watched.contains(pid) {
            guard let stat = readSmallFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // fields[0] is the state, fields[3] the session.
            guard fields.count > 3, fields[0] == "Z", let sid = Int32(fields[3]), sid != mine else { continue }
            var status: Int32 = 0
            waitpid(pid, &status, WNOHANG)
        }
    }

    /// This process's children (every thread's).
    static func children() -> [Int32] {
        var out: [Int32] = []
        for tid in listDirectory("/proc/self/task") {
            guard let text = readSmallFile("/proc/self/task/\(tid)/children") else { continue }
            out += text.split(separator: " ").compactMap { Int32($0.filter(\.isNumber)) }
        }
        return out
    }

    private func startProcess(_ spec: SpawnSpec, _ onExit: @escaping ExitHandler) -> Result<Int32, SpawnError> {
        func open(_ path: String?) -> Int32 {
            guard let path else { return -1 }
            // The logs directory is the task's to write: a link planted there is not followed.
            return LogRotation.openForAppend(path)
        }
        let out = open(spec.stdoutPath), err = open(spec.stderrPath)
        defer { if out >= 0 { close(out) }; if err >= 0 { close(err) } }
        if spec.stdoutPath != nil && out < 0 || spec.stderrPath != nil && err < 0 {
            return .failure(SpawnError("cannot open log file: \(String(cString: strerror(errno)))"))
        }
        let argv = spec.arguments.map { strdup($0) } + [nil]
        let envp = spec.environment.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = argv.withUnsafeBufferPointer { a in
            envp.withUnsafeBufferPointer { e in
                caravan_spawn(spec.path, a.baseAddress, e.baseAddress, spec.workingDirectory, spec.stdinFD ?? -1,
                              spec.stdoutFD ?? out, spec.stderrFD ?? err, spec.terminal, &pid)
            }
        }
        if rc != 0 {
            if rc == -ENOENT { return .failure(SpawnError("executable not found: \(spec.path)")) }
            if rc == -EACCES { return .failure(SpawnError("permission denied: \(spec.path)")) }
            return .failure(SpawnError("cannot start \(spec.path): \(String(cString: strerror(-rc)))"))
        }
        startWatch(pid, onExit)
        return .success(pid)
    }

    private func startWatch(_ pid: Int32, _ onExit: @escaping ExitHandler) {
        let fd = caravan_pidfd_open(pid)
        guard fd >= 0 else { onExit(.unknown); return }
        watched.withLock { _ = $0.insert(pid) }
        let poll = UnsafeMutablePointer<uv_poll_t>.allocate(capacity: 1)
        let box = Box(onExit, pid: pid, supervisor: self)
        box.fd = fd
        poll.pointee.data = Unmanaged.passRetained(box).toOpaque()
        uv_poll_init(loop, poll, fd)
        uv_poll_start(poll, Int32(UV_READABLE.rawValue)) { p, _, _ in
            guard let p else { return }
            let box = Unmanaged<Box>.fromOpaque(p.pointee.data).takeRetainedValue()
            uv_poll_stop(p)
            box.supervisor.watched.withLock { _ = $0.remove(box.pid) }
            var code: Int32 = 0, sig: Int32 = 0
            let status = caravan_pidfd_reap(box.fd, &code, &sig) == 0 ? ExitStatus(code: Int(code), signal: Int(sig)) : .unknown
            close(box.fd)
            box.onExit(status)
            p.withMemoryRebound(to: uv_handle_t.self, capacity: 1) { h in
                uv_close(h) { h in h?.withMemoryRebound(to: uv_poll_t.self, capacity: 1) { $0.deallocate() } }
            }
        }
    }
}

/// Recognises a process again after a restart: pid plus its start time (pids are reused).
public enum ProcessIdentity {
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot), or nil if there is no such process.
    public static func startTime(of pid: Int32) -> UInt64? {
        guard pid > 0, let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state); start time is field 22.
        guard fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    /// Whether `pid` is still the process that started at `startTime` (and has not exited).
    public static func isAlive(pid: Int32, startTime: UInt64) -> Bool {
        guard let t = Self.startTime(of: pid), t == startTime else { return false }
        // A zombie has ended.
        if let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") {
            let state = text[text.index(after: close)...].dropFirst().first
            return state != "Z" && state != "X"
        }
        return false
    }
}
