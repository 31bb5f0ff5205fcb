import Primitives
import Raft
#if canImport(Glibc)
import Glibc
#endif

/// The Raft log on disk: numbered segment files of checksummed records, plus snapshot files.
///
/// A record is `length (u32 LE) | crc32c (u32 LE) | type (u8) | payload`; the CRC covers type and
/// payload. Types: an entry, the hard state, or a reset to a snapshot (everything before it is
/// gone). One ``save(_:)`` is one `write` and at most one `fsync`, however many entries the
/// Ready carried: that is the group commit. On open, a torn or corrupt record at the end of the
/// newest segment is cut off (it was never acknowledged: acknowledgements wait for the fsync);
/// corruption anywhere else stops the agent, because acknowledged data would be lost.
///
/// Each new segment is allocated to its full size up front (zeros), and records are written at
/// their offset: an fsync then has no file size to journal, which makes it cheaper (about 30 % on
/// ext4 with three logs on one disk). Zeros from a record's start to the end of a segment are
/// the unused rest of it, not damage; a segment closed early is cut to what it holds.
public final class WriteAheadLog: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// What was on disk when the log was opened.
    public struct Recovered: Sendable {
        public var hardState: HardState
        public var snapshot: Snapshot?
        public var entries: [Entry]
        /// Human-readable notes about repairs (a torn tail cut off), for the agent's log.
        public var repairs: [String]
        public var isEmpty: Bool { hardState == HardState() && snapshot == nil && entries.isEmpty }
    }

    private enum RecordType: UInt8 { case entry = 1, hardState = 2, reset = 3 }

    public let directory: String
    public let segmentBytes: Int
    private var segments: [(seq: UInt64, firstIndex: LogIndex, path: String)] = []
    private var fd: Int32 = -1
    private var segmentSize = 0
    private var lastHardState = HardState()
    private var lastIndex: LogIndex = 0
    /// Bytes written and fsyncs done, for the benchmark's entries-per-fsync figure.
    public private(set) var fsyncs = 0
    public private(set) var entriesWritten = 0

    public init(directory: String, segmentBytes: Int = 64 << 20) {
        self.directory = directory
        self.segmentBytes = segmentBytes
    }

    deinit { if fd >= 0 { close(fd) } }

    private var walDir: String { directory + "/wal" }
    private var snapDir: String { directory + "/snapshots" }

    // MARK: - Open and recover

    /// Reads everything back, repairing a torn tail, and opens the newest segment for appending.
    public func open() throws(Failure) -> Recovered {
        try Self.makeDirectory(directory)
        try Self.makeDirectory(walDir)
        try Self.makeDirectory(snapDir)
        var repairs: [String] = []
        let snapshot = try loadNewestSnapshot(&repairs)
        var entries: [Entry] = []
        var base = snapshot?.metadata.index ?? 0
        var hs = HardState()

        let names = Self.list(walDir).filter { $0.hasSuffix(".wal") }.sorted()
        segments = names.compactMap { name in
            let parts = name.dropLast(4).split(separator: "-")
            guard parts.count == 2, let seq = UInt64(parts[0]), let first = UInt64(parts[1]) else { return nil }
            return (seq, first, walDir + "/" + name)
        }
        var lastEnd: Int?
        for (n, seg) in segments.enumerated() {
            let bytes = try Self.read(seg.path)
            // Where the zeros that end the segment begin: its preallocated, unwritten rest.
            let tail = Self.zeroTail(bytes, after: 0)
            var off = 0
            defer { if n == segments.count - 1 { lastEnd = off } }
            while off < bytes.count {
                if off >= tail { break }
                guard let (type, payload, next) = Self.record(in: bytes, at: off) else {
                    let isLast = n == segments.count - 1
                    guard isLast else {
                        throw Failure(description: "corrupt record in \(seg.path) at byte \(off) (not the last segment): the Raft log is damaged; restore the data dir from a backup or remove it to rejoin as a new member")
                    }
                    // Only what a crash mid-write leaves may be cut (never acknowledged). A bad
                    // record with valid records after it is damage to fsync'd, acknowledged data:
                    // cutting there would drop later entries and the term and vote saved after.
                    guard Self.isTornWrite(bytes, at: off, tail: tail) else {
                        throw Failure(description: "corrupt record in \(seg.path) at byte \(off), with \(tail - off) written bytes after it: acknowledged entries would be lost by cutting it; see Docs/operations.md (a member that will not start)")
                    }
                    repairs.append("cut a torn or corrupt tail of \(bytes.count - off) bytes off \(seg.path) at byte \(off)")
                    try Self.truncate(seg.path, to: off)
                    break
                }
                var r = ByteReader(Array(payload))
                switch type {
                case .entry:
                    guard let e = RaftCodec.decodeEntry(&r) else { throw Failure(description: "undecodable entry in \(seg.path) at byte \(off)") }
                    if e.index <= base { break }
                    if let last = entries.last, e.index > last.index + 1 {
                        throw Failure(description: "gap in the Raft log before index \(e.index) (after \(last.index)) in \(seg.path) at byte \(off)")
                    }
                    if let first = entries.first, e.index >= first.index {
                        entries.removeLast(entries.count - Int(e.index - first.index))
                    }
                    if let last = entries.last, e.index != last.index + 1 {
                        throw Failure(description: "gap in the Raft log at index \(e.index) in \(seg.path)")
                    } else if entries.isEmpty, e.index != base + 1 {
                        // Entries before a snapshot's index were compacted; start where it ends.
                        if e.index > base + 1 { throw Failure(description: "the Raft log starts at \(e.index) but the snapshot ends at \(base)") }
                    }
                    entries.append(e)
                case .hardState:
                    guard let h = RaftCodec.decodeHardState(Array(payload)) else { throw Failure(description: "undecodable hard state in \(seg.path)") }
                    hs = h
                case .reset:
                    guard let idx = r.varint() else { throw Failure(description: "undecodable reset in \(seg.path)") }
                    entries.removeAll()
                    base = idx
                }
                off = next
            }
        }
        if let snap = snapshot {
            entries.removeAll { $0.index <= snap.metadata.index }
            if let first = entries.first, first.index != snap.metadata.index + 1 { entries.removeAll() }
        }
        lastHardState = hs
        lastIndex = entries.last?.index ?? snapshot?.metadata.index ?? 0
        if let last = segments.last {
            try openForAppend(last.path, end: lastEnd)
        } else {
            try startSegment(firstIndex: lastIndex + 1)
        }
        return Recovered(hardState: hs, snapshot: snapshot, entries: entries, repairs: repairs)
    }

    /// Where the run of zeros that ends `bytes` begins (not before `after`); compared a block at
    /// a time, since a preallocated segment is megabytes of them.
    static func zeroTail(_ bytes: [UInt8], after: Int) -> Int {
        bytes.withUnsafeBytes { b in
            var end = b.count
            let block = zeroBlock.count
            while end - block >= after,
                  zeroBlock.withUnsafeBytes({ memcmp(b.baseAddress! + end - block, $0.baseAddress!, block) }) == 0 {
                end -= block
            }
            while end > after, b[end - 1] == 0 { end -= 1 }
            return end
        }
    }

    private static let zeroBlock = [UInt8](repeating: 0, count: 1 << 16)

    /// Whether the bad record at `off` is what an interrupted write leaves, and so may be cut:
    /// its header runs past the end of the file; or a sector's worth of zeros (512 bytes) starts
    /// within it or just after it — pages of the last, unsynced write that never reached the disk
    /// (they may land out of order); or no chain of valid records from any later offset runs on
    /// to the end of the file (or to the zeros that end a preallocated segment, which begin at
    /// `tail`). Otherwise it is damage to data written before, with acknowledged records after
    /// it, and must not be cut.
    static func isTornWrite(_ bytes: [UInt8], at off: Int, tail: Int) -> Bool {
        guard off + 8 <= bytes.count else { return true }
        func u32(_ i: Int) -> Int { Int(bytes[i]) | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2]) << 16 | Int(bytes[i + 3]) << 24 }
        let claimed = min(bytes.count, off + 8 + u32(off))
        // The rest of a sector that never reached the disk: zeros from the record's start to a
        // 512-byte boundary, with what the same write put after it.
        var z = off
        while z < tail, bytes[z] == 0 { z += 1 }
        if z > off, z < tail, z % 512 == 0 { return true }
        // The zeros that end a preallocated segment are not a hole in a write: only runs with
        // something written after them count.
        var zeros = 0
        for i in off..<min(tail, claimed + 4096) {
            zeros = bytes[i] == 0 ? zeros + 1 : 0
            if zeros >= 512 { return true }
        }
        // Valid records after it, one after another to the end of the file: acknowledged data.
        var hashed = 0
        var dead = Set<Int>()  // record starts whose chain breaks before the end: walked once
        var k = off + 1
        // No record starts in the zeros at the end.
        while k + 9 <= bytes.count, k < tail, hashed < 256 << 20 {
            let l = u32(k)
            if l >= 2, k + 8 + l <= bytes.count, RecordType(rawValue: bytes[k + 8]) != nil, !dead.contains(k) {
                var at = k
                var walked: [Int] = []
                while !dead.contains(at), let (_, _, next) = record(in: bytes, at: at) {
                    hashed += next - at
                    // To the end of the file, or of what was written (the zeros of a
                    // preallocated segment follow).
                    if next >= tail { return false }
                    walked.append(at)
                    at = next
                }
                dead.insert(k)
                dead.formUnion(walked)
            }
            k += 1
        }
        return true
    }

    /// Parses one record; nil if it is torn (runs past the end) or fails its checksum.
    private static func record(in bytes: [UInt8], at off: Int) -> (RecordType, ArraySlice<UInt8>, Int)? {
        guard off + 9 <= bytes.count else { return nil }
        var r = ByteReader(Array(bytes[off..<off + 8]))
        guard let len = r.uint32(), let crc = r.uint32(), len >= 1, off + 8 + Int(len) <= bytes.count else { return nil }
        let body = bytes[(off + 8)..<(off + 8 + Int(len))]
        guard CRC32C.checksum(body) == crc, let type = RecordType(rawValue: body.first!) else { return nil }
        return (type, body.dropFirst(), off + 8 + Int(len))
    }

    // MARK: - Write

    /// Persists a Ready: entries and hard state in one write, fsync'd when `sync`. When the Ready
    /// installed a received snapshot, `resetTo` is its index: its file must already be in place
    /// (``installSnapshotFile(_:metadata:)`` or ``saveSnapshot(_:)``); a reset record then drops
    /// every entry before it.
    public func save(hardState: HardState?, entries: [Entry], resetTo: LogIndex? = nil, sync: Bool) throws(Failure) {
        var w = ByteWriter(capacity: entries.reduce(64) { $0 + $1.data.count + 32 })
        if let index = resetTo {
            var p = ByteWriter()
            p.varint(index)
            Self.append(.reset, p.bytes, to: &w)
            lastIndex = index
        }
        for e in entries {
            var p = ByteWriter(capacity: e.data.count + 24)
            RaftCodec.encode(e, into: &p)
            Self.append(.entry, p.bytes, to: &w)
        }
        if let last = entries.last { lastIndex = last.index }
        entriesWritten += entries.count
        if let hs = hardState {
            Self.append(.hardState, RaftCodec.encode(hs), to: &w)
            lastHardState = hs
        }
        guard !w.bytes.isEmpty else { return }
        try writeAll(w.bytes)
        if sync {
            guard fdatasync(fd) == 0 else { throw Failure(description: "fsync of the Raft log failed: \(Self.errorText())") }
            fsyncs += 1
        }
        if segmentSize >= segmentBytes { try startSegment(firstIndex: lastIndex + 1) }
    }

    private static func append(_ type: RecordType, _ payload: [UInt8], to w: inout ByteWriter) {
        var body = [type.rawValue]
        body.append(contentsOf: payload)
        w.uint32(UInt32(body.count))
        w.uint32(CRC32C.checksum(body))
        w.raw(body)
    }

    private func writeAll(_ bytes: [UInt8]) throws(Failure) {
        try Self.writeAll(fd, bytes, at: segmentSize, path: "the Raft log")
        segmentSize += bytes.count
    }

    // MARK: - Segments

    private func startSegment(firstIndex: LogIndex) throws(Failure) {
        if fd >= 0 {
            // Closed early (a roll-over after a snapshot): its unused allocation goes.
            _ = ftruncate(fd, off_t(segmentSize))
            _ = fdatasync(fd)
            close(fd)
            fd = -1
        }
        let seq = (segments.last?.seq ?? 0) + 1
        let path = walDir + "/" + Self.pad(seq) + "-" + Self.pad(firstIndex) + ".wal"
        segments.append((seq, firstIndex, path))
        try openForAppend(path, end: 0)
        Self.preallocate(fd, bytes: segmentBytes)
        // Each segment starts with the hard state, so older segments can be deleted safely.
        var w = ByteWriter()
        Self.append(.hardState, RaftCodec.encode(lastHardState), to: &w)
        try writeAll(w.bytes)
        guard fdatasync(fd) == 0 else { throw Failure(description: "fsync of \(path) failed: \(Self.errorText())") }
        Self.syncDirectory(walDir)
    }

    /// Allocates a new segment whole (it reads as zeros) with `fallocate(2)`, which only records
    /// the extent. Where that is not supported nothing happens (no slow fallback writing zeros on
    /// the Raft loop), nor on tmpfs (it would pin the memory): the file then grows as records come.
    static func preallocate(_ fd: Int32, bytes: Int) {
        guard let allocate = fallocateCall, let statfs = fstatfsCall else { return }
        // `struct statfs` begins with the file system's magic number (a long).
        var buffer = [Int](repeating: 0, count: 64)
        guard buffer.withUnsafeMutableBytes({ statfs(fd, $0.baseAddress!) }) == 0, buffer[0] != 0x0102_1994 else { return }
        _ = allocate(fd, 0, 0, off_t(bytes))
    }

    /// glibc's `fallocate` and `fstatfs`, which the Glibc module does not export.
    private static let fallocateCall: (@convention(c) (Int32, Int32, off_t, off_t) -> Int32)? = {
        guard let sym = dlsym(dlopen(nil, RTLD_NOW), "fallocate") else { return nil }
        return unsafeBitCast(sym, to: (@convention(c) (Int32, Int32, off_t, off_t) -> Int32).self)
    }()
    private static let fstatfsCall: (@convention(c) (Int32, UnsafeMutableRawPointer) -> Int32)? = {
        guard let sym = dlsym(dlopen(nil, RTLD_NOW), "fstatfs") else { return nil }
        return unsafeBitCast(sym, to: (@convention(c) (Int32, UnsafeMutableRawPointer) -> Int32).self)
    }()

    /// Opens a segment for writing after its last record (`end`; the file's size when nil).
    private func openForAppend(_ path: String, end: Int?) throws(Failure) {
        fd = Glibc.open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(description: "cannot open \(path): \(Self.errorText())") }
        var st = stat()
        fstat(fd, &st)
        segmentSize = end ?? Int(st.st_size)
    }

    /// Deletes segments that only hold entries before `index` (after a snapshot covers them).
    public func removeSegments(before index: LogIndex) {
        while segments.count > 1, segments[1].firstIndex <= index {
            unlink(segments[0].path)
            segments.removeFirst()
        }
    }

    /// Closes the current segment and starts a new one (so compaction can drop the old ones).
    public func rollOver() throws(Failure) { try startSegment(firstIndex: lastIndex + 1) }

    public var segmentCount: Int { segments.count }

    // MARK: - Snapshots

    static let snapshotMagic: UInt32 = 0x4352_5653  // "SVRC"

    /// Where the snapshot with this metadata lives.
    public func snapshotPath(_ meta: SnapshotMetadata) -> String {
        snapDir + "/" + Self.pad(meta.term) + "-" + Self.pad(meta.index) + ".snap"
    }

    /// Where a snapshot being received is spooled before it is installed.
    public var spoolDirectory: String { snapDir }

    /// Writes a snapshot file atomically — `magic | crc32c | metadata | length | data`, to a
    /// temporary file, fsync'd, renamed, folder fsync'd — without copying the data, and removes
    /// older snapshots.
    public func saveSnapshot(_ s: Snapshot) throws(Failure) {
        let path = snapshotPath(s.metadata)
        try Self.writeSnapshotFile(s, to: path + ".tmp")
        try installSnapshotFile(path + ".tmp", metadata: s.metadata)
    }

    /// Writes a snapshot file beside where it will go and makes it durable; any thread (it touches
    /// only `file`). `installSnapshotFile` then makes it the current one.
    public static func writeSnapshotFile(_ s: Snapshot, to file: String) throws(Failure) {
        var header = ByteWriter(capacity: 128)
        RaftCodec.encode(s.metadata, into: &header)
        header.varint(UInt64(s.data.count))
        let crc = CRC32C.checksum(s.data, seed: CRC32C.checksum(header.bytes))
        var prefix = ByteWriter(capacity: header.bytes.count + 8)
        prefix.uint32(Self.snapshotMagic)
        prefix.uint32(crc)
        prefix.raw(header.bytes)
        let out = Glibc.open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw Failure(description: "cannot write snapshot \(file): \(Self.errorText())") }
        defer { close(out) }
        try Self.writeAll(out, prefix.bytes, path: file)
        try Self.writeAll(out, s.data, path: file)
        guard fsync(out) == 0 else { throw Failure(description: "fsync of snapshot \(file) failed: \(Self.errorText())") }
    }

    /// Makes a complete snapshot file (written or received) durable and the current one.
    public func installSnapshotFile(_ file: String, metadata: SnapshotMetadata) throws(Failure) {
        let f = Glibc.open(file, O_RDONLY | O_CLOEXEC)
        guard f >= 0 else { throw Failure(description: "cannot open snapshot \(file): \(Self.errorText())") }
        let synced = fsync(f) == 0
        close(f)
        guard synced else { throw Failure(description: "fsync of snapshot \(file) failed: \(Self.errorText())") }
        let path = snapshotPath(metadata)
        guard rename(file, path) == 0 else { throw Failure(description: "cannot install snapshot \(path): \(Self.errorText())") }
        Self.syncDirectory(snapDir)
        let name = String(path.split(separator: "/").last!)
        for old in Self.list(snapDir) where old.hasSuffix(".snap") && old < name && old.count == name.count {
            unlink(snapDir + "/" + old)
        }
    }

    /// Reads the snapshot with this metadata back (to restore the state machine).
    public func readSnapshot(_ meta: SnapshotMetadata) throws(Failure) -> Snapshot {
        guard let s = try Self.parseSnapshot(Self.read(snapshotPath(meta))), s.metadata == meta else {
            throw Failure(description: "snapshot \(snapshotPath(meta)) is damaged")
        }
        return s
    }

    static func parseSnapshot(_ bytes: [UInt8]) -> Snapshot? {
        var r = ByteReader(bytes)
        guard r.uint32() == snapshotMagic, let crc = r.uint32(), CRC32C.checksum(bytes.dropFirst(8)) == crc,
              let meta = RaftCodec.decodeSnapshotMetadata(&r), let data = r.blob(max: Int(Int32.max)), r.atEnd else { return nil }
        return Snapshot(metadata: meta, data: data)
    }

    private func loadNewestSnapshot(_ repairs: inout [String]) throws(Failure) -> Snapshot? {
        for name in Self.list(snapDir) where name.hasSuffix(".part") || name.hasSuffix(".tmp") {
            unlink(snapDir + "/" + name)  // an interrupted transfer or write
        }
        let names = Self.list(snapDir).filter { $0.hasSuffix(".snap") }.sorted(by: >)
        for name in names {
            if let s = Self.parseSnapshot(try Self.read(snapDir + "/" + name)) { return s }
            repairs.append("skipped damaged snapshot \(name)")
        }
        return nil
    }

    /// Writes all of `bytes` at the file's current offset, or at `at` when given.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], at: Int? = nil, path: String) throws(Failure) {
        var off = 0
        var failed: Int32 = 0
        bytes.withUnsafeBytes { raw in
            while off < raw.count {
                let n = at.map { pwrite(fd, raw.baseAddress! + off, raw.count - off, off_t($0 + off)) }
                    ?? Glibc.write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 { if errno == EINTR { continue }; failed = errno; return }
                off += n
            }
        }
        guard failed == 0 else { throw Failure(description: "write to \(path) failed: \(String(cString: strerror(failed)))") }
    }

    // MARK: - Files

    static func pad(_ v: UInt64) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, 20 - s.count)) + s
    }

    static func errorText() -> String { String(cString: strerror(errno)) }

    /// `mkdir -p` with mode 0700 for what it creates.
    static func makeDirectory(_ path: String) throws(Failure) {
        let parent = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if !parent.isEmpty, access(parent, F_OK) != 0 { try makeDirectory(parent) }
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw Failure(description: "cannot create \(path): \(errorText())")
        }
    }

    static func list(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }

    static func read(_ path: String) throws(Failure) -> [UInt8] {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(description: "cannot open \(path): \(errorText())") }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var off = 0
        let ok = out.withUnsafeMutableBytes { raw -> Bool in
            while off < raw.count {
                let n = pread(fd, raw.baseAddress! + off, raw.count - off, off_t(off))
                if n < 0 { if errno == EINTR { continue }; return false }
                if n == 0 { break }
                off += n
            }
            return true
        }
        guard ok else { throw Failure(description: "cannot read \(path): \(errorText())") }
        return Array(out.prefix(off))
    }

    static func truncate(_ path: String, to size: Int) throws(Failure) {
        guard Glibc.truncate(path, off_t(size)) == 0 else { throw Failure(description: "cannot truncate \(path): \(errorText())") }
        let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    static func syncDirectory(_ path: String) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }
}
