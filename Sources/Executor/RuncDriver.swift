import CaravanModel
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `exec`: the command isolated by runc — private PID, IPC, UTS and mount namespaces, a root of
/// read-only host `/usr /bin /lib…` plus the task's directories and a small `/etc` of its own
/// (never the host's: no shadow file, no agent configuration), as `nobody` unless the task
/// names a user, with no capabilities (a reduced set for root), `noNewPrivileges`, a seccomp
/// filter and cgroup limits. The host network is shared (ports are host ports).
///
/// No runc process stays beside a task: `runc create` + `runc start`, and the container's init,
/// which outlives the agent, is watched directly (its exit status is the task's).
public struct RuncDriver: TaskDriver {
    public let name: TaskSpec.Driver
    /// runc's state directory (`runc --root`).
    public let stateRoot: String
    public let runc: String?

    /// Nomad's default for isolated tasks: enough to run ordinary programs, nothing that reaches
    /// the host.
    public static let capabilities = ["CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                                      "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
                                      "CAP_SETUID", "CAP_SYS_CHROOT"]

    public init(name: TaskSpec.Driver = .exec, stateRoot: String) {
        self.name = name
        self.stateRoot = stateRoot
        self.runc = resolveCommand("runc", path: TaskEnvironment.hostPath)
    }

    public func fingerprint() -> (usable: Bool, detail: String) {
        guard let runc else { return (false, "runc not found on PATH") }
        guard geteuid() == 0 else { return (false, "needs root to create namespaces and cgroups") }
        return (true, runc)
    }

    /// One id per task of an allocation: task names are letters, digits, `-`, `_` and `.`, all
    /// of which runc takes, so no two names map to one id.
    static func containerID(_ allocationID: String, _ task: String) -> String {
        "caravan-\(allocationID)-\(task)"
    }

    public func start(_ ctx: TaskContext, events: @Sendable (TaskEvent) -> Void) async throws(DriverError) -> TaskHandle {
        guard let runc else { throw DriverError("runc not found on PATH; the \(name.rawValue) driver cannot run here") }
        guard let command = ctx.command, !command.isEmpty else {
            throw DriverError("config.command is required for the exec driver", event: "Failed Validation")
        }
        if command.hasPrefix("/") || !command.contains("/") {
            // The root inside mirrors the host's /usr, /bin and /lib, so a missing command is caught here.
            guard resolveCommand(command, path: ctx.environment["PATH"]) != nil else {
                throw DriverError("command \(command) not found in the task's root (PATH=\(ctx.environment["PATH"] ?? ""))", recoverable: false)
            }
        }
        let bundle = ctx.directories.task + "/bundle"
        let rootfs = bundle + "/rootfs"
        // Without a `user`, a uid of the task's own (no other task or host process shares it).
        let user = try TaskUser.resolve(ctx.task.user ?? "", root: "/", fallback: .dynamic(ctx.allocationID, ctx.directories.taskName))
        try ctx.userPolicy.check(user, driver: name)
        try prepareHostRoot(rootfs, user: user)
        try user.own(ctx.directories)
        let config = Self.config(ctx, args: [command] + ctx.arguments, rootfs: rootfs, hostMounts: true, cwd: "/local", user: user)
        try writeFile(bundle + "/config.json", config.text)
        return try await run(ctx, bundle: bundle, runc: runc)
    }

    /// Runs a prepared bundle (shared with the container driver) without leaving a runc process
    /// beside it: `runc create` sets the container up and exits, leaving its init waiting; the
    /// init, orphaned, becomes this agent's child (the supervisor is a child subreaper), so its
    /// exit code is the task's; `runc start` lets it run the task's command. The container's
    /// stdout and stderr are the task's log files, inherited through `runc create`.
    func run(_ ctx: TaskContext, bundle: String, runc: String) async throws(DriverError) -> TaskHandle {
        let id = Self.containerID(ctx.allocationID, ctx.directories.taskName)
        // A container of the same name left by an earlier attempt would make runc refuse.
        _ = await runHelper(runc, ["--root", stateRoot, "delete", "--force", id])
        unlink(bundle + "/init.pid")
        let created = ExitLatch()
        let spec = SpawnSpec(path: runc, arguments: ["runc", "--root", stateRoot, "create", "--bundle", bundle, "--pid-file", bundle + "/init.pid", id],
                             environment: ["PATH=" + TaskEnvironment.hostPath],
                             workingDirectory: bundle, stdoutPath: ctx.directories.stdout, stderrPath: ctx.directories.stderr)
        do { _ = try await ProcessSupervisor.shared.spawn(spec) { created.finish($0) } } catch { throw DriverError(error.description) }
        let status = await created.wait()
        guard let status, status.code == 0, let text = readSmallFile(bundle + "/init.pid"), let pid = Int32(text.filter(\.isNumber)), pid > 0 else {
            _ = await runHelper(runc, ["--root", stateRoot, "delete", "--force", id])
            let why = (readSmallFile(ctx.directories.stderr, limit: 1 << 20) ?? "").split(separator: "\n").suffix(2).joined(separator: "; ")
            throw DriverError("runc could not create the container (\(status?.description ?? "no exit status"))\(why.isEmpty ? "" : ": " + why)")
        }
        let start = ProcessIdentity.startTime(of: pid) ?? 0
        // Watched before it may run (it waits for `runc start`): its exit is held until the start
        // is known to have worked, and dropped if it did not.
        let relay = ExitRelay()
        ProcessSupervisor.shared.watch(pid: pid) { relay.deliver($0) }
        let started = await runHelper(runc, ["--root", stateRoot, "start", id])
        guard started.code == 0 else {
            relay.drop()
            kill(pid, SIGKILL)
            _ = await runHelper(runc, ["--root", stateRoot, "delete", "--force", id])
            throw DriverError("runc could not start the container: \(started.output.split(separator: "\n").joined(separator: "; "))")
        }
        relay.connect(ctx.onExit)
        return TaskHandle(pid: pid, startTime: start, container: id, bundle: bundle)
    }

