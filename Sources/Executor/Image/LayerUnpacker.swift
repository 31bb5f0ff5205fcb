import CZlib
#if canImport(Glibc)
import Glibc
#endif

/// Reads a layer file, gunzipping it if it starts with the gzip magic (plain tar otherwise).
final class LayerReader {
    private let fd: Int32
    private var gzip: Bool
    private var stream = z_stream()
    private let input = UnsafeMutablePointer<UInt8>.allocate(capacity: 1 << 16)
    private var inputEnded = false
    private var ended = false
    private var closed = false

    init(path: String) throws(ImageError) {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ImageError("cannot open layer \(path): \(String(cString: strerror(errno)))") }
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

    /// Fills up to `buffer.count` bytes; 0 at the end.
    func read(_ buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
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
struct LayerUnpacker {
    let root: String
    let isRoot = geteuid() == 0

    func apply(layer path: String) throws(ImageError) {
        let reader = try LayerReader(path: path)
        defer { reader.close() }
        var tar = TarStream(reader: reader)
        var longName: String?
        var longLink: String?
        var pax: [String: String] = [:]
        while let h = try tar.nextHeader() {
            switch h.type {
            case "L": longName = String(decoding: try tar.readContent(h.size).prefix { $0 != 0 }, as: UTF8.self); continue
            case "K": longLink = String(decoding: try tar.readContent(h.size).prefix { $0 != 0 }, as: UTF8.self); continue
            case "x": pax = Self.parsePAX(try tar.readContent(h.size)); continue
            case "g": _ = try tar.readContent(h.size); continue
            default: break
            }
            var entry = h
            if let n = pax["path"] ?? longName { entry.name = n }
            if let l = pax["linkpath"] ?? longLink { entry.link = l }
            if let s = pax["size"].flatMap(Int.init) { entry.size = s }
            longName = nil; longLink = nil; pax = [:]
            try place(entry, &tar)
        }
    }

    func place(_ e: TarHeader, _ tar: inout TarStream) throws(ImageError) {
        let parts = try Self.clean(e.name)
        guard let base = parts.last else { try tar.skip(e.size); return }  // the root itself
        let parent = try resolve(Array(parts.dropLast()), create: true)
        if base.hasPrefix(".wh.") {
            try tar.skip(e.size)
            if base == ".wh..wh..opq" {
                for child in listDirectory(parent) { removeTree(parent + "/" + child) }
            } else {
                removeTree(parent + "/" + String(base.dropFirst(4)))
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
            chmod(target, mode_t(e.mode & 0o7777))
        case "0", "\0", "7":
            let fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw failure("create", e.name) }
            do { try tar.copyContent(e.size, to: fd) } catch { Glibc.close(fd); throw error }
            fchmod(fd, mode_t(e.mode & 0o7777))
            if isRoot { fchown(fd, uid_t(e.uid), gid_t(e.gid)) }
            Glibc.close(fd)
            return
        case "2":
            if symlink(e.link, target) != 0 { throw failure("create symlink", e.name) }
        case "1":
            let source = try resolve(try Self.clean(e.link), create: false)
            if link(source, target) != 0 { throw failure("create hard link to \(e.link) as", e.name) }
        case "6":
            if mkfifo(target, mode_t(e.mode & 0o777)) != 0 { throw failure("create fifo", e.name) }
        default:
            // Device nodes (runc provides /dev) and unknown types are skipped.
            try tar.skip(e.size)
            return
        }
        try tar.skip(e.size)
        if isRoot { lchown(target, uid_t(e.uid), gid_t(e.gid)) }
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
    func resolve(_ parts: [String], create: Bool) throws(ImageError) -> String {
        var resolved: [String] = []
        var pending = Array(parts.reversed())
        var hops = 0
        while let c = pending.popLast() {
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

    static func parsePAX(_ bytes: [UInt8]) -> [String: String] {
        // Records: "<len> <key>=<value>\n".
        var out: [String: String] = [:]
        var i = 0
        while i < bytes.count {
            var j = i
            while j < bytes.count && bytes[j] != 0x20 { j += 1 }
            guard let len = Int(String(decoding: bytes[i..<j], as: UTF8.self)), len > 0, i + len <= bytes.count else { break }
            let record = bytes[(j + 1)..<(i + len - 1)]
            if let eq = record.firstIndex(of: 0x3D) {
                out[String(decoding: record[record.startIndex..<eq], as: UTF8.self)] = String(decoding: record[(eq + 1)...], as: UTF8.self)
            }
            i += len
        }
        return out
    }
}

struct TarHeader {
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
        func number(_ from: Int, _ len: Int) -> Int {
            let f = field(from, len)
            if let first = f.first, first & 0x80 != 0 {
                // base-256 (GNU) for large values
                return f.dropFirst().reduce(Int(first & 0x7f)) { $0 << 8 | Int($1) }
            }
            return Int(text(from, len).trimmingSpaces, radix: 8) ?? 0
        }
        // The checksum covers the header with its own field as spaces.
        let stored = number(148, 8)
        var sum = 0
        for (i, b) in h.enumerated() { sum += (148..<156).contains(i) ? 0x20 : Int(b) }
        guard sum == stored else { throw ImageError("layer is not a valid tar archive (header checksum mismatch)") }
        var name = text(0, 100)
        let prefix = text(345, 155)
        if text(257, 5) == "ustar" && !prefix.isEmpty { name = prefix + "/" + name }
        let type = Character(Unicode.Scalar(field(156, 1).first ?? 0))
        return TarHeader(name: name, mode: number(100, 8), uid: number(108, 8), gid: number(116, 8), size: number(124, 12),
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
