import Foundation
@testable import Executor
import Testing

/// Task logs live where the task can write: links it plants there are never followed — the
/// host's files are not read through them, truncated by rotation, or written into.
@Suite struct LogRotationTests {
    static func dirs() throws -> (root: String, logs: String, secret: String) {
        let root = NSTemporaryDirectory() + "caravan-logs-\(UUID().uuidString)"
        let logs = root + "/alloc/logs"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        let secret = root + "/shadow"
        try "root:secret-hash\n".write(toFile: secret, atomically: true, encoding: .utf8)
        return (root, logs, secret)
    }

    @Test func aLinkPlantedAsALogFileIsNeitherReadNorTruncated() throws {
        let (root, logs, secret) = try Self.dirs()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let live = logs + "/web.stdout"
        try String(repeating: "x", count: 100).write(toFile: live, atomically: false, encoding: .utf8)
        // The task links a rotated name and then the live file itself to the host's file.
        symlink(secret, logs + "/web.stdout.1")
        let read = LogRotation.read(LogRotation.files(live), offset: 0, length: 1 << 20)
        #expect(!String(decoding: read.bytes, as: UTF8.self).contains("secret"))
        unlink(live)
        symlink(secret, live)
        let again = LogRotation.read(LogRotation.files(live), offset: 0, length: 1 << 20)
        #expect(again.bytes.isEmpty)
        LogRotation.rotateIfNeeded(live, maxBytes: 1, maxFiles: 3)
        #expect(try String(contentsOfFile: secret, encoding: .utf8) == "root:secret-hash\n", "rotation must not truncate through a link")
        // The task's process opening its output through a planted link gets nothing.
        #expect(LogRotation.openNoFollow(live, O_WRONLY | O_CREAT | O_APPEND) < 0)
    }

    @Test func aLogsDirectoryReplacedByALinkIsNotFollowed() throws {
        let (root, logs, secret) = try Self.dirs()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let elsewhere = root + "/etc"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        try "host file\n".write(toFile: elsewhere + "/web.stdout", atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: logs)
        symlink(elsewhere, logs)
        let live = logs + "/web.stdout"
        #expect(LogRotation.read(LogRotation.files(live), offset: 0, length: 1 << 20).bytes.isEmpty)
        LogRotation.rotateIfNeeded(live, maxBytes: 1, maxFiles: 3)
        #expect(try String(contentsOfFile: elsewhere + "/web.stdout", encoding: .utf8) == "host file\n")
        #expect(!FileManager.default.fileExists(atPath: elsewhere + "/web.stdout.1"), "no file written into the linked directory")
        _ = secret
    }

    @Test func ordinaryRotationStillWorks() throws {
        let (root, logs, _) = try Self.dirs()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let live = logs + "/t.stdout"
        try "0123456789".write(toFile: live, atomically: false, encoding: .utf8)
        LogRotation.rotateIfNeeded(live, maxBytes: 5, maxFiles: 3)
        #expect(LogRotation.files(live) == [live + ".1", live])
        let fd = LogRotation.openNoFollow(live, O_WRONLY | O_APPEND)
        _ = "abc".withCString { write(fd, $0, 3) }
        close(fd)
        // A file past its size keeps its newest maxBytes when it is rotated.
        #expect(String(decoding: LogRotation.read(LogRotation.files(live), offset: 0, length: 100).bytes, as: UTF8.self) == "56789abc")
    }
}
