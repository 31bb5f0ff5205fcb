#if canImport(Glibc)
import Glibc
#endif

/// Task output goes straight from the process to `<task>.stdout` / `<task>.stderr` (opened for
/// append, so no agent process sits in between and nothing breaks when the agent restarts).
/// When a file grows past its size it is copied to `<name>.N` (N increasing, newest highest) and
/// truncated; at most `maxFiles` files are kept.
public enum LogRotation {
    /// The files of one stream, oldest first, the live file last.
    public static func files(_ live: String) -> [String] {
        rotated(live).map { "\(live).\($0)" } + [live]
    }

    static func rotated(_ live: String) -> [Int] {
        let slash = live.lastIndex(of: "/")!
        let dir = String(live[..<slash]), base = String(live[live.index(after: slash)...]) + "."
        return listDirectory(dir).compactMap { $0.hasPrefix(base) ? Int($0.dropFirst(base.count)) : nil }.sorted()
    }

    public static func rotateIfNeeded(_ live: String, maxBytes: Int, maxFiles: Int) {
        var st = stat()
        guard stat(live, &st) == 0, Int(st.st_size) > maxBytes else { return }
        let existing = rotated(live)
        let next = (existing.last ?? 0) + 1
        guard copy(live, to: "\(live).\(next)") else { return }
        truncate(live, 0)
        let all = existing + [next]
        if all.count + 1 > maxFiles {
            for i in all.prefix(all.count + 1 - max(1, maxFiles)) { unlink("\(live).\(i)") }
        }
    }

    static func copy(_ from: String, to: String) -> Bool {
        let src = open(from, O_RDONLY | O_CLOEXEC)
        guard src >= 0 else { return false }
        defer { close(src) }
        let dst = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
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
        for f in files {
            var st = stat()
            sizes.append(stat(f, &st) == 0 ? Int(st.st_size) : 0)
        }
        let total = sizes.reduce(0, +)
        let offset = requested < 0 ? max(0, total + requested) : min(requested, total)
        var out: [UInt8] = []
        var pos = 0
        for (f, size) in zip(files, sizes) {
            defer { pos += size }
            guard offset < pos + size, out.count < length else { continue }
            let start = max(0, offset - pos)
            let fd = open(f, O_RDONLY | O_CLOEXEC)
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