    public func signal(_ handle: TaskHandle, _ signal: Int32) {
        // Signal the container's init directly: runc only forwards what it receives, and a
        // SIGKILL to runc would leave the container behind.
        if let text = readInitPid(handle), let pid = Int32(text), pid > 0, kill(pid, signal) == 0 { return }
        if ProcessIdentity.isAlive(pid: handle.pid, startTime: handle.startTime) { kill(handle.pid, signal) }
    }

    /// The container's init pid from runc's state (`state.json` holds `"init_process_pid":N`).
    func readInitPid(_ handle: TaskHandle) -> String? {
        guard let id = handle.container, let state = readSmallFile("\(stateRoot)/\(id)/state.json"),
              let r = state.firstRange(of: "\"init_process_pid\":") else { return nil }
        return String(state[r.upperBound...].prefix { $0.isNumber })
    }

    /// `runc exec` in the task's container (its namespaces, root and environment).
    public func execute(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                        timeout: Duration) async -> (code: Int, output: String) {
        guard let runc, let id = handle.container else { return (127, "the task has no container") }
        return await runCommand(runc, ["runc", "--root", stateRoot, "exec", id] + command, timeout: timeout)
    }

    /// `runc exec` in the task's container; with a terminal, runc gives the command one inside
    /// the container and relays it to the terminal it runs on (resizes included).
    public func interactiveCommand(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                                   tty: Bool) -> InteractiveCommand? {
        guard let runc, let id = handle.container, !command.isEmpty else { return nil }
        return InteractiveCommand(path: runc, arguments: ["runc", "--root", stateRoot, "exec"] + (tty ? ["--tty", "--env", "TERM=xterm"] : []) + [id] + command,
                                  environment: ["PATH=" + TaskEnvironment.hostPath], directory: nil)
    }

    public func cleanup(_ handle: TaskHandle) {
        guard let runc, let id = handle.container else { return }
        Task { _ = await runHelper(runc, ["--root", stateRoot, "delete", "--force", id]) }
    }

