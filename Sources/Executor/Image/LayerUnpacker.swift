import CZlib
#if canImport(Glibc)
import Glibc
#endif

/// Reads a layer file, gunzipping it if it starts with the gzip magic (plain tar otherwise).
final class LayerReader {
    private let fd: Int32
    private var gzip: Bool
    /// The most bytes the layer may expand to (see `ImageLimits.maxExpandedBytes`).
    let expansionLimit: Int
    /// Bytes handed out so far (the tar stream, after gunzip).
    private(set) var produced = 0
    private var stream = z_stream()
    private let input = UnsafeMutablePointer<UInt8>.allocate(capacity: 1 << 16)
    private var inputEnded = false
    private var ended = false
    private var closed = false

    init(path: String, limits: ImageLimits = .standard) throws(ImageError) {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ImageError("cannot open layer \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        let compressed = fstat(fd, &st) == 0 ? Int(st.st_size) : 0
        expansionLimit = limits.maxExpandedBytes(compressed: compressed)
        var magic = [UInt8](repeating: 0, count: 2)
        let n = pread(fd, &magic, 2, 0)
        gzip = n == 2 && magic == [0x1f, 0x8b]
        if gzip {
            // 16 + 15 window bits: a gzip wrapper.
            let rc = inflateInit2_(&stream, 16 + 15, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
            guard rc == Z_OK else { Glibc.close(fd); input.deallocate(); throw ImageError("cannot start gunzip (zlib error \(rc))") }
        }
    }

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        if gzip { inflateEnd(&stream) }
        Glibc.close(fd)
        input.deallocate()
    }

    /// Fills up to `buffer.count` bytes; 0 at the end. Refuses a layer that expands beyond its
    /// limit (a gzip bomb) as soon as it does.
    func read(_ buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        let n = try readRaw(buffer)
        produced += n
        if produced > expansionLimit {
            throw ImageError("layer expands to more than \(expansionLimit) bytes (the limit for its compressed size); refusing the image")
        }
        return n
    }

    private func readRaw(_ buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        guard gzip else {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n < 0 { throw ImageError("cannot read layer: \(String(cString: strerror(errno)))") }
            return n
        }
        if ended { return 0 }
        stream.next_out = buffer.baseAddress!.assumingMemoryBound(to: Bytef.self)
        stream.avail_out = uInt(buffer.count)
        while stream.avail_out > 0 {
            if stream.avail_in == 0 && !inputEnded {
                let n = Glibc.read(fd, input, 1 << 16)
                if n < 0 { throw ImageError("cannot read layer: \(String(cString: strerror(errno)))") }
                if n == 0 { inputEnded = true } else {
                    stream.next_in = input
                    stream.avail_in = uInt(n)
                }
            }
            let before = stream.avail_out
            let rc = inflate(&stream, Z_NO_FLUSH)
            if rc == Z_STREAM_END {
                // Concatenated gzip members continue the stream; the end of the file ends it.
                if stream.avail_in == 0 && !inputEnded {
                    let n = Glibc.read(fd, input, 1 << 16)
                    if n > 0 { stream.next_in = input; stream.avail_in = uInt(n) } else { inputEnded = true }
                }
                if stream.avail_in > 0 { inflateReset(&stream); continue }
                ended = true
                break
            }
            if rc == Z_BUF_ERROR && inputEnded && stream.avail_in == 0 {
                throw ImageError("layer is truncated (gzip stream ends early)")
            }
            if rc != Z_OK && rc != Z_BUF_ERROR { throw ImageError("layer is not valid gzip (zlib error \(rc))") }
            if before == stream.avail_out && inputEnded && stream.avail_in == 0 { break }
        }
        return buffer.count - Int(stream.avail_out)
    }
}

/// Applies OCI image layers (tar, optionally gzipped) onto a root directory: whiteouts remove
/// what lower layers put there (`.wh.NAME`, and `.wh..wh..opq` for a whole directory), and no
/// entry may reach outside the root — neither by `..` in its name nor through a symlink an
/// earlier entry planted (symlinks are resolved inside the root, as in a chroot).
///
/// Everything in a layer is untrusted: numbers are read with checked arithmetic and bounded,
/// malformed records and whiteouts are refused (the image fails to unpack, the agent carries
/// on), and a layer may hold at most `limits.maxEntries` entries and expand to at most
/// `limits.maxExpandedBytes(compressed:)` bytes.
struct LayerUnpacker {
    let root: String
    var limits: ImageLimits = .standard
    let isRoot = geteuid() == 0

