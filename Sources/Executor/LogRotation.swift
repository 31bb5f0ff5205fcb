#if canImport(Glibc)
import Glibc
#endif

/// Task output goes straight from the process to `<task>.stdout` / `<task>.stderr` (opened for
/// append, so no agent process sits in between and nothing breaks when the agent restarts).
/// When a file grows past its size its newest `maxFileSize` bytes are copied to `<name>.N` (N
/// increasing, newest highest) and it is truncated; at most `maxFiles` files are kept.
///
/// The logs directory is one the task can write to, so every file in it is opened without
/// following links, relative to a descriptor of the directory that was itself opened without
/// following one: a task that puts a link to `/etc/shadow` (or links the whole directory
/// elsewhere) gets its reads and rotations refused, never the host's file read, truncated or
/// written as root.
public enum LogRotation {
    /// Opens `name` in the directory of `path` (neither followed if a link).
    static func openNoFollow(_ path: String, _ flags: Int32, _ mode: mode_t = 0o644) -> Int32 {
        guard let slash = path.lastIndex(of: "/") else { return -1 }
        let dir = Glibc.open(String(path[..<slash]), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dir >= 0 else { return -1 }
        defer { close(dir) }
        return openat(dir, String(path[path.index(after: slash)...]), flags | O_NOFOLLOW | O_CLOEXEC, mode)
    }

    /// Opens a task's log file for appending: a regular file, never a link or a FIFO the task
    /// planted there (that is removed and the file made anew), and never blocking.
    static func openForAppend(_ path: String, _ mode: mode_t = 0o644) -> Int32 {
        guard let slash = path.lastIndex(of: "/") else { return -1 }
        let dir = Glibc.open(String(path[..<slash]), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dir >= 0 else { return -1 }
        defer { close(dir) }
        let name = String(path[path.index(after: slash)...])
        for _ in 0..<3 {
            let fd = openat(dir, name, O_WRONLY | O_CREAT | O_APPEND | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC, mode)
            if fd >= 0 {
                var st = stat()
                if fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG {
                    _ = fcntl(fd, F_SETFL, O_WRONLY | O_APPEND)
                    return fd
                }
                close(fd)
            }
            // A link, a FIFO (ENXIO with no reader), a directory: not ours to follow; replace it.
            if unlinkat(dir, name, 0) != 0 && errno != ENOENT { _ = unlinkat(dir, name, AT_REMOVEDIR) }
        }
        return -1
    }

    /// The size of a regular file at `path` (not followed if a link); nil otherwise.
    static func regularFileSize(_ path: String) -> Int? {
        let fd = openNoFollow(path, O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return nil }
        return Int(st.st_size)
    }

    /// The files of one stream, oldest first, the live file last.
    public static func files(_ live: String) -> [String] {
        rotated(live).map { "\(live).\($0)" } + [live]
    }

    public static func rotated(_ live: String) -> [Int] {
        let slash = live.lastIndex(of: "/")!
        let dir = String(live[..<slash]), base = String(live[live.index(after: slash)...]) + "."
        // Numbers a task could not have us overflow on: rotation never gets near a million.
        return listDirectory(dir).compactMap { n -> Int? in
            guard n.hasPrefix(base), n.count - base.count <= 7, let i = Int(n.dropFirst(base.count)), i > 0 else { return nil }
            return i
        }.sorted()
    }

    public static func rotateIfNeeded(_ live: String, maxBytes: Int, maxFiles: Int) {
        guard let size = regularFileSize(live), size > maxBytes else { return }
        let existing = rotated(live)
        let next = (existing.last ?? 0) + 1
        // Only the newest `maxBytes` are kept: a burst between two checks is not kept whole.
        guard copy(live, to: "\(live).\(next)", last: maxBytes) else { return }
        let fd = openNoFollow(live, O_WRONLY | O_NONBLOCK)
        guard fd >= 0 else { return }
        ftruncate(fd, 0)
        close(fd)
        let all = existing + [next]
        if all.count + 1 > maxFiles {
            for i in all.prefix(all.count + 1 - max(1, maxFiles)) { unlink("\(live).\(i)") }
        }
    }

    static func copy(_ from: String, to: String, last: Int = .max) -> Bool {
        let src = openNoFollow(from, O_RDONLY | O_NONBLOCK)
        guard src >= 0 else { return false }
        defer { close(src) }
        var st = stat()
        if fstat(src, &st) == 0, Int(st.st_size) > last { lseek(src, off_t(Int(st.st_size) - last), SEEK_SET) }
        // A new file only: a name the task made first (a link, say) is not written through.
        let dst = openNoFollow(to, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard dst >= 0 else { return false }
        defer { close(dst) }
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(src, $0.baseAddress, $0.count) }
            if n <= 0 { return n == 0 }
            var off = 0
            while off < n {
                let w = buf[off..<n].withUnsafeBytes { write(dst, $0.baseAddress, $0.count) }
                if w <= 0 { return false }
                off += w
            }
        }
    }

    /// Reads `length` bytes from `offset` across a stream's files as if they were one; a
    /// negative offset counts from the end. Returns the bytes, where they start, and the size.
    public static func read(_ files: [String], offset requested: Int, length: Int) -> (bytes: [UInt8], offset: Int, total: Int) {
        var sizes: [Int] = []
        for f in files { sizes.append(regularFileSize(f) ?? 0) }
        let total = sizes.reduce(0, +)
        let offset = requested < 0 ? max(0, total + requested) : min(requested, total)
        var out: [UInt8] = []
        var pos = 0
        for (f, size) in zip(files, sizes) {
            defer { pos += size }
            guard offset < pos + size, out.count < length else { continue }
            let start = max(0, offset - pos)
            let fd = openNoFollow(f, O_RDONLY | O_NONBLOCK)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var want = min(size - start, length - out.count)
            var buf = [UInt8](repeating: 0, count: want)
            var at = start
            while want > 0 {
                let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + (at - start), want, off_t(at)) }
                if n <= 0 { break }
                at += n
                want -= n
            }
            out += buf[0..<(at - start)]
        }
        return (out, offset, total)
    }
}
