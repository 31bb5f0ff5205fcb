import CaravanModel
#if canImport(Glibc)
import Glibc
#endif

/// Who a task runs as: a uid and gid, from a task's `user` (`NAME`, `UID`, `NAME:GROUP`,
/// `UID:GID`) looked up in an `/etc/passwd` and `/etc/group` (the image's for containers, the
/// host's for `exec` and `raw_exec`).
public struct TaskUser: Sendable, Equatable {
    public var uid: Int
    public var gid: Int
    public var name: String

    public static let root = TaskUser(uid: 0, gid: 0, name: "root")
    public static let nobody = TaskUser(uid: 65534, gid: 65534, name: "nobody")

    /// The first uid (and gid) of the range `exec` tasks that name no user run as.
    public static let dynamicBase = 2_000_000
    public static let dynamicRange = 1_000_000

    /// What an `exec` task that names no user runs as: a uid of its own, from its allocation and
    /// name, in a range no host account uses, so no other task (nor a host process running as
    /// nobody) can read its `local` or `secrets`.
    public static func dynamic(_ allocation: String, _ task: String) -> TaskUser {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in (allocation + "/" + task).utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        let id = dynamicBase + Int(h % UInt64(dynamicRange))
        return TaskUser(uid: id, gid: id, name: "task")
    }

    /// Resolves `spec` against `<root>/etc/passwd` and `<root>/etc/group` (read inside `root`:
    /// links are not followed out of it); an empty spec is `fallback`. On the host (`root` is
    /// `/`), a group named explicitly may not be a system group (below 1000: `root`, `shadow`,
    /// `disk`, …) unless it is the user's own or the user is root.
    public static func resolve(_ spec: String, root: String, fallback: TaskUser) throws(DriverError) -> TaskUser {
        if spec.isEmpty { return fallback }
        let parts = spec.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let etc = root == "/" ? "/etc" : "the image's /etc"
        func id(_ s: Substring) -> Int? { s.allSatisfy(\.isNumber) && !s.isEmpty && s.count <= 10 ? Int(s).flatMap { $0 <= 0xFFFF_FFFE ? $0 : nil } : nil }
        /// `name:x:id:gid…` lines of a file under `root/etc` as (name, id, gid).
        func entries(_ file: String) -> [(name: Substring, id: Int, gid: Int)] {
            (readFileInRoot(root, "etc/" + file) ?? "").split(separator: "\n").compactMap { line in
                let f = line.split(separator: ":", omittingEmptySubsequences: false)
                guard f.count >= 4, let a = id(f[2]) else { return nil }
                return (f[0], a, id(f[3]) ?? a)
            }
        }
        let accounts = entries("passwd")
        var user: TaskUser
        let account: (name: Substring, id: Int, gid: Int)?
        if let n = id(Substring(parts[0])) {
            // A uid with an account takes the account's group; one without, a group of its number.
            account = accounts.first { $0.id == n }
            user = TaskUser(uid: n, gid: account?.gid ?? n, name: parts[0])
        } else if let a = accounts.first(where: { $0.name == parts[0] }) {
            account = a
            user = TaskUser(uid: a.id, gid: a.gid, name: parts[0])
        } else if parts[0] == "nobody" {
            account = nil
            user = .nobody
        } else {
            throw DriverError("user \(parts[0]) is not in \(etc)/passwd", event: "Failed Validation", recoverable: false)
        }
        let primary = user.gid
        if parts.count == 2 {
            if let g = id(Substring(parts[1])) { user.gid = g } else if let g = entries("group").first(where: { $0.name == parts[1] }) { user.gid = g.id } else {
                throw DriverError("group \(parts[1]) is not in \(etc)/group", event: "Failed Validation", recoverable: false)
            }
        }
        // On the host a task may not take a system group (below 1000: root, shadow, disk, …)
        // unless it is root or the group is its own user's.
        if root == "/" && user.uid != 0 && user.gid < 1000 && user.gid != TaskUser.nobody.gid {
            if parts.count == 2 && user.gid != primary {
                throw DriverError("group \(parts[1]) is a system group (gid \(user.gid)); a task may take it only as root or as its own user's group",
                                  event: "Failed Validation", recoverable: false)
            }
            if parts.count == 1 && account == nil && id(Substring(parts[0])) != nil {
                throw DriverError("uid \(parts[0]) has no account and its group \(user.gid) is a system group; name a group (uid:gid) of 1000 or more",
                                  event: "Failed Validation", recoverable: false)
            }
        }
        return user
    }

    /// Gives the task's own directories to this user (`local`, `secrets`), and lets it create
    /// files in the allocation's shared directory (sticky, like /tmp). Root needs nothing.
    public func own(_ d: TaskDirectories) throws(DriverError) {
        guard uid != 0 else { return }
        // `create` made these real directories; lchown never follows a link put in their place.
        for dir in [d.local, d.secrets] where lchown(dir, uid_t(uid), gid_t(gid)) != 0 {
            throw DriverError("cannot give \(dir) to uid \(uid): \(String(cString: strerror(errno)))")
        }
        chmod(d.shared, 0o1777)
    }
}