    init(root: String, limits: ImageLimits = .standard) {
        self.root = root
        self.limits = limits
    }

    /// The longest entry name or link target (Linux's PATH_MAX).
    static let maxPathBytes = 4096
    /// Path components and symlink steps one lookup may take (a chain of links full of `a/../`
    /// would otherwise cost a long time per entry).
    static let maxResolveSteps = 4096

    /// Lookup steps one layer may take in all (see `maxResolveSteps`).
    static let maxLayerResolveSteps = 16_000_000

    /// Counts the lookup steps a layer takes.
    final class StepBudget {
        var remaining = LayerUnpacker.maxLayerResolveSteps
    }

    func apply(layer path: String) throws(ImageError) {
        // The root must be the directory itself, never a link planted in its place.
        var rootStat = stat()
        guard lstat(root, &rootStat) == 0, (rootStat.st_mode & S_IFMT) == S_IFDIR else {
            throw ImageError("the image root \(root) is not a directory")
        }
        let budget = StepBudget()
        let reader = try LayerReader(path: path, limits: limits)
        defer { reader.close() }
        var tar = TarStream(reader: reader)
        var longName: String?
        var longLink: String?
        var pax: [String: String] = [:]
        var entries = 0
        while let h = try tar.nextHeader() {
            entries += 1
            if entries > limits.maxEntries {
                throw ImageError("layer has more than \(limits.maxEntries) entries; refusing the image")
            }
            switch h.type {
            case "L": longName = String(decoding: try tar.readContent(h.size).prefix { $0 != 0 }, as: UTF8.self); continue
            case "K": longLink = String(decoding: try tar.readContent(h.size).prefix { $0 != 0 }, as: UTF8.self); continue
            case "x": pax = try Self.parsePAX(try tar.readContent(h.size)); continue
            case "g": _ = try tar.readContent(h.size); continue
            default: break
            }
            var entry = h
            if let n = pax["path"] ?? longName { entry.name = n }
            if let l = pax["linkpath"] ?? longLink { entry.link = l }
            // A NUL would cut the name short in every system call (`..\0` is `..` to the kernel,
            // not to a string comparison); a name past PATH_MAX cannot be a real file.
            for (what, text) in [("name", entry.name), ("link target", entry.link)] {
                guard !text.utf8.contains(0) else { throw ImageError("layer entry \(what) contains a NUL byte; refusing the image") }
                guard text.utf8.count <= Self.maxPathBytes else {
                    throw ImageError("layer entry \(what) is longer than \(Self.maxPathBytes) bytes; refusing the image")
                }
            }
            if let s = pax["size"] { entry.size = try TarHeader.number(s, "size", max: TarHeader.maxSize) }
            if let u = pax["uid"] { entry.uid = try TarHeader.number(u, "uid", max: TarHeader.maxID) }
            if let g = pax["gid"] { entry.gid = try TarHeader.number(g, "gid", max: TarHeader.maxID) }
            longName = nil; longLink = nil; pax = [:]
            try place(entry, &tar, budget)
        }
    }

