import Foundation
import Primitives
import Raft
@testable import RaftNIO
import Testing

/// The log on real files: what was saved comes back, a torn tail is cut, nothing acknowledged
/// (fsync'd before the cut) is lost.
@Suite struct WriteAheadLogTests {
    static func tempDir() -> String {
        let d = NSTemporaryDirectory() + "caravan-wal-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func entries(_ range: ClosedRange<LogIndex>, term: Term = 1) -> [Entry] {
        range.map { Entry(term: term, index: $0, data: Array("value-\($0)".utf8)) }
    }

    /// Changes the newest segment's bytes in place (a disk's damage, or a crash's), after cutting
    /// its preallocated zeros (so `change` sees what was written, as the file a log without
    /// preallocation would have).
    static func damageNewestSegment(_ dir: String, _ change: (inout Data) -> Void) throws {
        let url = URL(fileURLWithPath: newestSegment(dir))
        var bytes = written(try Data(contentsOf: url))
        change(&bytes)
        try bytes.write(to: url)
    }

    /// A segment's bytes without the zeros after the last one written (the tests' records all end
    /// in a non-zero byte).
    static func written(_ bytes: Data) -> Data {
        bytes.prefix(WriteAheadLog.zeroTail([UInt8](bytes), after: 0))
    }

    /// Cuts the newest segment's preallocated zeros.
    static func trimNewestSegment(_ dir: String) throws { try damageNewestSegment(dir) { _ in } }

    static func newestSegment(_ dir: String) -> String {
        let names = try! FileManager.default.contentsOfDirectory(atPath: dir + "/wal").filter { $0.hasSuffix(".wal") }.sorted()
        return dir + "/wal/" + names.last!
    }

