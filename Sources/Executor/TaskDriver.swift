import CaravanModel
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Everything a driver needs to start one task.
public struct TaskContext: Sendable {
    public var allocationID: String
    public var task: TaskSpec
    public var directories: TaskDirectories
    /// The task's environment, already interpolated.
    public var environment: [String: String]
    /// The command and arguments with `${VAR}` interpolated from the environment.
    public var command: String?
    public var arguments: [String]
    public var cgroup: TaskCgroup
    /// Host users this node does not run tasks as.
    public var userPolicy = TaskUserPolicy.standard
    /// The largest file the task may write (RLIMIT_FSIZE): its allocation's disk allowance.
    public var fileSizeLimitBytes: Int?
    /// Called once when the task's process ends.
    public var onExit: @Sendable (ExitStatus) -> Void
}

/// What the agent keeps on disk to find a running task again after a restart.
public struct TaskHandle: Codable, Sendable, Equatable {
    /// The process the agent started (the command for raw_exec, runc for exec/container).
    public var pid: Int32
    public var startTime: UInt64
    /// The runc container id (exec and container drivers).
    public var container: String?
    /// The OCI bundle directory (exec and container drivers).
    public var bundle: String?
    /// The user a raw_exec task runs as when it names one (commands run in it run as it too).
    public var uid: Int?
    public var gid: Int?
    /// The largest file a raw_exec task (and what runs in it) may write.
    public var fileSizeLimit: Int?

    public init(pid: Int32, startTime: UInt64, container: String? = nil, bundle: String? = nil) {
        self.pid = pid
        self.startTime = startTime
        self.container = container
        self.bundle = bundle
    }
}

/// A way to run a task: a plain process, an isolated process, or an OCI container.
public protocol TaskDriver: Sendable {
    var name: TaskSpec.Driver { get }
    /// Whether it works on this machine, and if not, why.
    func fingerprint() -> (usable: Bool, detail: String)
    /// Prepares and starts the task; `events` receives progress worth a task event (image pulled, …).
    func start(_ context: TaskContext, events: @Sendable (TaskEvent) -> Void) async throws(DriverError) -> TaskHandle
    /// Finds a task started before an agent restart; false if it is gone.
    func recover(_ handle: TaskHandle, onExit: @escaping @Sendable (ExitStatus) -> Void) -> Bool
    /// Sends a signal to the task's main process.
    func signal(_ handle: TaskHandle, _ signal: Int32)
    /// Frees what the task held after it ended (runc state, mounts).
    func cleanup(_ handle: TaskHandle)
    /// Runs a command in the task's context (script checks, `alloc exec`): its exit code and
    /// combined output (at most 64 KiB).
    func execute(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                 timeout: Duration) async -> (code: Int, output: String)
    /// What to start for an interactive command in the task (`alloc exec -i`), or nil if the
    /// program is not found.
    func interactiveCommand(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                            tty: Bool) -> InteractiveCommand?
}

extension TaskDriver {
    public func recover(_ handle: TaskHandle, onExit: @escaping @Sendable (ExitStatus) -> Void) -> Bool {
        guard ProcessIdentity.isAlive(pid: handle.pid, startTime: handle.startTime) else { return false }
        ProcessSupervisor.shared.watch(pid: handle.pid, onExit: onExit)
        return true
    }

    public func cleanup(_ handle: TaskHandle) {}

    /// A plain process with the task's environment, in its directory.
    public func execute(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                        timeout: Duration) async -> (code: Int, output: String) {
        guard let first = command.first, let path = resolveCommand(first, path: environment["PATH"]) else {
            return (127, "command \(command.first ?? "") not found")
        }
        return await runCommand(path, command, environment: environment.map { "\($0.key)=\($0.value)" }, directory: directory, timeout: timeout)
    }

    /// The command as a plain process with the task's environment, in its directory.
    public func interactiveCommand(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                                   tty: Bool) -> InteractiveCommand? {
        guard let first = command.first, let path = resolveCommand(first, path: environment["PATH"]) else { return nil }
        var env = environment
        if tty && env["TERM"] == nil { env["TERM"] = "xterm" }
        return InteractiveCommand(path: path, arguments: command, environment: env.map { "\($0.key)=\($0.value)" }.sorted(), directory: directory)
    }
}

/// Signal names as job files write them.
public enum Signals {
    static let table: [String: Int32] = [
        "SIGTERM": SIGTERM, "SIGINT": SIGINT, "SIGQUIT": SIGQUIT, "SIGHUP": SIGHUP, "SIGKILL": SIGKILL,
        "SIGUSR1": SIGUSR1, "SIGUSR2": SIGUSR2,
    ]
    public static func number(_ name: String) -> Int32? {
        let n = name.uppercased()
        return table[n] ?? table["SIG" + n]
    }
}

