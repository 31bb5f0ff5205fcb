import ArgumentParser
import CaravanModel
import Executor
import Foundation
import Synchronization

/// Task start latency per driver, agent memory per running task, and helper processes per task.
struct ExecutorBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "executor",
        abstract: "Executor: allocation received → process running per driver (p50/p99), RSS per task, helpers per task.")

    @Option(help: "Starts per driver.") var starts: Int = 100
    @Option(help: "Tasks kept running at once for the memory and scale figures.") var many: Int = 250
    @Option(help: "Registry HOST:PORT holding busybox:1.36 for the container driver (Deploy/registry.sh up); none skips it.")
    var registry: String?
    @Option(help: "Work directory (removed afterwards).") var dir: String = "/tmp/caravan-bench-executor"
    @Flag(help: "Only the disk watch's walk.") var diskOnly = false

    final class Clock: Sendable {
        let started = Mutex<[String: ContinuousClock.Instant]>([:])
    }

    func run() async throws {
        try? FileManager.default.removeItem(atPath: dir)
        if diskOnly { return diskWalk() }
        print("caravan-bench executor: \(starts) starts per driver, \(many) concurrent tasks; \(ProcessInfo.processInfo.activeProcessorCount) cores")
        var drivers: [(TaskSpec.Driver, String)] = [(.rawExec, "")]
        if RuncDriver(stateRoot: "/tmp").fingerprint().usable { drivers.append((.exec, "")) } else { print("exec: skipped (needs root and runc)") }
        if let registry { drivers.append((.container, "\(registry)/busybox:1.36")) } else { print("container: skipped (pass --registry HOST:PORT)") }
        for (driver, image) in drivers {
            try await latency(driver, image: image)
        }
        try await scale()
        diskWalk()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// What the disk watch costs per allocation and pass: one walk of a tree of N files.
    func diskWalk() {
        for files in [1_000, 10_000, 100_000] {
            let root = dir + "/walk-\(files)"
            for d in 0..<max(1, files / 1000) {
                let sub = root + "/d\(d)"
                try? FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
                for f in 0..<min(files, 1000) { close(open(sub + "/f\(f)", O_CREAT | O_WRONLY, 0o644)) }
            }
            let clock = ContinuousClock()
            var best = Duration.seconds(3600)
            for _ in 0..<5 {
                let t0 = clock.now
                _ = DiskUsage.measure(root, stopAt: .max)
                best = min(best, clock.now - t0)
            }
            let ms = Double(best.components.seconds) * 1000 + Double(best.components.attoseconds) / 1e15
            print("disk watch: one walk of \(files) files takes \(String(format: "%.2f", ms)) ms (best of 5)")
            try? FileManager.default.removeItem(atPath: root)
        }
    }

    func makeExecutor(_ root: String, clock: Clock) -> Executor {
        let images = ImageStore(root: root + "/images")
        return Executor(root: root + "/alloc", nodeName: "bench",
                        drivers: [RawExecDriver(useCgroups: geteuid() == 0), RuncDriver(name: .exec, stateRoot: root + "/runc"),
                                  ContainerDriver(images: images, stateRoot: root + "/runc")],
                        report: { _ in true }, taskStarted: { a, _ in clock.started.withLock { $0[a] = .now } })
    }

    func assignment(_ i: Int, _ driver: TaskSpec.Driver, image: String, command: [String]) -> Assignment {
        var t = TaskSpec(name: "t", driver: driver, config: DriverConfig(image: image.isEmpty ? nil : image, command: command[0],
                                                                            args: Array(command.dropFirst())))
        t.resources = Resources(cpuMillicores: 10, memoryMiB: 32)
        t.killTimeout = .milliseconds(200)
        t.killSignal = "SIGKILL"
        let g = TaskGroup(name: "g", count: 1, tasks: [t])
        let job = Job(id: "bench", groups: [g])
        let a = Allocation(id: String(format: "bench-%05d", i), jobID: "bench", jobVersion: 0, group: "g", name: "bench.g[\(i)]",
                           nodeID: "bench", cpuMillicores: 10, memoryMiB: 32, diskMiB: 1)
        return Assignment(allocation: a, job: job)
    }

    static func percentile(_ xs: [Double], _ p: Double) -> Double {
        let s = xs.sorted()
        return s.isEmpty ? 0 : s[min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1)]
    }

    /// One start at a time: sync hands the executor a new allocation; the clock stops when the
    /// driver reports the process up.
    func latency(_ driver: TaskSpec.Driver, image: String) async throws {
        let clock = Clock()
        let root = "\(dir)/\(driver.rawValue)"
        let ex = makeExecutor(root, clock: clock)
        let command = driver == .container ? ["sleep", "600"] : ["/bin/sleep", "600"]
        // Warm-up (pulls the image once: starts are measured with it cached).
        var live: [Assignment] = [assignment(0, driver, image: image, command: command)]
        await ex.sync(live)
        try await waitStarted(clock, live[0].allocation.id)
        var ms: [Double] = []
        for i in 1...starts {
            let a = assignment(i, driver, image: image, command: command)
            live.append(a)
            let t0 = ContinuousClock.now
            await ex.sync(live)
            let t1 = try await waitStarted(clock, a.allocation.id)
            ms.append(Double((t1 - t0) / .microseconds(1)) / 1000)
            // Keep at most 10 running so each start sees a similar node.
            if live.count > 10 { live.removeFirst() }
        }
        // Helper processes beside the running tasks: runc processes still alive for them.
        let runcs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.filter { p in
            Int(p) != nil && (try? String(contentsOfFile: "/proc/\(p)/comm", encoding: .utf8)) == "runc\n"
        }.count ?? 0
        await ex.sync([])
        try await waitGone(root)
        print(String(format: "%@: allocation received → process running: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d starts%@)%@",
                     driver.rawValue, Self.percentile(ms, 0.5), Self.percentile(ms, 0.99), ms.max() ?? 0, starts,
                     driver == .container ? ", image cached" : "",
                     driver == .rawExec ? "" : "; runc processes beside \(live.count) running tasks: \(runcs)"))
    }

    @discardableResult
    func waitStarted(_ clock: Clock, _ id: String) async throws -> ContinuousClock.Instant {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let t = clock.started.withLock({ $0[id] }) { return t }
            try await Task.sleep(for: .microseconds(200))
        }
        throw ValidationError("task \(id) did not start within 60 s")
    }

    func waitGone(_ root: String) async throws {
        for _ in 0..<300 {
            if (try? FileManager.default.contentsOfDirectory(atPath: root + "/alloc"))?.isEmpty ?? true { return }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// `many` raw_exec tasks at once: RSS added per running task, start latency of the first
    /// and last ten, and processes per task.
    func scale() async throws {
        let clock = Clock()
        let root = "\(dir)/scale"
        let ex = makeExecutor(root, clock: clock)
        let me = getpid()
        let before = rssKiB(me)
        let baseline = children(of: me)
        var live: [Assignment] = []
        var ms: [Double] = []
        for i in 0..<many {
            let a = assignment(i, .rawExec, image: "", command: ["/bin/sleep", "600"])
            live.append(a)
            let t0 = ContinuousClock.now
            await ex.sync(live)
            let t1 = try await waitStarted(clock, a.allocation.id)
            ms.append(Double((t1 - t0) / .microseconds(1)) / 1000)
        }
        try await Task.sleep(for: .seconds(1))
        let after = rssKiB(me)
        let procs = children(of: me) - baseline
        let first = Array(ms.prefix(10)), last = Array(ms.suffix(10))
        print(String(format: "raw_exec × %d running: agent RSS +%.1f MiB (%.1f KiB per task); processes per task %.2f (the task itself: no helper)",
                     many, Double(after - before) / 1024, Double(after - before) / Double(many), Double(procs) / Double(many)))
        print(String(format: "raw_exec start with 0–9 running: p50 %.1f ms; with %d–%d running: p50 %.1f ms",
                     Self.percentile(first, 0.5), many - 10, many - 1, Self.percentile(last, 0.5)))
        await ex.sync([])
        try await waitGone(root)
    }

    /// Processes whose parent is `pid`.
    func children(of pid: Int32) -> Int {
        var n = 0
        for p in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int32(p) != nil {
            guard let stat = try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == pid { n += 1 }
        }
        return n
    }
}
