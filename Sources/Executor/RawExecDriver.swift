import CaravanModel
#if canImport(Glibc)
import Glibc
#endif

/// `raw_exec`: the command as a plain process of the host, started by libuv, output to the
/// task's log files, optionally limited by the task's cgroup.
public struct RawExecDriver: TaskDriver {
    public let name = TaskSpec.Driver.rawExec
    /// Put the process in the task's cgroup (memory, CPU, pids limits).
    public var useCgroups: Bool

    public init(useCgroups: Bool = true) { self.useCgroups = useCgroups }

    public func fingerprint() -> (usable: Bool, detail: String) { (true, "plain processes") }

    public func start(_ ctx: TaskContext, events: @Sendable (TaskEvent) -> Void) async throws(DriverError) -> TaskHandle {
        guard let command = ctx.command, !command.isEmpty else {
            throw DriverError("config.command is required for the raw_exec driver", event: "Failed Validation")
        }
        guard let path = resolveCommand(command, path: ctx.environment["PATH"]) else {
            throw DriverError("command \(command) not found (PATH=\(ctx.environment["PATH"] ?? ""))", recoverable: false)
        }
        let env = ctx.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let spec = SpawnSpec(path: path, arguments: [command] + ctx.arguments, environment: env,
                             workingDirectory: ctx.directories.task, stdoutPath: ctx.directories.stdout, stderrPath: ctx.directories.stderr)
        let pid: Int32
        do { pid = try await ProcessSupervisor.shared.spawn(spec, onExit: ctx.onExit) } catch {
            throw DriverError(error.description)
        }
        if useCgroups && ctx.cgroup.version != .none { ctx.cgroup.add(pid: pid) }
        return TaskHandle(pid: pid, startTime: ProcessIdentity.startTime(of: pid) ?? 0)
    }

    public func signal(_ handle: TaskHandle, _ signal: Int32) {
        guard ProcessIdentity.isAlive(pid: handle.pid, startTime: handle.startTime) else { return }
        // The task leads its own session and process group: signal the whole group, so its
        // children stop with it.
        if kill(-handle.pid, signal) != 0 { kill(handle.pid, signal) }
    }
}