    func place(_ e: TarHeader, _ tar: inout TarStream, _ budget: StepBudget = StepBudget()) throws(ImageError) {
        let parts = try Self.clean(e.name)
        guard let base = parts.last else { try tar.skip(e.size); return }  // the root itself
        let parent = try resolve(Array(parts.dropLast()), create: true, budget)
        if base.hasPrefix(".wh.") {
            try tar.skip(e.size)
            if base == ".wh..wh..opq" {
                for child in listDirectory(parent) { removeTree(parent + "/" + child) }
            } else if base.hasPrefix(".wh..wh.") {
                // Other whiteout metadata (aufs hard-link records): nothing to apply.
            } else {
                let hidden = String(base.dropFirst(4))
                // `.wh..` or `.wh...` would remove the directory itself or its parent.
                guard hidden != ".", hidden != "..", !hidden.isEmpty else {
                    throw ImageError("layer entry \(e.name) is not a valid whiteout; refusing the image")
                }
                removeTree(parent + "/" + hidden)
            }
            return
        }
        let target = parent + "/" + base
        var st = stat()
        let exists = lstat(target, &st) == 0
        let existingIsDir = exists && (st.st_mode & S_IFMT) == S_IFDIR
        if exists && !(e.type == "5" && existingIsDir) { removeTree(target) }
        switch e.type {
        case "5":
            if !existingIsDir && mkdir(target, 0o755) != 0 { throw failure("create directory", e.name) }
            if isRoot { lchown(target, uid_t(truncatingIfNeeded: e.uid), gid_t(truncatingIfNeeded: e.gid)) }
            chmod(target, mode_t(e.mode & 0o7777))
            try tar.skip(e.size)
            return
        case "0", "\0", "7":
            let fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw failure("create", e.name) }
            do { try tar.copyContent(e.size, to: fd) } catch { Glibc.close(fd); throw error }
            // Owner first: chown clears set-user-ID and set-group-ID bits, chmod then sets them.
            if isRoot { fchown(fd, uid_t(truncatingIfNeeded: e.uid), gid_t(truncatingIfNeeded: e.gid)) }
            fchmod(fd, mode_t(e.mode & 0o7777))
            Glibc.close(fd)
            return
        case "2":
            if symlink(e.link, target) != 0 { throw failure("create symlink", e.name) }
        case "1":
            let source = try resolve(try Self.clean(e.link), create: false, budget)
            if link(source, target) != 0 { throw failure("create hard link to \(e.link) as", e.name) }
        case "6":
            if mkfifo(target, mode_t(e.mode & 0o777)) != 0 { throw failure("create fifo", e.name) }
        default:
            // Device nodes (runc provides /dev) and unknown types are skipped.
            try tar.skip(e.size)
            return
        }
        try tar.skip(e.size)
        if isRoot { lchown(target, uid_t(truncatingIfNeeded: e.uid), gid_t(truncatingIfNeeded: e.gid)) }
    }

    func failure(_ what: String, _ name: String) -> ImageError {
        ImageError("cannot \(what) \(name) in the image: \(String(cString: strerror(errno)))")
    }

    /// The components of an entry name; `..` anywhere is refused.
    static func clean(_ name: String) throws(ImageError) -> [String] {
        var out: [String] = []
        for p in name.split(separator: "/") where p != "." && !p.isEmpty {
            if p == ".." { throw ImageError("layer entry \(name) escapes the image root (\"..\" in its path); refusing the image") }
            out.append(String(p))
        }
        return out
    }

