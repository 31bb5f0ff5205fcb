import CaravanModel
#if canImport(Glibc)
import Glibc
#endif

/// `container`: an OCI image from a registry, run by runc. The image is pulled and unpacked once
/// per node (see ``ImageStore``); each task gets an overlay on it (its writes go to its own
/// directory), the task's directories mounted at /alloc, /local and /secrets, the image's
/// entrypoint, command, environment, working directory and user merged with the task's
/// config, and the same limits and namespaces as `exec` (host network: ports are host ports).
public struct ContainerDriver: TaskDriver {
    public let name = TaskSpec.Driver.container
    public let images: ImageStore
    let runc: RuncDriver

    public init(images: ImageStore, stateRoot: String) {
        self.images = images
        self.runc = RuncDriver(name: .container, stateRoot: stateRoot)
    }

    public func fingerprint() -> (usable: Bool, detail: String) {
        let r = runc.fingerprint()
        guard r.usable else { return r }
        guard readSmallFile("/proc/filesystems")?.contains("overlay") == true else { return (false, "the kernel has no overlay file system") }
        return r
    }

    public func start(_ ctx: TaskContext, events: @Sendable (TaskEvent) -> Void) async throws(DriverError) -> TaskHandle {
        guard let runcPath = runc.runc else { throw DriverError("runc not found on PATH; the container driver cannot run here") }
        guard let image = ctx.task.config.image else { throw DriverError("config.image is required for the container driver", event: "Failed Validation") }
        let pulled: PulledImage
        do {
            pulled = try await images.pull(image, auth: ctx.task.config.auth)
        } catch {
            throw DriverError(error.description, event: "Image Pull Failed", recoverable: error.transient)
        }
        events(TaskEvent(time: Executor.unixMillis(), type: "Image Pulled", message: "\(image) (\(pulled.digest.prefix(19)))"))
        let bundle = ctx.directories.task + "/bundle"
        let rootfs = bundle + "/rootfs"
        try mountOverlay(lower: pulled.rootfs, task: ctx.directories.task, at: rootfs)
        let cfg = pulled.config
        // The image's environment first, the task's over it (but the image's PATH unless the task sets one).
        var env: [String: String] = [:]
        for kv in cfg.env ?? [] {
            let p = kv.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if p.count == 2 { env[String(p[0])] = String(p[1]) }
        }
        for (k, v) in ctx.environment where !(k == "PATH" && env["PATH"] != nil && ctx.task.env["PATH"] == nil) { env[k] = v }
        let entrypoint = ctx.task.config.entrypoint ?? cfg.entrypoint ?? []
        let command: [String]
        if let c = ctx.command { command = [c] + ctx.arguments } else if !ctx.arguments.isEmpty { command = ctx.arguments } else {
            command = ctx.task.config.entrypoint == nil ? cfg.cmd ?? [] : []
        }
        let args = entrypoint + command
        guard !args.isEmpty else {
            throw DriverError("image \(image) has no entrypoint or command, and the task sets none (config.command)", event: "Failed Validation")
        }
        let user = try TaskUser.resolve(ctx.task.user ?? cfg.user ?? "", root: rootfs, fallback: .root)
        try ctx.userPolicy.check(user, driver: name)
        try user.own(ctx.directories)
        var c = ctx
        c.environment = env
        let config = RuncDriver.config(c, args: args, rootfs: rootfs, hostMounts: false,
                                       cwd: ctx.task.config.workdir ?? cfg.workingDir.flatMap { $0.isEmpty ? nil : $0 } ?? "/", user: user)
        try writeFile(bundle + "/config.json", config.text)
        return try await runc.run(ctx, bundle: bundle, runc: runcPath)
    }

    public func signal(_ handle: TaskHandle, _ signal: Int32) { runc.signal(handle, signal) }

    public func execute(_ handle: TaskHandle, command: [String], environment: [String: String], directory: String,
                        timeout: Duration) async -> (code: Int, output: String) {
        await runc.execute(handle, command: command, environment: environment, directory: directory, timeout: timeout)
    }

    public func cleanup(_ handle: TaskHandle) {
        runc.cleanup(handle)
        if let b = handle.bundle { _ = umount2(b + "/rootfs", Int32(MNT_DETACH)) }
    }

    /// The image read-only below, the task's own writable layer above.
    func mountOverlay(lower: String, task: String, at rootfs: String) throws(DriverError) {
        let upper = task + "/overlay/upper", work = task + "/overlay/work"
        for d in [upper, work, rootfs] where mkdirAll(d) != 0 {
            throw DriverError("cannot create \(d): \(String(cString: strerror(errno)))")
        }
        _ = umount2(rootfs, Int32(MNT_DETACH))
        let options = "lowerdir=\(lower),upperdir=\(upper),workdir=\(work)"
        guard mount("overlay", rootfs, "overlay", 0, options) == 0 else {
            throw DriverError("cannot mount the image's overlay at \(rootfs): \(String(cString: strerror(errno)))")
        }
    }

    /// `uid[:gid]` or a user name from the image's /etc/passwd; empty is root.
}