    /// An empty root with the mount points, symlinks where the host has them (`/bin → usr/bin`),
    /// and an `/etc` of the task's own: `passwd` and `group` naming root, nobody and the task's
    /// user (the few host files programs need are bound over it read-only; see ``etcFiles``).
    func prepareHostRoot(_ rootfs: String, user: TaskUser) throws(DriverError) {
        guard mkdirAll(rootfs) == 0 else { throw DriverError("cannot create \(rootfs): \(String(cString: strerror(errno)))") }
        for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            var buf = [CChar](repeating: 0, count: 4096)
            let n = readlink("/" + d, &buf, buf.count - 1)
            let target = rootfs + "/" + d
            if n > 0 {
                if access(target, F_OK) != 0 { symlink(String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self), target) }
            } else if access("/" + d, F_OK) == 0 {
                mkdirAll(target)
            }
        }
        for d in ["usr", "etc", "alloc", "local", "secrets", "tmp", "proc", "dev", "sys"] { mkdirAll(rootfs + "/" + d) }
        // runc gives a tmpfs the mode of the directory it is mounted on: /tmp is everyone's.
        chmod(rootfs + "/tmp", 0o1777)
        var passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        var group = "root:x:0:\nnogroup:x:65534:\n"
        if user.uid != 0 && user.uid != 65534 { passwd += "\(user.name.allSatisfy(\.isNumber) || user.name.isEmpty ? "task" : user.name):x:\(user.uid):\(user.gid)::/local:/bin/sh\n" }
        if user.gid != 0 && user.gid != 65534 { group += "task:x:\(user.gid):\n" }
        try writeFile(rootfs + "/etc/passwd", passwd, mode: 0o644)
        try writeFile(rootfs + "/etc/group", group, mode: 0o644)
    }

    /// Host files under /etc that ordinary programs need, bound read-only into an `exec` task's
    /// own /etc: name resolution, the dynamic linker's cache, time zone, TLS roots, and Debian's
    /// alternatives (`/usr/bin/awk` → `/etc/alternatives/awk`).
    static let etcFiles = ["/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/ld.so.cache", "/etc/localtime",
                           "/etc/ssl/certs", "/etc/alternatives", "/etc/protocols", "/etc/services"]

    /// The OCI runtime config of a task.
    static func config(_ ctx: TaskContext, args: [String], rootfs: String, hostMounts: Bool, cwd: String,
                       user: TaskUser) -> JSONValue {
        var mounts: [JSONValue] = [
            ["destination": "/proc", "type": "proc", "source": "proc"],
            ["destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]],
            ["destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]],
            ["destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]],
            ["destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]],
            ["destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]],
            ["destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]],
            bind(ctx.directories.shared, "/alloc", readOnly: false),
            bind(ctx.directories.local, "/local", readOnly: false),
            bind(ctx.directories.secrets, "/secrets", readOnly: false),
        ]
        if hostMounts {
            for d in ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
                var isLink = [CChar](repeating: 0, count: 8)
                if access(d, F_OK) == 0 && readlink(d, &isLink, isLink.count) < 0 { mounts.append(bind(d, d, readOnly: true)) }
            }
            for f in etcFiles where access(f, F_OK) == 0 { mounts.append(bind(f, f, readOnly: true)) }
        } else {
            // Name resolution for images: the host's resolver settings, read-only.
            for f in ["/etc/resolv.conf", "/etc/hosts"] where access(f, F_OK) == 0 {
                mounts.append(bind(f, f, readOnly: true))
            }
        }
        // Root in the task keeps a reduced set; anyone else has none (the bounding set still
        // caps what a setuid program could regain, and noNewPrivileges stops that too).
        let caps = JSONValue.strings(capabilities)
        let held = user.uid == 0 ? caps : JSONValue.strings([])
        let env = ctx.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return [
            "ociVersion": "1.0.2",
            "process": [
                "terminal": false,
                "user": ["uid": .number(user.uid), "gid": .number(user.gid), "additionalGids": [.number(user.gid)]],
                "args": .strings(args),
                "env": .strings(env),
                "cwd": .string(cwd),
                "capabilities": ["bounding": caps, "effective": held, "permitted": held],
                "noNewPrivileges": true,
                "rlimits": ctx.fileSizeLimitBytes.map { n in [["type": "RLIMIT_FSIZE", "hard": .number(n), "soft": .number(n)]] } ?? [],
            ],
            // An exec task's root (host directories and an /etc the agent writes) is read-only to
            // it: nothing it does there is read back as root at its next start.
            "root": ["path": .string(rootfs), "readonly": .bool(hostMounts)],
            "hostname": .string(String(ctx.directories.taskName.prefix(63))),
            "mounts": .array(mounts),
            "linux": [
                "cgroupsPath": .string(ctx.cgroup.runcPath),
                // The memory limit is on the parent group Caravan owns (see TaskCgroup), so the
                // limit and OOM counters outlive runc's own group.
                "resources": [
                    "cpu": ["shares": .number(max(2, ctx.task.resources.cpuMillicores * 1024 / 1000))],
                    "pids": ["limit": 4096],
                    "devices": [["allow": false, "access": "rwm"]],
                ],
                "namespaces": [["type": "pid"], ["type": "ipc"], ["type": "uts"], ["type": "mount"]],
                "maskedPaths": .strings(["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                                         "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]),
                "readonlyPaths": .strings(["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]),
                "seccomp": SeccompProfile.json,
            ],
        ]
    }

    static func bind(_ source: String, _ destination: String, readOnly: Bool) -> JSONValue {
        // Writable binds too are nosuid and nodev: a setuid binary or a device node a task makes
        // there means nothing, inside or on the host.
        ["destination": .string(destination), "type": "bind", "source": .string(source),
         "options": .strings(readOnly ? ["rbind", "ro", "nosuid", "nodev"] : ["rbind", "rw", "nosuid", "nodev"])]
    }
}

/// An exit that may come before anyone is ready for it: held until `connect`, or dropped.
final class ExitRelay: Sendable {
    private let state = Mutex<(target: (@Sendable (ExitStatus) -> Void)?, held: ExitStatus?, dropped: Bool)>((nil, nil, false))

    func deliver(_ status: ExitStatus) {
        let target = state.withLock { s -> (@Sendable (ExitStatus) -> Void)? in
            if s.dropped { return nil }
            if s.target == nil { s.held = status }
            return s.target
        }
        target?(status)
    }

    func connect(_ target: @escaping @Sendable (ExitStatus) -> Void) {
        let held = state.withLock { s -> ExitStatus? in
            s.target = target
            defer { s.held = nil }
            return s.held
        }
        if let held { target(held) }
    }

    func drop() { state.withLock { $0.dropped = true } }
}