    /// The host path of a directory inside the root, following symlinks as if the root were `/`
    /// (an absolute link restarts at the root, `..` stops at it). Missing directories are created.
    func resolve(_ parts: [String], create: Bool, _ budget: StepBudget = StepBudget()) throws(ImageError) -> String {
        var resolved: [String] = []
        var pending = Array(parts.reversed())
        var hops = 0
        var steps = 0
        while let c = pending.popLast() {
            steps += 1
            budget.remaining -= 1
            if budget.remaining < 0 {
                throw ImageError("the layer's paths take more than \(Self.maxLayerResolveSteps) lookup steps in all; refusing the image")
            }
            if steps > Self.maxResolveSteps {
                throw ImageError("resolving \(parts.prefix(8).joined(separator: "/"))… in the image takes more than \(Self.maxResolveSteps) steps; refusing the image")
            }
            if c == "." || c.isEmpty { continue }
            if c == ".." { _ = resolved.popLast(); continue }
            let path = root + "/" + (resolved + [c]).joined(separator: "/")
            var st = stat()
            if lstat(path, &st) != 0 {
                if !create || pending.isEmpty && !create { resolved.append(c); continue }
                if mkdir(path, 0o755) != 0 && errno != EEXIST { throw failure("create directory", path) }
                resolved.append(c)
                continue
            }
            if (st.st_mode & S_IFMT) == S_IFLNK {
                hops += 1
                if hops > 40 { throw ImageError("too many symlinks under \(parts.joined(separator: "/")) in the image") }
                var buf = [CChar](repeating: 0, count: 4096)
                let n = readlink(path, &buf, buf.count - 1)
                guard n > 0 else { throw failure("read symlink", path) }
                let target = String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.hasPrefix("/") { resolved = [] }
                pending.append(contentsOf: target.split(separator: "/").map(String.init).reversed())
                continue
            }
            resolved.append(c)
        }
        return resolved.isEmpty ? root : root + "/" + resolved.joined(separator: "/")
    }

    /// PAX extended header records, `"<len> <key>=<value>\n"` each; a malformed one refuses the layer.
    static func parsePAX(_ bytes: [UInt8]) throws(ImageError) -> [String: String] {
        let bad = ImageError("layer has a malformed PAX header record; refusing the image")
        var out: [String: String] = [:]
        var i = 0
        while i < bytes.count {
            var j = i
            while j < bytes.count && j - i < 20 && bytes[j] >= 0x30 && bytes[j] <= 0x39 { j += 1 }
            // A length, a space, at least "k=" and the newline; within what is left.
            guard j > i, j < bytes.count, bytes[j] == 0x20,
                  let len = Int(String(decoding: bytes[i..<j], as: UTF8.self)),
                  len >= j - i + 4, len <= bytes.count - i, bytes[i + len - 1] == 0x0A else { throw bad }
            let record = bytes[(j + 1)..<(i + len - 1)]
            guard let eq = record.firstIndex(of: 0x3D), eq > record.startIndex else { throw bad }
            out[String(decoding: record[record.startIndex..<eq], as: UTF8.self)] = String(decoding: record[(eq + 1)...], as: UTF8.self)
            i += len
        }
        return out
    }
}

struct TarHeader {
    /// The largest entry size accepted (1 TiB; the expansion limit stops far sooner).
    static let maxSize = 1 << 40
    /// The largest uid or gid (`UInt32.max` itself means "no change" to chown).
    static let maxID = Int(UInt32.max) - 1

    /// A decimal number from a PAX record, within 0...max.
    static func number(_ text: String, _ field: String, max: Int) throws(ImageError) -> Int {
        guard let v = Int(text), v >= 0, v <= max else {
            throw ImageError("layer has an invalid PAX \(field) \(text.prefix(40)); refusing the image")
        }
        return v
    }

    var name: String
    var mode: Int
    var uid: Int
    var gid: Int
    var size: Int
    var type: Character
    var link: String
}

/// Sequential reading of tar records over a layer.
struct TarStream {
    let reader: LayerReader
    var buffer: [UInt8] = []
    var start = 0

    init(reader: LayerReader) { self.reader = reader }