/// The per-allocation directory tree (Nomad's layout):
///
///     <data-dir>/alloc/<alloc-id>/alloc/        shared by the group's tasks (also logs/)
///     <data-dir>/alloc/<alloc-id>/<task>/local/  private to the task
///     <data-dir>/alloc/<alloc-id>/<task>/secrets/
public struct TaskDirectories: Sendable, Equatable {
    public var allocation: String
    public var shared: String { allocation + "/alloc" }
    public var logs: String { allocation + "/alloc/logs" }
    public var task: String
    public var local: String { task + "/local" }
    public var secrets: String { task + "/secrets" }
    public var taskName: String
    public var stdout: String { logs + "/\(taskName).stdout" }
    public var stderr: String { logs + "/\(taskName).stderr" }

    public init(allocationDirectory: String, taskName: String) {
        allocation = allocationDirectory
        task = allocationDirectory + "/" + taskName
        self.taskName = taskName
    }

    /// Task names that would put a task's directory on the allocation's own files (`alloc` is
    /// the shared directory every task writes to).
    public static let reservedNames: Set<String> = ["alloc", "state.json", "state.json.tmp"]

    /// Makes the directories, each a real directory: a link (or anything else) a task left in
    /// place of one is removed first, so nothing the agent does to them as root is redirected.
    public func create() throws(DriverError) {
        guard !Self.reservedNames.contains(taskName) else {
            throw DriverError("task name \(taskName) is reserved (it names the allocation's own files)", event: "Failed Validation", recoverable: false)
        }
        for d in [allocation, shared, logs, task, local, secrets] {
            var st = stat()
            if lstat(d, &st) == 0 && st.st_mode & S_IFMT != S_IFDIR { unlink(d) }
            guard mkdirAll(d) == 0 else { throw DriverError("cannot create \(d): \(String(cString: strerror(errno)))") }
            guard lstat(d, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { throw DriverError("cannot create \(d): it is not a directory") }
        }
        chmod(secrets, 0o700)
        chmod(local, 0o700)
    }
}

/// Resolves a command the way a shell would: a path as given, or the first match on PATH.
func resolveCommand(_ command: String, path: String?) -> String? {
    if command.contains("/") { return access(command, X_OK) == 0 ? command : nil }
    for dir in (path ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin").split(separator: ":") {
        let candidate = "\(dir)/\(command)"
        if access(candidate, X_OK) == 0 { return candidate }
    }
    return nil
}

/// Runs a program to completion (runc state/delete/exec, script checks) and returns its exit
/// code and combined output; killed after `timeout`. Short-lived, not a per-task helper.
func runCommand(_ path: String, _ argv: [String], environment: [String] = ["PATH=" + TaskEnvironment.hostPath],
                directory: String? = nil, timeout: Duration = .seconds(30)) async -> (code: Int, output: String) {
    let out = "/tmp/caravan-cmd-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    defer { unlink(out) }
    let done = ExitLatch()
    let pid: Int32
    do {
        pid = try await ProcessSupervisor.shared.spawn(SpawnSpec(path: path, arguments: argv, environment: environment, workingDirectory: directory,
                                                                 stdoutPath: out, stderrPath: out)) { done.finish($0) }
    } catch { return (127, error.description) }
    let start = ProcessIdentity.startTime(of: pid) ?? 0
    let status = await withTaskGroup(of: ExitStatus?.self) { g in
        g.addTask { await done.wait() }
        g.addTask {
            try? await Task.sleep(for: timeout)
            return nil
        }
        let first = await g.next()!
        if first == nil {
            // Timed out: kill its process group, then wait for the exit.
            if ProcessIdentity.isAlive(pid: pid, startTime: start) { kill(-pid, SIGKILL); kill(pid, SIGKILL) }
        }
        g.cancelAll()
        return first ?? ExitStatus(code: 124)
    }
    let text = readSmallFile(out, limit: 64 << 10) ?? ""
    return (status.code, status.code == 124 ? text + "(timed out after \(timeout))" : text)
}

/// Runs a helper with the default environment (runc state, delete).
func runHelper(_ path: String, _ args: [String]) async -> (code: Int, output: String) {
    await runCommand(path, [path] + args)
}

/// One exit, awaited once.
final class ExitLatch: Sendable {
    private let state = Mutex<(status: ExitStatus?, waiter: CheckedContinuation<ExitStatus?, Never>?)>((nil, nil))

    func finish(_ s: ExitStatus) {
        let w = state.withLock { st -> CheckedContinuation<ExitStatus?, Never>? in
            st.status = s
            defer { st.waiter = nil }
            return st.waiter
        }
        w?.resume(returning: s)
    }

    func wait() async -> ExitStatus? {
        await withCheckedContinuation { c in
            let ready = state.withLock { st -> ExitStatus? in
                if st.status == nil { st.waiter = c }
                return st.status
            }
            if let ready { c.resume(returning: ready) }
        }
    }
}
