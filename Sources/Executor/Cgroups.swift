#if canImport(Glibc)
import Glibc
#endif

/// The cgroup a task's processes live in: `caravan/<alloc>-<task>` in each controller (v1) or in
/// the unified tree (v2). The memory limit is set here, on a group Caravan owns; runc puts its
/// container one level below (`.../ctr`) and removes only that, so the OOM and limit counters
/// are still readable after the task has ended.
public struct TaskCgroup: Sendable, Equatable {
    public enum Version: String, Sendable { case v1, v2, none }

    public let version: Version
    public let name: String
    let root: String

    /// What the machine offers: v2 when the unified hierarchy has the memory controller at the
    /// top, v1 when a memory hierarchy is mounted (also in hybrid mode), else none.
    public static func detect(root: String = "/sys/fs/cgroup") -> Version {
        if let c = readSmallFile(root + "/cgroup.controllers"), c.split(separator: " ").contains(where: { $0.hasPrefix("memory") }) {
            return .v2
        }
        if access(root + "/memory/memory.limit_in_bytes", F_OK) == 0 || access(root + "/memory", W_OK) == 0 { return .v1 }
        return .none
    }

    /// The group of one task of an allocation.
    public init(allocation: String, task: String) { self.init(name: "\(allocation)-\(task)") }

    /// What ``detect()`` found when first asked (the hierarchy does not change while the agent runs).
    public static let detected = detect()

    public init(name: String, version: Version = TaskCgroup.detected, root: String = "/sys/fs/cgroup") {
        self.name = name
        self.version = version
        self.root = root
    }

    /// The path runc is given (relative to each hierarchy's root).
    public var runcPath: String { "/caravan/\(name)/ctr" }

    var controllers: [String] { version == .v1 ? ["memory", "cpu", "pids"] : [""] }
    func dir(_ controller: String) -> String {
        controller.isEmpty ? "\(root)/caravan/\(name)" : "\(root)/\(controller)/caravan/\(name)"
    }

    /// The CFS period quotas are expressed in (100 ms, the kernel's default).
    static let cpuPeriodMicroseconds = 100_000

    /// The CFS quota for a reservation: 1000 millicores is one CPU's whole period.
    static func cpuQuotaMicroseconds(_ millicores: Int) -> Int { max(1000, millicores * cpuPeriodMicroseconds / 1000) }

    /// Creates the group with a memory hard limit, CPU weight (and, with `cpuHardLimit`, a CFS
    /// quota equal to the reservation) and a pids limit. Returns what failed (the task still
    /// runs, without that limit).
    @discardableResult
    public func create(memoryMiB: Int, cpuMillicores: Int, cpuHardLimit: Bool = false, pids: Int = 4096) -> [String] {
        guard version != .none else { return ["no cgroup hierarchy found; limits not applied"] }
        var problems: [String] = []
        for c in controllers {
            let d = dir(c)
            if mkdirAll(d) != 0 { problems.append("cannot create \(d): \(String(cString: strerror(errno)))") }
        }
        let bytes = String(memoryMiB << 20)
        switch version {
        case .v1:
            if !write(dir("memory") + "/memory.limit_in_bytes", bytes) { problems.append("memory limit") }
            // Swap would let a task go past its limit without an OOM kill.
            _ = write(dir("memory") + "/memory.memsw.limit_in_bytes", bytes)
            _ = write(dir("cpu") + "/cpu.shares", String(max(2, cpuMillicores * 1024 / 1000)))
            if cpuHardLimit {
                _ = write(dir("cpu") + "/cpu.cfs_period_us", String(Self.cpuPeriodMicroseconds))
                if !write(dir("cpu") + "/cpu.cfs_quota_us", String(Self.cpuQuotaMicroseconds(cpuMillicores))) { problems.append("cpu quota") }
            }
            _ = write(dir("pids") + "/pids.max", String(pids))
        case .v2:
            // Controllers must be enabled down the path first.
            _ = write(root + "/cgroup.subtree_control", "+memory +cpu +pids")
            _ = write(root + "/caravan/cgroup.subtree_control", "+memory +cpu +pids")
            if !write(dir("") + "/memory.max", bytes) { problems.append("memory limit") }
            _ = write(dir("") + "/memory.swap.max", "0")
            _ = write(dir("") + "/cpu.weight", String(max(1, min(10000, cpuMillicores / 10))))
            if cpuHardLimit, !write(dir("") + "/cpu.max", "\(Self.cpuQuotaMicroseconds(cpuMillicores)) \(Self.cpuPeriodMicroseconds)") {
                problems.append("cpu quota")
            }
            _ = write(dir("") + "/pids.max", String(pids))
            _ = write(dir("") + "/cgroup.subtree_control", "+memory +cpu +pids")
        case .none: break
        }
        return problems
    }