    mutating func fill(_ n: Int) throws(ImageError) -> Bool {
        if start > 0 && start >= buffer.count / 2 { buffer.removeFirst(start); start = 0 }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 8)
        defer { chunk.deallocate() }
        while buffer.count - start < n {
            let got = try reader.read(chunk)
            if got == 0 { return false }
            buffer.append(contentsOf: chunk[0..<got])
        }
        return true
    }

    mutating func take(_ n: Int) throws(ImageError) -> ArraySlice<UInt8> {
        guard try fill(n) else { throw ImageError("layer ends in the middle of an entry (truncated tar)") }
        defer { start += n }
        return buffer[start..<(start + n)]
    }

    mutating func nextHeader() throws(ImageError) -> TarHeader? {
        guard try fill(512) else { return nil }
        let h = try take(512)
        if h.allSatisfy({ $0 == 0 }) { return nil }
        func field(_ from: Int, _ len: Int) -> ArraySlice<UInt8> { h[(h.startIndex + from)..<(h.startIndex + from + len)] }
        func text(_ from: Int, _ len: Int) -> String { String(decoding: field(from, len).prefix { $0 != 0 }, as: UTF8.self) }
        /// An octal field (NUL/space padded), or GNU base-256 when the high bit is set;
        /// negative, overflowing or non-octal values refuse the layer.
        func number(_ from: Int, _ len: Int, _ what: String, max: Int) throws(ImageError) -> Int {
            let f = field(from, len)
            let invalid = ImageError("layer has an invalid tar \(what) field; refusing the image")
            var value = 0
            if let first = f.first, first & 0x80 != 0 {
                guard first & 0x40 == 0 else { throw invalid }  // negative
                value = Int(first & 0x3f)
                for b in f.dropFirst() {
                    let (shifted, o1) = value.multipliedReportingOverflow(by: 256)
                    guard !o1 else { throw invalid }
                    value = shifted | Int(b)
                    guard value <= max else { throw invalid }
                }
                return value
            }
            let digits = text(from, len).trimmingSpaces
            for c in digits.utf8 {
                guard c >= 0x30 && c <= 0x37 else { throw invalid }
                let (shifted, o1) = value.multipliedReportingOverflow(by: 8)
                guard !o1 else { throw invalid }
                value = shifted + Int(c - 0x30)
                guard value <= max else { throw invalid }
            }
            return value
        }
        // The checksum covers the header with its own field as spaces.
        let stored = try number(148, 8, "checksum", max: 1 << 20)
        var sum = 0
        for (i, b) in h.enumerated() { sum += (148..<156).contains(i) ? 0x20 : Int(b) }
        guard sum == stored else { throw ImageError("layer is not a valid tar archive (header checksum mismatch)") }
        var name = text(0, 100)
        let prefix = text(345, 155)
        if text(257, 5) == "ustar" && !prefix.isEmpty { name = prefix + "/" + name }
        let type = Character(Unicode.Scalar(field(156, 1).first ?? 0))
        return TarHeader(name: name, mode: try number(100, 8, "mode", max: 0o7777777), uid: try number(108, 8, "uid", max: TarHeader.maxID),
                         gid: try number(116, 8, "gid", max: TarHeader.maxID), size: try number(124, 12, "size", max: TarHeader.maxSize),
                         type: type, link: text(157, 100))
    }

    static func padded(_ n: Int) -> Int { (n + 511) / 512 * 512 }

    mutating func readContent(_ size: Int) throws(ImageError) -> [UInt8] {
        guard size <= 1 << 20 else { throw ImageError("tar metadata entry of \(size) bytes is too large") }
        let data = Array(try take(size))
        _ = try take(Self.padded(size) - size)
        return data
    }

    mutating func copyContent(_ size: Int, to fd: Int32) throws(ImageError) {
        var left = size
        while left > 0 {
            let n = min(left, 1 << 16)
            let part = try take(n)
            var off = 0
            while off < part.count {
                let w = part.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
                if w < 0 { if errno == EINTR { continue }; throw ImageError("cannot write image file: \(String(cString: strerror(errno)))") }
                off += w
            }
            left -= n
        }
        _ = try take(Self.padded(size) - size)
    }

    mutating func skip(_ size: Int) throws(ImageError) {
        var left = Self.padded(size)
        while left > 0 {
            let n = min(left, 1 << 16)
            _ = try take(n)
            left -= n
        }
    }
}

extension String {
    var trimmingSpaces: String { String(drop { $0 == " " }.prefix { $0 != " " }) }
}
