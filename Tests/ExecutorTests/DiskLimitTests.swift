import CaravanModel
@testable import Executor
import Foundation
import Testing

/// An allocation keeps at most its `ephemeralDisk` (plus its logs' allowance) on the node: the
/// count is the agent's own walk, which no link, odd name or deep tree gets around.
@Suite struct DiskLimitTests {
    @Test func theWalkCountsEveryEntryOnceAndNeverLeavesTheTree() throws {
        let root = tempDir("du")
        let outside = tempDir("du-outside")
        try Data(count: 3 << 20).write(to: URL(fileURLWithPath: outside + "/big"))
        let base = DiskUsage.measure(root, stopAt: .max)
        // Written blocks count; a link to a big file outside, and the link's target, do not.
        let fd = open(root + "/data", O_CREAT | O_WRONLY, 0o644)
        var chunk = [UInt8](repeating: 7, count: 1 << 20)
        for _ in 0..<2 { _ = chunk.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) } }
        close(fd)
        symlink(outside, root + "/away")
        symlink(outside + "/big", root + "/big-link")
        guard case .bytes(let b0) = base, case .bytes(let b1) = DiskUsage.measure(root, stopAt: .max) else { Issue.record("too deep"); return }
        #expect(b1 - b0 >= 2 << 20 && b1 - b0 < (2 << 20) + 64 << 10, "\(b1 - b0)")
        // A name that is not UTF-8 is found all the same.
        let odd = root + "/\u{1}"
        mkdir(odd, 0o755)
        let name: [CChar] = Array((odd + "/").utf8CString.dropLast()) + [CChar(bitPattern: 0xFF), CChar(bitPattern: 0xFE), 0]
        let ofd = open(name, O_CREAT | O_WRONLY, 0o644)
        #expect(ofd >= 0)
        for _ in 0..<3 { _ = chunk.withUnsafeMutableBytes { write(ofd, $0.baseAddress, $0.count) } }
        close(ofd)
        guard case .bytes(let b2) = DiskUsage.measure(root, stopAt: .max) else { Issue.record("too deep"); return }
        #expect(b2 - b1 >= 3 << 20, "\(b2 - b1)")
        // Empty files are not free, and the walk stops once past the bound.
        for i in 0..<100 { close(open(root + "/e\(i)", O_CREAT | O_WRONLY, 0o644)) }
        guard case .bytes(let b3) = DiskUsage.measure(root, stopAt: .max), case .bytes(let stopped) = DiskUsage.measure(root, stopAt: 1 << 20) else { return }
        #expect(b3 - b2 >= 100 * 4096)
        #expect(stopped > 1 << 20 && stopped < b3)
        // A file with more names is counted once.
        for i in 0..<4 { link(root + "/data", root + "/data-link\(i)") }
        guard case .bytes(let b4) = DiskUsage.measure(root, stopAt: .max) else { return }
        #expect(b4 - b3 == 4 * 4096, "\(b4 - b3)")
        // A tree nested deeper than the walk goes is over any limit.
        var deep = root + "/d"
        for _ in 0...DiskUsage.maxDepth { mkdir(deep, 0o755); deep += "/d" }
        #expect(DiskUsage.measure(root, stopAt: .max) == .tooDeep)
    }

    @Test func removeTreeTakesOddNamesAndTreesDeeperThanAPathCanName() throws {
        let root = tempDir("rm")
        // Deeper than PATH_MAX (4096) can name: 1,500 levels of 8-byte names, made through fds.
        var fd = open(root, O_RDONLY | O_DIRECTORY)
        for _ in 0..<1500 {
            mkdirat(fd, "dddddddd", 0o755)
            let next = openat(fd, "dddddddd", O_RDONLY | O_DIRECTORY)
            close(fd)
            fd = next
        }
        let odd: [CChar] = [CChar(bitPattern: 0xFF), CChar(bitPattern: 0xFE), 0]
        close(openat(fd, odd, O_CREAT | O_WRONLY, 0o644))
        close(fd)
        close(open(root + "/\u{1}x", O_CREAT | O_WRONLY, 0o644))
        let topOdd = open(root, O_RDONLY | O_DIRECTORY)
        mkdirat(topOdd, odd, 0o755)
        close(topOdd)
        removeTree(root)
        #expect(access(root, F_OK) != 0)
    }

    @Test("a task that writes past its ephemeral disk fails its allocation, named; one within it runs on")
    func anAllocationPastItsDiskIsFailed() async throws {
        let log = ReportLog()
        let ex = Executor(root: tempDir("disk"), nodeName: "n1", drivers: [RawExecDriver(useCgroups: false)], report: log.sink)
        let watch = Task { await ex.watchDisk(every: .milliseconds(100)) }
        defer { watch.cancel() }
        func job(_ id: String, _ script: String, diskMiB: Int) -> Assignment {
            var t = shell("main", script)
            t.logs.maxFiles = 1
            t.logs.maxFileSizeMiB = 1
            var a = assignment(id, tasks: [t], restart: fastRestart)
            a.job.groups[0].ephemeralDiskMiB = diskMiB
            return a
        }
        // 8 MiB in four files into its own directory, with 4 MiB allowed (+ 2 MiB of logs); it
        // ignores SIGTERM and has a long kill timeout, which a disk kill does not wait for.
        var big = job("big", "trap '' TERM; echo started; echo junk > ../alloc/logs/junk; for i in 1 2 3 4; do head -c 2097152 /dev/zero > local/f$i; done; while true; do sleep 1; done", diskMiB: 4)
        big.job.groups[0].tasks[0].killTimeout = .seconds(60)
        await ex.sync([big,
                       job("small", "head -c 1048576 /dev/zero > local/fill; exec sleep 60", diskMiB: 4)])
        try await log.wait("the big one fails", { $0?.clientStatus == .failed }, id: "big")
        let r = try #require(log.report("big"))
        #expect(r.description.contains("ephemeral disk exceeded: over 6 MiB used (ephemeralDisk 4 MiB and its logs' 2 MiB)"), "\(r)")
        #expect(r.taskStates["main"]?.events.contains { $0.type == "Disk Limit Exceeded" && $0.message.hasSuffix("sent SIGKILL") } == true)
        // Its files go, its logs stay.
        let logFile = try #require(await ex.logFiles(allocation: "big", task: "main", stderr: false)?.last)
        let dir = String(logFile.dropLast("/alloc/logs/main.stdout".count))
        // Removed off the executor's actor, in whatever order the walk finds them: wait for both.
        for _ in 0..<500 where access(dir + "/main/local/f1", F_OK) == 0 || access(dir + "/alloc/logs/junk", F_OK) == 0 {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(access(dir + "/main/local/f1", F_OK) != 0)
        #expect(access(dir + "/alloc/logs/junk", F_OK) != 0, "only the tasks' own log files are kept")
        let out = String(decoding: LogRotation.read(try #require(await ex.logFiles(allocation: "big", task: "main", stderr: false)), offset: 0, length: 100).bytes, as: UTF8.self)
        #expect(out == "started\n")
        // One file written as fast as it goes (output, here) stops at the allowance at once.
        await ex.sync([job("big", "true", diskMiB: 4), job("loud", "exec head -c 104857600 /dev/zero", diskMiB: 4),
                       job("small", "head -c 1048576 /dev/zero > local/fill; exec sleep 60", diskMiB: 4)])
        try await log.wait("the loud one stops", { $0?.clientStatus == .failed }, id: "loud")
        #expect(log.report("loud")?.taskStates["main"]?.events.contains {
            $0.type == "Disk Limit Exceeded" && $0.message.contains("a file reached the allocation's disk allowance of 6 MiB")
        } == true, "\(String(describing: log.report("loud")))")
        let files = await ex.logFiles(allocation: "loud", task: "main", stderr: false) ?? []
        let kept = files.compactMap { try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int }.reduce(0, +)
        #expect(kept < 100 << 20, "log files hold \(kept) bytes")
        #expect(log.report("small")?.clientStatus == .running)
    }

    @Test(.enabled(if: geteuid() == 0))
    func anotherFilesystemInsideIsRefusedAndNeverEmptied() throws {
        let root = tempDir("foreign")
        let mnt = root + "/main/local/m"
        mkdirAll(mnt)
        guard mount("tmpfs", mnt, "tmpfs", 0, "size=1m") == 0 else { Issue.record("cannot mount a tmpfs"); return }
        defer { umount2(mnt, Int32(MNT_DETACH)); removeTree(root) }
        close(open(mnt + "/inside", O_CREAT | O_WRONLY, 0o644))
        #expect(DiskUsage.measure(root, stopAt: .max) == .foreignFilesystem)
        // Removal does not enter the mount (nor unmount it): what is inside stays.
        removeTree(root + "/main")
        #expect(access(mnt + "/inside", F_OK) == 0)
        umount2(mnt, Int32(MNT_DETACH))
        removeTree(root + "/main")
        // A container task's overlay root is where one is expected: skipped — for that task only.
        let rootfs = root + "/c/bundle/rootfs"
        mkdirAll(rootfs)
        guard mount("tmpfs", rootfs, "tmpfs", 0, "size=1m") == 0 else { return }
        defer { umount2(rootfs, Int32(MNT_DETACH)) }
        #expect(DiskUsage.measure(root, stopAt: .max, containerTasks: ["c"]) != .foreignFilesystem)
        #expect(DiskUsage.measure(root, stopAt: .max, containerTasks: ["alloc"]) == .foreignFilesystem)
    }

    @Test func rotatedNamesCannotOverflowTheNextNumber() throws {
        let root = tempDir("names")
        mkdirAll(root + "/logs")
        let live = root + "/logs/t.stdout"
        try Data(count: 2048).write(to: URL(fileURLWithPath: live))
        close(open(live + ".9223372036854775807", O_CREAT | O_WRONLY, 0o644))
        LogRotation.rotateIfNeeded(live, maxBytes: 1024, maxFiles: 3)
        #expect(access(live + ".1", F_OK) == 0)
    }
}
