#if canImport(Glibc)
import Glibc
#endif

// The small file-system helpers the executor uses everywhere (it links no Foundation FileManager).

/// Reads a small file (proc, sys, cgroup) in one go; nil if it cannot be read.
func readSmallFile(_ path: String, limit: Int = 1 << 20) -> String? {
    readSmallBytes(path, limit: limit).map { String(decoding: $0, as: UTF8.self) }
}

/// The same, as bytes (for files that are not text, such as /proc/PID/environ).
func readSmallBytes(_ path: String, limit: Int = 1 << 20) -> [UInt8]? {
    // Never blocks on a FIFO someone planted: regular files only.
    let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return readRegular(fd, limit: limit)
}

/// A regular file's bytes (up to `limit`) from an open descriptor; nil for anything else.
func readRegular(_ fd: Int32, limit: Int) -> [UInt8]? {
    var st = stat()
    guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return nil }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 8192)
    while out.count < limit {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; return nil }
        if n == 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return out
}

/// `mkdir -p`; 0 on success.
@discardableResult
func mkdirAll(_ path: String, mode: mode_t = 0o755) -> Int32 {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, mode) != 0 && errno != EEXIST { return -1 }
    }
    return 0
}

/// Removes a file or a directory tree; the directory itself, if still a mount point, is detached
/// (by its path, never following a link) when it will not go.
func removeTree(_ path: String) {
    guard !path.isEmpty, path != "/", let slash = path.lastIndex(of: "/") else { return }
    let parentPath = slash == path.startIndex ? "/" : String(path[..<slash])
    let parent = open(parentPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard parent >= 0 else { return }
    defer { close(parent) }
    let name = Array(String(path[path.index(after: slash)...]).utf8CString.dropLast())
    if !removeEntry(parent, name) && errno == EBUSY, umount2(path, Int32(MNT_DETACH) | 8 /* UMOUNT_NOFOLLOW */) == 0 {
        _ = removeEntry(parent, name)
    }
}

/// Removes the entry `name` of the directory open as `parent`: a file, or a directory tree.
///
/// Walked through descriptors, each name by its own bytes (a name that is not UTF-8 goes like any
/// other), one directory open at a time, climbing back through `..` — a tree nested far deeper
/// than PATH_MAX still goes. Every climb must land on the directory the walk came down from
/// (device and inode recorded on the way down): a directory a process moved meanwhile ends the
/// walk there, so nothing outside the tree is ever reached. A directory on another filesystem (a
/// mount, a btrfs subvolume) is neither entered nor unmounted; it and what holds it are left.
/// False when something was left.
@discardableResult
func removeEntry(_ parent: Int32, _ name: [CChar]) -> Bool {
    // One name of an entry: never ".", "..", empty or a path.
    guard !name.isEmpty, name != [0x2E], name != [0x2E, 0x2E], !name.contains(0x2F), !name.contains(0) else { return false }
    var st = stat()
    guard fstatat(parent, name + [0], &st, AT_SYMLINK_NOFOLLOW) == 0 else { return errno == ENOENT }
    guard st.st_mode & S_IFMT == S_IFDIR else { return unlinkat(parent, name + [0], 0) == 0 || errno == ENOENT }
    var top = stat()
    guard fstat(parent, &top) == 0, st.st_dev == top.st_dev else { return false }
    let device = st.st_dev
    var cur = openat(parent, name + [0], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard cur >= 0 else { return false }
    var opened = stat()
    guard fstat(cur, &opened) == 0, opened.st_dev == device, opened.st_ino == st.st_ino else { close(cur); return false }
    // The directories walked into, top first: each one's name and (inode) — and the top's parent;
    // per level, the names there that would not go (not entered again).
    var names: [[CChar]] = []
    var inodes: [UInt64] = [UInt64(top.st_ino), UInt64(st.st_ino)]
    var stuckAt: [Set<[CChar]>] = [[]]
    var complete = true
    while true {
        var descend: (name: [CChar], inode: UInt64)?
        let listing = openat(cur, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if listing >= 0, let d = fdopendir(listing) {
            while descend == nil, let e = readdir(d) {
                let entry: [CChar] = withUnsafeBytes(of: e.pointee.d_name) { raw in raw.prefix { $0 != 0 }.map { CChar(bitPattern: $0) } }
                if entry == [0x2E] || entry == [0x2E, 0x2E] { continue }
                var es = stat()
                guard fstatat(cur, entry + [0], &es, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                if es.st_mode & S_IFMT != S_IFDIR {
                    if unlinkat(cur, entry + [0], 0) != 0 { complete = false }
                } else if es.st_dev != device {
                    complete = false
                } else if !stuckAt[stuckAt.count - 1].contains(entry) {
                    descend = (entry, UInt64(es.st_ino))
                }
            }
            closedir(d)
        } else {
            if listing >= 0 { close(listing) }
            complete = false
        }
        if let (entry, inode) = descend {
            let child = openat(cur, entry + [0], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            var cs = stat()
            if child >= 0, fstat(child, &cs) == 0, cs.st_dev == device, UInt64(cs.st_ino) == inode {
                close(cur)
                cur = child
                names.append(entry)
                inodes.append(inode)
                stuckAt.append([])
            } else {
                if child >= 0 { close(child) }
                stuckAt[stuckAt.count - 1].insert(entry)
            }
            continue
        }
        // Empty (or holding only what would not go): up a level, and remove it from there.
        let up = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        close(cur)
        var us = stat()
        let expected = inodes[inodes.count - 2]
        guard up >= 0, fstat(up, &us) == 0, us.st_dev == device, UInt64(us.st_ino) == expected else {
            // Moved while being removed: stop here rather than climb somewhere else.
            if up >= 0 { close(up) }
            return false
        }
        guard let last = names.popLast() else {
            close(up)
            return unlinkat(parent, name + [0], AT_REMOVEDIR) == 0 && complete
        }
        inodes.removeLast()
        stuckAt.removeLast()
        cur = up
        if unlinkat(cur, last + [0], AT_REMOVEDIR) != 0 {
            stuckAt[stuckAt.count - 1].insert(last)
            complete = false
        }
    }
}

/// The names in a directory (without `.` and `..`); empty if it cannot be read.
func listDirectory(_ path: String) -> [String] {
    guard let d = opendir(path) else { return [] }
    defer { closedir(d) }
    var out: [String] = []
    while let e = readdir(d) {
        let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if n != "." && n != ".." { out.append(n) }
    }
    return out
}

/// A file under `root` (a task's or an image's root), every component opened without following
/// links, so an absolute link inside the root never reaches the host's files; regular files
/// only, never blocking. Nil when it is missing or is anything else.
func readFileInRoot(_ root: String, _ relative: String, limit: Int = 1 << 20) -> String? {
    var fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    let parts = relative.split(separator: "/")
    for (i, part) in parts.enumerated() {
        guard part != "..", part != "." else { close(fd); return nil }
        let last = i == parts.count - 1
        let next = openat(fd, String(part), (last ? O_RDONLY | O_NONBLOCK : O_RDONLY | O_DIRECTORY) | O_NOFOLLOW | O_CLOEXEC)
        close(fd)
        guard next >= 0 else { return nil }
        fd = next
    }
    defer { close(fd) }
    return readRegular(fd, limit: limit).map { String(decoding: $0, as: UTF8.self) }
}

/// Writes a file atomically (temporary file, fsync, rename), readable by its owner only unless
/// `mode` says otherwise (state files and bundles hold a job's environment and credentials).
func writeFile(_ path: String, _ text: String, mode: mode_t = 0o600) throws(DriverError) {
    let tmp = path + ".tmp"
    unlink(tmp)
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
    guard fd >= 0 else { throw DriverError("cannot write \(path): \(String(cString: strerror(errno)))") }
    let bytes = Array(text.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; close(fd); throw DriverError("cannot write \(path): \(String(cString: strerror(errno)))") }
        off += n
    }
    fsync(fd)
    close(fd)
    guard rename(tmp, path) == 0 else { throw DriverError("cannot write \(path): \(String(cString: strerror(errno)))") }
    // The rename is durable only once the directory is.
    let slash = path.lastIndex(of: "/")
    let dir = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd >= 0 { fsync(dfd); close(dfd) }
}
