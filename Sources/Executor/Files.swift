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

/// Removes a file or a directory tree; a directory still mounted is detached when it will not go.
///
/// Walked through directory descriptors with each name's own bytes (a name that is not UTF-8 is
/// removed like any other) and one descriptor at a time, going back up through `..` (a tree
/// nested far deeper than PATH_MAX still goes). Another filesystem mounted inside is detached
/// before it is entered, never emptied where it is mounted.
func removeTree(_ path: String) {
    guard !path.isEmpty, path != "/" else { return }
    var top = stat()
    guard lstat(path, &top) == 0 else { return }
    guard top.st_mode & S_IFMT == S_IFDIR else { unlink(path); return }
    func detachAndRemove(_ p: String) {
        // Still a mount point: detached, then removed as the directory below it.
        if rmdir(p) != 0 && (errno == EBUSY || errno == ENOTEMPTY), umount2(p, Int32(MNT_DETACH)) == 0 { removeTree(p) }
    }
    var cur = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard cur >= 0 else { return }
    var names: [[CChar]] = []
    // Directories that would not go (held busy, immutable): not entered again.
    var stuck: Set<[[CChar]]> = []
    func pathText(_ extra: [CChar]? = nil) -> String {
        (names + (extra.map { [$0] } ?? [])).reduce(path) { $0 + "/" + String(decoding: $1.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    }
    while true {
        var descend: [CChar]?
        let listing = openat(cur, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if listing >= 0, let d = fdopendir(listing) {
            while descend == nil, let e = readdir(d) {
                let name: [CChar] = withUnsafeBytes(of: e.pointee.d_name) { raw in raw.prefix { $0 != 0 }.map { CChar(bitPattern: $0) } }
                if name == [0x2E] || name == [0x2E, 0x2E] { continue }
                var st = stat()
                let z = name + [0]
                guard fstatat(cur, z, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                if st.st_mode & S_IFMT != S_IFDIR {
                    unlinkat(cur, z, 0)
                } else if !stuck.contains(names + [name]) {
                    if st.st_dev != top.st_dev { _ = umount2(pathText(name), Int32(MNT_DETACH)) }
                    descend = name
                }
            }
            closedir(d)
        } else if listing >= 0 {
            close(listing)
        }
        if let name = descend {
            let child = openat(cur, name + [0], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            var st = stat()
            if child >= 0, fstat(child, &st) == 0, st.st_dev == top.st_dev {
                close(cur)
                cur = child
                names.append(name)
            } else {
                if child >= 0 { close(child) }
                stuck.insert(names + [name])
            }
            continue
        }
        // Empty (or holding only what would not go): up a level, and remove it from there.
        guard let last = names.last else {
            close(cur)
            detachAndRemove(path)
            return
        }
        let parent = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        close(cur)
        guard parent >= 0 else { return }
        cur = parent
        names.removeLast()
        if unlinkat(cur, last + [0], AT_REMOVEDIR) != 0 { stuck.insert(names + [last]) }
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