    /// Moves a process (raw_exec) into the group.
    public func add(pid: Int32) {
        for c in controllers { _ = write(dir(c) + "/cgroup.procs", String(pid)) }
    }

    /// Whether the kernel's OOM killer acted in this group, or the group hit its memory limit
    /// (cgroup v1 counts kills only in the group of the victim, which runc has removed).
    public func hitMemoryLimit() -> Bool {
        switch version {
        case .v1:
            if let oc = readSmallFile(dir("memory") + "/memory.oom_control"), counter(oc, "oom_kill") > 0 { return true }
            if let fc = readSmallFile(dir("memory") + "/memory.failcnt"), let n = Int(fc.filter(\.isNumber)), n > 0 { return true }
            // Newer kernels count failures only where the charge started (runc's removed group):
            // the peak reaching the limit tells the same.
            func number(_ f: String) -> Int? { readSmallFile(dir("memory") + "/" + f).flatMap { Int($0.filter(\.isNumber)) } }
            if let peak = number("memory.max_usage_in_bytes"), let limit = number("memory.limit_in_bytes"), peak >= limit - (256 << 10) { return true }
            return false
        case .v2:
            guard let ev = readSmallFile(dir("") + "/memory.events") else { return false }
            return counter(ev, "oom_kill") > 0 || counter(ev, "oom") > 0
        case .none: return false
        }
    }

    /// Kills every process still in the group (and runc's child group): what a task left behind
    /// — a daemon it started, a `setsid` child — ends with it. v2's `cgroup.kill` where the
    /// kernel has it; otherwise SIGKILL to each pid listed, a few rounds (a fork racing the list).
    public func killAll() {
        guard version != .none else { return }
        for c in controllers {
            for d in [dir(c) + "/ctr", dir(c)] {
                if version == .v2 && write(d + "/cgroup.kill", "1") { continue }
                for _ in 0..<5 {
                    let pids = (readSmallFile(d + "/cgroup.procs") ?? "").split(separator: "\n").compactMap { Int32($0) }.filter { $0 > 1 }
                    if pids.isEmpty { break }
                    for pid in pids { Glibc.kill(pid, SIGKILL) }
                }
            }
        }
    }

    /// Whether no process is left in the group (or it is gone).
    public var isEmpty: Bool {
        guard version != .none else { return true }
        return controllers.allSatisfy { c in
            [dir(c) + "/ctr", dir(c)].allSatisfy { (readSmallFile($0 + "/cgroup.procs") ?? "").allSatisfy { !$0.isNumber } }
        }
    }

    /// Removes the group (and runc's leftover child, if any); processes still in it keep it alive.
    public func remove() {
        // runc makes the path in every v1 hierarchy (cpuset, freezer, …), not only ours.
        var all = Set(controllers)
        if version == .v1 { all.formUnion(listDirectory(root).filter { !$0.hasPrefix(".") }) }
        for c in all {
            _ = rmdir(dir(c) + "/ctr")
            _ = rmdir(dir(c))
        }
    }

    private func counter(_ text: String, _ key: String) -> Int {
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == key { return Int(parts[1]) ?? 0 }
        }
        return 0
    }

    private func write(_ path: String, _ value: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return value.withCString { Glibc.write(fd, $0, strlen($0)) } >= 0
    }
}
