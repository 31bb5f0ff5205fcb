#if canImport(Glibc)
import Glibc
#endif

/// What a directory tree holds on disk, as the agent counts it against an allocation's
/// `ephemeralDisk`: the blocks of every file and directory (each entry at least 4 KiB, so a
/// million empty files are not free), without following links or entering other filesystems
/// (a container's overlay root, `/proc`). Walked through directory descriptors, never paths, so
/// what a task renames or links during the walk cannot send it outside the tree.
public enum DiskUsage {
    /// The deepest nesting walked; a tree deeper than this counts as over any limit.
    public static let maxDepth = 128
    /// The most entries walked; a tree with more counts as over any limit (and a walk stays
    /// well under a second).
    public static let maxEntries = 500_000
    public static let minimumEntryBytes = 4096

    public enum Result: Equatable, Sendable {
        /// The bytes counted (exact when under `stopAt`).
        case bytes(Int)
        /// Nested deeper than `maxDepth`.
        case tooDeep
        /// More than `maxEntries` files and directories.
        case tooMany
        /// Another filesystem inside (a mount, a btrfs subvolume) other than a container's root:
        /// its blocks would not be counted, so it is not allowed.
        case foreignFilesystem
    }

    /// The bytes under `path`; counting stops once past `stopAt` (the walk is bounded by it).
    /// `containerTasks`: the tasks whose `<task>/bundle/rootfs` may be another filesystem (their
    /// overlay root).
    public static func measure(_ path: String, stopAt: Int, containerTasks: Set<String> = []) -> Result {
        let allowed = Set(containerTasks.map { Array($0.utf8) })
        let top = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard top >= 0 else { return .bytes(0) }
        var st = stat()
        guard fstat(top, &st) == 0 else { close(top); return .bytes(0) }
        let device = st.st_dev
        var total = max(Int(st.st_blocks) * 512, minimumEntryBytes)
        var entries = 0
        // A file with several links is counted once (its other names cost an entry each).
        var linked: Set<UInt64> = []
        // One open directory stream per level of the current path, and the names down to it.
        var stack: [OpaquePointer] = []
        var path: [[UInt8]] = []
        guard let first = fdopendir(top) else { close(top); return .bytes(total) }
        stack.append(first)
        defer { for d in stack { closedir(d) } }
        while let dir = stack.last {
            guard total <= stopAt else { return .bytes(total) }
            guard let entry = readdir(dir) else {
                closedir(stack.removeLast())
                if !path.isEmpty { path.removeLast() }
                continue
            }
            // The name's own bytes (not a String: a name that is not UTF-8 must still be found).
            let parent = dirfd(dir)
            var s = stat()
            var isDot = false
            let statted = withUnsafePointer(to: &entry.pointee.d_name) { p in
                p.withMemoryRebound(to: CChar.self, capacity: 256) { name -> Bool in
                    isDot = name[0] == 0x2E && (name[1] == 0 || (name[1] == 0x2E && name[2] == 0))
                    return !isDot && fstatat(parent, name, &s, AT_SYMLINK_NOFOLLOW) == 0
                }
            }
            guard statted else { continue }
            // Another filesystem here: a container's overlay root (`<task>/bundle/rootfs`, its
            // writes are counted in the task directory) is skipped; anything else is refused.
            if s.st_dev != device {
                let entryName = withUnsafeBytes(of: &entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
                if stack.count == 3 && path.count == 2 && allowed.contains(path[0]) && path[1] == Array("bundle".utf8)
                    && entryName == Array("rootfs".utf8) { continue }
                return .foreignFilesystem
            }
            entries += 1
            guard entries <= maxEntries else { return .tooMany }
            if s.st_nlink > 1 && s.st_mode & S_IFMT != S_IFDIR && !linked.insert(UInt64(s.st_ino)).inserted {
                total += minimumEntryBytes
                continue
            }
            total += max(Int(s.st_blocks) * 512, minimumEntryBytes)
            guard s.st_mode & S_IFMT == S_IFDIR else { continue }
            guard stack.count < maxDepth else { return .tooDeep }
            let fd = withUnsafePointer(to: &entry.pointee.d_name) { p in
                p.withMemoryRebound(to: CChar.self, capacity: 256) { openat(parent, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK) }
            }
            guard fd >= 0 else { continue }
            guard let child = fdopendir(fd) else { close(fd); continue }
            stack.append(child)
            path.append(withUnsafeBytes(of: &entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) })
        }
        return .bytes(total)
    }
}
