import CaravanModel
#if canImport(Glibc)
import Glibc
#endif

/// `raw_exec`: the command as a plain process of the host, started by libuv, output to the
/// task's log files, optionally limited by the task's cgroup. It runs as the agent's user unless
/// the task names a `user` (then through util-linux's `setpriv`, with that user's ids and no
/// supplementary groups; so do commands run in it and its script checks).
public struct RawExecDriver: TaskDriver {
    public let name = TaskSpec.Driver.rawExec
    /// Put the process in the task's cgroup (memory, CPU, pids limits).
    public var useCgroups: Bool

    public init(useCgroups: Bool = true) { self.useCgroups = useCgroups }

    /// Usable where util-linux's `prlimit` is (every task's files are limited through it).
    public func fingerprint() -> (usable: Bool, detail: String) {
        resolveCommand("prlimit", path: TaskEnvironment.hostPath) == nil
            ? (false, "prlimit (util-linux) not found: a task's file sizes could not be limited") : (true, "plain processes")
    }

    public func start(_ ctx: TaskContext, events: @Sendable (TaskEvent) -> Void) async throws(DriverError) -> TaskHandle {
        guard let command = ctx.command, !command.isEmpty else {
            throw DriverError("config.command is required for the raw_exec driver", event: "Failed Validation")
        }
        guard let path = resolveCommand(command, path: ctx.environment["PATH"]) else {
            throw DriverError("command \(command) not found (PATH=\(ctx.environment["PATH"] ?? ""))", recoverable: false)
        }
        let env = ctx.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        // Without a `user` the task runs as the agent does.
        let named = ctx.task.user.flatMap { $0.isEmpty ? nil : $0 }
        let effective = try TaskUser.resolve(named ?? "", root: "/", fallback: TaskUser(uid: Int(geteuid()), gid: Int(getegid()), name: "the agent's user"))
        try ctx.userPolicy.check(effective, driver: name)
        var user: TaskUser?
        if let named, effective.uid != 0 || effective.gid != 0 {
            guard geteuid() == 0 else { throw DriverError("user \(named) needs the agent to run as root", event: "Failed Validation", recoverable: false) }
            try effective.own(ctx.directories)
            user = effective
        }
        let (program, argv) = try Self.wrapped(user.map { ($0.uid, $0.gid) }, fileSize: ctx.fileSizeLimitBytes, path, [command] + ctx.arguments)
        let spec = SpawnSpec(path: program, arguments: argv, environment: env,
                             workingDirectory: ctx.directories.task, stdoutPath: ctx.directories.stdout, stderrPath: ctx.directories.stderr)
        let pid: Int32
        do { pid = try await ProcessSupervisor.shared.spawn(spec, onExit: ctx.onExit) } catch {
            throw DriverError(error.description)
        }
        if useCgroups && ctx.cgroup.version != .none { ctx.cgroup.add(pid: pid) }
        var handle = TaskHandle(pid: pid, startTime: ProcessIdentity.startTime(of: pid) ?? 0)
        handle.uid = user?.uid
        handle.gid = user?.gid
        handle.fileSizeLimit = ctx.fileSizeLimitBytes
        return handle
    }

    /// The program and argv that run `argv` (at `path`) as `user` (through setpriv) and with no
    /// file growing past `fileSize` (through prlimit, which sets RLIMIT_FSIZE and execs it: the
    /// same process). A task running as root may raise the limit again — raw_exec is the driver
    /// an operator trusts; the agent's disk watch still counts what it writes.
    static func wrapped(_ user: (uid: Int, gid: Int)?, fileSize: Int?, _ path: String, _ argv: [String]) throws(DriverError) -> (String, [String]) {
        var (program, args) = (path, argv)
        if let user {
            guard let setpriv = resolveCommand("setpriv", path: TaskEnvironment.hostPath) else {
                throw DriverError("setpriv (util-linux) not found: a raw_exec task cannot run as another user here", recoverable: false)
            }
            (program, args) = (setpriv, ["setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups", "--no-new-privs", "--", program] + args.dropFirst())
        }
        if let fileSize {
            guard let prlimit = resolveCommand("prlimit", path: TaskEnvironment.hostPath) else {
                throw DriverError("prlimit (util-linux) not found: a raw_exec task's file sizes cannot be limited here", recoverable: false)
            }
            (program, args) = (prlimit, ["prlimit", "--fsize=\(fileSize)", "--", program] + args.dropFirst())
        }
        return (program, args)
    }

    public func execute(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                        timeout: Duration) async -> (code: Int, output: String) {
        guard let first = command.first, let path = resolveCommand(first, path: environment["PATH"]) else {
            return (127, "command \(command.first ?? "") not found")
        }
        guard let (program, argv) = try? Self.wrapped(handle.uid.map { ($0, handle.gid ?? $0) }, fileSize: handle.fileSizeLimit, path, command) else {
            return (127, "setpriv or prlimit (util-linux) not found")
        }
        return await runCommand(program, argv, environment: environment.map { "\($0.key)=\($0.value)" }, directory: directory, timeout: timeout)
    }

    public func interactiveCommand(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                                   tty: Bool) -> InteractiveCommand? {
        guard let first = command.first, let path = resolveCommand(first, path: environment["PATH"]),
              let (program, argv) = try? Self.wrapped(handle.uid.map { ($0, handle.gid ?? $0) }, fileSize: handle.fileSizeLimit, path, command) else { return nil }
        var env = environment
        if tty && env["TERM"] == nil { env["TERM"] = "xterm" }
        return InteractiveCommand(path: program, arguments: argv, environment: env.map { "\($0.key)=\($0.value)" }.sorted(), directory: directory)
    }

    public func signal(_ handle: TaskHandle, _ signal: Int32) {
        guard ProcessIdentity.isAlive(pid: handle.pid, startTime: handle.startTime) else { return }
        // The task leads its own session and process group: signal the whole group, so its
        // children stop with it.
        if kill(-handle.pid, signal) != 0 { kill(handle.pid, signal) }
    }
}