    @Test func whatIsSavedComesBack() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        try wal.save(hardState: HardState(term: 3, vote: "a", commit: 5), entries: Self.entries(1...10), sync: true)
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.hardState == HardState(term: 3, vote: "a", commit: 5))
        #expect(again.entries == Self.entries(1...10))
        #expect(again.repairs.isEmpty)
    }

    @Test func aConflictingSuffixIsReplacedOnReplay() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        try wal.save(hardState: nil, entries: Self.entries(1...10), sync: true)
        try wal.save(hardState: nil, entries: Self.entries(6...7, term: 2), sync: true)
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.entries == Self.entries(1...5) + Self.entries(6...7, term: 2))
    }

    @Test(arguments: [1, 3, 9, 20])
    func aTornLastRecordIsCutAndEverythingBeforeItSurvives(cut: Int) throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        try wal.save(hardState: HardState(term: 2, vote: nil, commit: 0), entries: Self.entries(1...50), sync: true)
        try wal.save(hardState: nil, entries: Self.entries(51...51), sync: true)
        try Self.trimNewestSegment(dir)
        let seg = Self.newestSegment(dir)
        let size = try FileManager.default.attributesOfItem(atPath: seg)[.size] as! Int
        truncate(seg, off_t(size - cut))
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.entries == Self.entries(1...50))
        #expect(again.hardState.term == 2)
        #expect(again.repairs.count == 1 && again.repairs[0].contains("torn or corrupt tail"))
        // The repaired log takes appends again and keeps them.
        let w2 = WriteAheadLog(directory: dir)
        _ = try w2.open()
        try w2.save(hardState: nil, entries: Self.entries(51...52, term: 3), sync: true)
        #expect(try WriteAheadLog(directory: dir).open().entries.last == Self.entries(52...52, term: 3)[0])
    }

    @Test func aCorruptByteInTheLastRecordIsCaughtByItsChecksum() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        try wal.save(hardState: nil, entries: Self.entries(1...20), sync: true)
        try Self.damageNewestSegment(dir) { $0[$0.count - 3] ^= 0xFF }
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.entries == Self.entries(1...19))
        #expect(!again.repairs.isEmpty)
    }

    /// A flipped bit in a record with more records after it is not a torn tail: cutting there
    /// would drop acknowledged entries and the term and vote saved after them (a double vote).
    /// The log refuses to open, naming the file and offset.
    @Test func aFlippedBitInTheMiddleOfTheNewestSegmentStopsTheAgent() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        try wal.save(hardState: nil, entries: Self.entries(1...20), sync: true)
        try wal.save(hardState: HardState(term: 7, vote: "b", commit: 20), entries: Self.entries(21...40, term: 7), sync: true)
        let seg = Self.newestSegment(dir)
        let original = Self.written(try Data(contentsOf: URL(fileURLWithPath: seg)))
        // A flipped bit in a payload, and one in a length field (the record then seems to run
        // to the end of the file).
        let firstRecordAfterHardState = 8 + Int(original[0]) + Int(original[1]) << 8
        for (at, bit) in [(original.count / 3, UInt8(0x10)), (firstRecordAfterHardState + 2, UInt8(0x01))] {
            var bytes = original
            bytes[at] ^= bit
            try bytes.write(to: URL(fileURLWithPath: seg))
            do {
                _ = try WriteAheadLog(directory: dir).open()
                Issue.record("a damaged record in the middle (byte \(at)) was cut like a torn tail")
            } catch {
                #expect(error.description.contains(seg) && error.description.contains("at byte"), "\(error)")
            }
        }
    }

    /// Zeros where the last batch should be (the file grew, a crash came before the data did):
    /// an unacknowledged write, cut like a torn tail.
    @Test func zerosAtTheEndAreATornTail() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        try wal.save(hardState: nil, entries: Self.entries(1...20), sync: true)
        let end = Self.written(try Data(contentsOf: URL(fileURLWithPath: Self.newestSegment(dir)))).count
        try wal.save(hardState: nil, entries: Self.entries(21...30), sync: true)
        // The first pages of the second batch never made it (a sector of zeros); a later part
        // of it did.
        try Self.damageNewestSegment(dir) { $0.insert(contentsOf: [UInt8](repeating: 0, count: 1024), at: end) }
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.entries == Self.entries(1...20))
        #expect(!again.repairs.isEmpty)
    }

    /// Eight zero bytes over a header in the middle, valid records after: damage, not a crash.
    @Test func aZeroedHeaderInTheMiddleStopsTheAgent() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        for i in 0..<10 { try wal.save(hardState: nil, entries: Self.entries(LogIndex(i * 5 + 1)...LogIndex(i * 5 + 5)), sync: true) }
        try wal.save(hardState: HardState(term: 9, vote: "b", commit: 50), entries: [], sync: true)
        try Self.damageNewestSegment(dir) { bytes in
            let firstRecordAfterHardState = 8 + Int(bytes[0]) + Int(bytes[1]) << 8
            for i in firstRecordAfterHardState..<(firstRecordAfterHardState + 8) { bytes[i] = 0 }
        }
        #expect(throws: WriteAheadLog.Failure.self) { _ = try WriteAheadLog(directory: dir).open() }
    }

    @Test func corruptionBeforeTheLastSegmentStopsWithAClearError() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir, segmentBytes: 512)
        _ = try wal.open()
        for i in stride(from: 1, through: 200, by: 10) {
            try wal.save(hardState: nil, entries: Self.entries(LogIndex(i)...LogIndex(i + 9)), sync: false)
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/wal").sorted()
        #expect(names.count > 2)
        let first = dir + "/wal/" + names[0]
        var bytes = try Data(contentsOf: URL(fileURLWithPath: first))
        bytes[bytes.count - 5] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: first))
        #expect {
            _ = try WriteAheadLog(directory: dir, segmentBytes: 512).open()
        } throws: { error in
            "\(error)".contains("corrupt record") && "\(error)".contains("not the last segment")
        }
    }

    @Test func aSnapshotReplacesTheLogPrefixAndOldSegmentsGo() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir, segmentBytes: 1024)
        _ = try wal.open()
        for i in stride(from: 1, through: 300, by: 10) {
            try wal.save(hardState: HardState(term: 1, vote: nil, commit: LogIndex(i + 9)), entries: Self.entries(LogIndex(i)...LogIndex(i + 9)), sync: false)
        }
        let before = wal.segmentCount
        let config = Configuration(servers: [.init(id: "a", address: "x:1", voter: true)])
        try wal.saveSnapshot(Snapshot(metadata: SnapshotMetadata(index: 250, term: 1, configuration: config), data: [1, 2, 3]))
        try wal.rollOver()
        wal.removeSegments(before: 240)
        #expect(wal.segmentCount < before)
        let again = try WriteAheadLog(directory: dir, segmentBytes: 1024).open()
        #expect(again.snapshot?.metadata.index == 250)
        #expect(again.snapshot?.data == [1, 2, 3])
        #expect(again.entries.first?.index == 251)
        #expect(again.entries.last?.index == 300)
        #expect(again.hardState.commit == 300)
    }

    @Test func aReceivedSnapshotResetsTheLog() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        try wal.save(hardState: nil, entries: Self.entries(1...10), sync: true)
        let config = Configuration(servers: [.init(id: "a", address: "x:1", voter: true)])
        let snap = Snapshot(metadata: SnapshotMetadata(index: 500, term: 4, configuration: config), data: [9])
        try wal.saveSnapshot(snap)
        try wal.save(hardState: HardState(term: 4, vote: nil, commit: 500), entries: [], resetTo: 500, sync: true)
        try wal.save(hardState: nil, entries: [Entry(term: 4, index: 501, data: [7])], sync: true)
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.snapshot == snap)
        #expect(again.entries == [Entry(term: 4, index: 501, data: [7])])
    }

    @Test func aSnapshotFileIsCheckedWhenRead() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        let config = Configuration(servers: [.init(id: "a", address: "x:1", voter: true)])
        let snap = Snapshot(metadata: SnapshotMetadata(index: 9, term: 2, configuration: config), data: Array(repeating: 7, count: 5000))
        try wal.saveSnapshot(snap)
        #expect(try wal.readSnapshot(snap.metadata) == snap)
        let path = wal.snapshotPath(snap.metadata)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count - 100] ^= 1
        try bytes.write(to: URL(fileURLWithPath: path))
        #expect(throws: WriteAheadLog.Failure.self) { try wal.readSnapshot(snap.metadata) }
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.snapshot == nil)
        #expect(again.repairs.contains { $0.contains("skipped damaged snapshot") })
    }

    /// Segments are allocated whole when made; records go after the last one written (not at the
    /// end of the file), across reopenings; the zeros after them are no repair.
    @Test func aPreallocatedSegmentIsWrittenInPlaceAcrossRestarts() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir, segmentBytes: 1 << 20)
        _ = try wal.open()
        try wal.save(hardState: HardState(term: 2, vote: "a", commit: 0), entries: Self.entries(1...10), sync: true)
        let seg = Self.newestSegment(dir)
        #expect(try FileManager.default.attributesOfItem(atPath: seg)[.size] as? Int == 1 << 20)
        let w2 = WriteAheadLog(directory: dir, segmentBytes: 1 << 20)
        let first = try w2.open()
        #expect(first.entries == Self.entries(1...10))
        #expect(first.repairs.isEmpty)
        try w2.save(hardState: HardState(term: 3, vote: "b", commit: 12), entries: Self.entries(11...12, term: 3), sync: true)
        let again = try WriteAheadLog(directory: dir, segmentBytes: 1 << 20).open()
        #expect(again.entries == Self.entries(1...10) + Self.entries(11...12, term: 3))
        #expect(again.hardState == HardState(term: 3, vote: "b", commit: 12))
        #expect(again.repairs.isEmpty)
        #expect(try FileManager.default.attributesOfItem(atPath: seg)[.size] as? Int == 1 << 20)
    }

    /// A header zeroed in the middle, valid records after it and the preallocated zeros after
    /// those: still damage to acknowledged data (the valid chain ends where the zeros begin).
    @Test func aZeroedHeaderBeforeValidRecordsStopsTheAgentInAPreallocatedSegment() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        for i in 0..<10 { try wal.save(hardState: nil, entries: Self.entries(LogIndex(i * 5 + 1)...LogIndex(i * 5 + 5)), sync: true) }
        try wal.save(hardState: HardState(term: 9, vote: "b", commit: 50), entries: [], sync: true)
        let url = URL(fileURLWithPath: Self.newestSegment(dir))
        var bytes = try Data(contentsOf: url)
        #expect(bytes.count == wal.segmentBytes)
        let firstRecordAfterHardState = 8 + Int(bytes[0]) + Int(bytes[1]) << 8
        for i in firstRecordAfterHardState..<(firstRecordAfterHardState + 8) { bytes[i] = 0 }
        try bytes.write(to: url)
        #expect(throws: WriteAheadLog.Failure.self) { _ = try WriteAheadLog(directory: dir).open() }
    }

    /// The last write torn inside the preallocated part (its end never reached the disk): cut,
    /// and the log goes on after what survived.
    @Test func aTornWriteInsideThePreallocatedPartIsCut() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        try wal.save(hardState: nil, entries: Self.entries(1...20), sync: true)
        let end = Self.written(try Data(contentsOf: URL(fileURLWithPath: Self.newestSegment(dir)))).count
        try wal.save(hardState: nil, entries: Self.entries(21...21), sync: true)
        let url = URL(fileURLWithPath: Self.newestSegment(dir))
        var bytes = try Data(contentsOf: url)
        for i in (end + 10)..<(end + 40) { bytes[i] = 0 }  // the record's tail, as if never written
        try bytes.write(to: url)
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.entries == Self.entries(1...20))
        #expect(again.repairs.count == 1)
        let w2 = WriteAheadLog(directory: dir)
        _ = try w2.open()
        try w2.save(hardState: nil, entries: Self.entries(21...22, term: 2), sync: true)
        #expect(try WriteAheadLog(directory: dir).open().entries == Self.entries(1...20) + Self.entries(21...22, term: 2))
    }

    /// The newest write's first sector never reached the disk (zeros from its first record to a
    /// 512-byte boundary) while its later pages did: a torn write, cut — not damage that stops
    /// the agent.
    @Test func aTornWriteWhoseFirstSectorIsMissingIsCut() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        try wal.save(hardState: nil, entries: Self.entries(1...20), sync: true)
        let end = Self.written(try Data(contentsOf: URL(fileURLWithPath: Self.newestSegment(dir)))).count
        let big = (21...40).map { Entry(term: 1, index: LogIndex($0), data: [UInt8](repeating: 0x61, count: 300)) }
        try wal.save(hardState: nil, entries: big, sync: true)
        let url = URL(fileURLWithPath: Self.newestSegment(dir))
        var bytes = try Data(contentsOf: url)
        let boundary = (end / 512 + 1) * 512
        for i in end..<boundary { bytes[i] = 0 }
        try bytes.write(to: url)
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.entries == Self.entries(1...20))
        #expect(again.repairs.count == 1)
    }

    /// Records whose length is a multiple of 256 (a zero low byte, as fixed-size values give)
    /// open as fast as any: the segment's zeros are found once, not for each such record.
    @Test func recordsWithARoundLengthOpenQuickly() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir)
        _ = try wal.open()
        // An entry whose record (type byte + encoded entry) is exactly 256 bytes long.
        func entry(_ i: LogIndex, _ size: Int) -> Entry { Entry(term: 1, index: i, data: [UInt8](repeating: 7, count: size)) }
        var size = 200
        while true {
            var w = ByteWriter()
            RaftCodec.encode(entry(300, size), into: &w)
            if w.bytes.count + 1 == 256 { break }
            size += 1
        }
        try wal.save(hardState: nil, entries: (1...299).map { entry(LogIndex($0), 8) }, sync: false)
        for start in stride(from: 300, to: 2300, by: 100) {
            try wal.save(hardState: nil, entries: (start..<start + 100).map { entry(LogIndex($0), size) }, sync: false)
        }
        let t0 = ContinuousClock.now
        let again = try WriteAheadLog(directory: dir).open()
        #expect(again.entries.count == 2299)
        #expect(ContinuousClock.now - t0 < .seconds(5), "opening took \(ContinuousClock.now - t0)")
    }

    /// A segment closed early (after a snapshot) gives back its unused allocation.
    @Test func aSegmentClosedEarlyIsCutToWhatItHolds() throws {
        let dir = Self.tempDir()
        let wal = WriteAheadLog(directory: dir, segmentBytes: 1 << 20)
        _ = try wal.open()
        try wal.save(hardState: nil, entries: Self.entries(1...10), sync: true)
        let old = Self.newestSegment(dir)
        try wal.rollOver()
        let size = try FileManager.default.attributesOfItem(atPath: old)[.size] as! Int
        let written = Self.written(try Data(contentsOf: URL(fileURLWithPath: old))).count
        #expect(size < 1024 && size == written)
        try wal.save(hardState: nil, entries: Self.entries(11...12), sync: true)
        #expect(try WriteAheadLog(directory: dir, segmentBytes: 1 << 20).open().entries == Self.entries(1...12))
    }

    @Test func checksumsChainAcrossChunks() {
        let a = Array("hello, ".utf8), b = Array("snapshot".utf8)
        #expect(CRC32C.checksum(b, seed: CRC32C.checksum(a)) == CRC32C.checksum(a + b))
    }

    @Test func checksumMatchesTheCastagnoliReference() {
        // RFC 3720 test vector: 32 bytes of zeros.
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }
}