/// The seccomp filter every isolated task (`exec`, `container`) runs under: everything is
/// allowed but the system calls that reach past a container — loading kernel modules, mounting,
/// making or entering namespaces (`unshare`, `setns`, `clone` with a namespace flag), tracing
/// other processes, the kernel keyring, BPF, io_uring, rebooting, setting the clock — which
/// fail with EPERM (`clone3` with ENOSYS, so libc falls back to `clone`).
enum SeccompProfile {
    static let refused = [
        "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module", "finit_module", "fsconfig",
        "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load",
        "keyctl", "lookup_dcookie", "mount", "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
        "open_tree", "perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl",
        "quotactl_fd", "reboot", "request_key", "setns", "settimeofday", "stime", "swapoff", "swapon", "sysfs", "_sysctl", "umount",
        "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "pidfd_getfd", "process_madvise",
    ]

    /// `clone` flags that make new namespaces (a user namespace first of all: root inside it
    /// reaches kernel interfaces a container should not).
    static let namespaceFlags: [Int] = [0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000]

    static var json: JSONValue {
        var rules: [JSONValue] = [["names": .strings(refused), "action": "SCMP_ACT_ERRNO", "errnoRet": 1]]
        // clone with any namespace flag fails; clone3 (whose flags a filter cannot read) says it
        // does not exist, so libc falls back to clone.
        for flag in namespaceFlags {
            rules.append(["names": .strings(["clone"]), "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                          "args": [["index": 0, "value": .number(flag), "valueTwo": .number(flag), "op": "SCMP_CMP_MASKED_EQ"]]])
        }
        rules.append(["names": .strings(["clone3"]), "action": "SCMP_ACT_ERRNO", "errnoRet": 38])
        return [
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": .strings(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
            "syscalls": .array(rules),
        ]
    }
}

/// Host users and groups tasks of some drivers may not run as on this node (Nomad's
/// `denied_host_uids`/`denied_host_gids`): by default `exec` tasks may not run as root. The
/// check is on the uid and gid a task would really run as — the one it names, the image's
/// for `container`, the agent's own for `raw_exec` without a `user` — and a refused task fails
/// before it starts, saying which rule refused it.
public struct TaskUserPolicy: Sendable, Equatable {
    public var deniedUids: [ClosedRange<Int>]
    public var deniedGids: [ClosedRange<Int>]
    public var drivers: Set<TaskSpec.Driver>

    public init(deniedUids: [ClosedRange<Int>], deniedGids: [ClosedRange<Int>] = [], drivers: Set<TaskSpec.Driver>) {
        self.deniedUids = deniedUids
        self.deniedGids = deniedGids
        self.drivers = drivers
    }

    /// An agent's policy unless its configuration says otherwise: no root in `exec`.
    public static let standard = TaskUserPolicy(deniedUids: [0...0], drivers: [.exec])
    /// Nothing refused.
    public static let none = TaskUserPolicy(deniedUids: [], drivers: [])

    /// `0,100-199` → [0...0, 100...199]; nil for anything else. Empty: none.
    public static func ranges(_ text: String) -> [ClosedRange<Int>]? {
        var out: [ClosedRange<Int>] = []
        for part in text.split(separator: ",") {
            let p = part.filter { $0 != " " }
            let ends = p.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            let nums = ends.map { s -> Int? in s.count <= 10 && !s.isEmpty && s.allSatisfy(\.isASCII) && s.allSatisfy(\.isNumber) ? Int(s) : nil }
            guard nums.allSatisfy({ $0 != nil && $0! <= 0xFFFF_FFFE }), let lo = nums.first!, let hi = nums.last!, lo <= hi else {
                return nil
            }
            out.append(lo...hi)
        }
        return out
    }

    public static func text(_ ranges: [ClosedRange<Int>]) -> String {
        ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ",")
    }

    /// Refuses `user` for a task of `driver` when its uid or gid is denied here.
    public func check(_ user: TaskUser, driver: TaskSpec.Driver) throws(DriverError) {
        guard drivers.contains(driver) else { return }
        if deniedUids.contains(where: { $0.contains(user.uid) }) {
            throw DriverError("user \(user.name) (uid \(user.uid)) may not run \(driver.rawValue) tasks on this node (its agent denies uids \(Self.text(deniedUids)))",
                              event: "Failed Validation", recoverable: false)
        }
        if deniedGids.contains(where: { $0.contains(user.gid) }) {
            throw DriverError("group \(user.gid) may not run \(driver.rawValue) tasks on this node (its agent denies gids \(Self.text(deniedGids)))",
                              event: "Failed Validation", recoverable: false)
        }
    }
}
