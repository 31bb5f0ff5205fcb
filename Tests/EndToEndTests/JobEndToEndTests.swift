import API
import Foundation
import Testing

/// Jobs submitted to real agents: bad job files and unplaceable jobs explained, periodic jobs
/// launched (placement, replacement and leader loss are in HeadlineEndToEndTests).
@Suite struct JobEndToEndTests {
    static var examples: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Deploy/examples").standardized.path
    }

    static func job(_ c: LocalCluster, _ i: Int, _ id: String) -> JobStatusView? {
        guard let r = try? c.cli(i, ["job", "status", id, "--json"]), r.status == 0 else { return nil }
        return try? JSONDecoder().decode(JobStatusView.self, from: Data(r.stdout.utf8))
    }

    @Test func badJobFilesAndUnplaceableJobsAreExplained() async throws {
        let c = try await LocalCluster(subnet: 52)
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        let bad = NSTemporaryDirectory() + "bad-\(getpid()).yaml"
        try "id: x\ngroups:\n  - name: g\n    tasks:\n      - {name: t, driver: docker}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let r = try c.cli(0, ["job", "run", bad])
        #expect(r.status == 2)
        #expect(r.stderr.contains("\(bad):5: groups[0].tasks[0].driver: \"docker\" is not one of raw_exec, exec, container"), "\(r.stderr)")
        // The API refuses the same file with the same message.
        let api = try CaravanClient(address: "http://\(c.ip(0)):4680")
        await #expect(throws: ClientError.self) { _ = try await api.registerJob("id: x\ngroups: []\n") }

        let huge = NSTemporaryDirectory() + "huge-\(getpid()).yaml"
        try "id: huge\ngroups:\n  - name: g\n    tasks:\n      - {name: t, driver: raw_exec, config: {command: /bin/true}, resources: {cpu: 1000000m, memory: 64Mi}}\n"
            .write(toFile: huge, atomically: true, encoding: .utf8)
        let h = try c.cli(0, ["job", "run", huge, "--timeout", "10"])
        #expect(h.status == 1)
        #expect(h.stdout.contains("cpu exhausted on 1 node"), "\(h.stdout) \(h.stderr)")
        // Its evaluation says so; once the job asks for what fits, the blocked one is answered too.
        func evals() throws -> [EvaluationView] {
            try JSONDecoder().decode([EvaluationView].self, from: Data(try c.cli(0, ["eval", "list", "--job", "huge", "--json"]).stdout.utf8))
        }
        #expect(try evals().contains { $0.status == "blocked" && $0.failedPlacements["g"]?.contains("cpu exhausted") == true })
        try "id: huge\ngroups:\n  - name: g\n    tasks:\n      - {name: t, driver: raw_exec, config: {command: /bin/sleep, args: [\"60\"]}, resources: {cpu: 10m, memory: 8Mi}}\n"
            .write(toFile: huge, atomically: true, encoding: .utf8)
        let fits = try c.cli(0, ["job", "run", huge])
        #expect(fits.status == 0, "\(fits.stdout)\(fits.stderr)")
        try await c.eventually(within: .seconds(10), "no evaluation of the job is left blocked") {
            let all = try evals()
            return !all.isEmpty && all.allSatisfy { $0.status == "complete" }
        }
        #expect(try c.cli(0, ["job", "stop", "--purge", "huge"]).status == 0)

        // A dry run changes nothing and says what would happen.
        let plan = try c.cli(0, ["job", "plan", Self.examples + "/hello.yaml"])
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(plan.stdout.contains("3 to place, 0 to stop"), "\(plan.stdout)")
        #expect(Self.job(c, 0, "hello") == nil, "a plan commits nothing")

        // Versions: every changed registration is one; reverting registers an old one again.
        #expect(try c.cli(0, ["job", "run", "--detach", Self.examples + "/hello.yaml"]).status == 0)
        let five = NSTemporaryDirectory() + "hello5-\(getpid()).yaml"
        try String(contentsOfFile: Self.examples + "/hello.yaml", encoding: .utf8).replacingOccurrences(of: "count: 3", with: "count: 5")
            .write(toFile: five, atomically: true, encoding: .utf8)
        #expect(try c.cli(0, ["job", "run", "--detach", five]).status == 0)
        let history = try c.cli(0, ["job", "history", "hello", "--json"])
        let versions = try JSONDecoder().decode([JobVersionView].self, from: Data(history.stdout.utf8))
        #expect(versions.map(\.version) == [1, 0])
        #expect(try c.cli(0, ["job", "revert", "hello", "0"]).status == 0)
        try await c.eventually(within: .seconds(10), "the reverted job is back to 3 instances") {
            Self.job(c, 0, "hello").map { $0.version == 2 && $0.groups[0].desired == 3 && $0.groups[0].placed == 3 } ?? false
        }
        #expect(try c.cli(0, ["job", "revert", "hello", "9"]).status == 2)

        // Draining the only node evicts what runs there and takes no new work.
        let drain = try c.cli(0, ["node", "drain", "agent-0"])
        #expect(drain.status == 0, "\(drain.stderr)")
        let nodes = try c.cli(0, ["node", "status", "--json"])
        let view = try JSONDecoder().decode([NodeView].self, from: Data(nodes.stdout.utf8))
        #expect(view.first?.draining == true && view.first?.eligibility == "ineligible")
        let missing = try c.cli(0, ["node", "drain", "nobody"])
        #expect(missing.status == 2 && missing.stderr.contains("node nobody is not registered"))
    }

    @Test func aPeriodicJobLaunchesABatchJobOnItsSchedule() async throws {
        let c = try await LocalCluster(subnet: 53)
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        let file = NSTemporaryDirectory() + "tick-\(getpid()).yaml"
        try "id: tick\ntype: batch\nperiodic: {cron: \"* * * * *\", timeZone: Asia/Kolkata, prohibitOverlap: false}\ngroups:\n  - name: g\n    tasks:\n      - {name: t, driver: raw_exec, config: {command: /bin/true}, resources: {cpu: 10m, memory: 8Mi}}\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let run = try c.cli(0, ["job", "run", "--detach", file])
        #expect(run.status == 0, "\(run.stderr)")
        // Within the next minute boundary (plus a pass of the leader's loop) a launch appears.
        var child: JobStatusView?
        try await c.eventually(within: .seconds(75), every: .milliseconds(500), "a periodic launch") {
            guard let r = try? c.cli(0, ["job", "status", "--json"]), r.status == 0,
                  let all = try? JSONDecoder().decode([JobStatusView].self, from: Data(r.stdout.utf8)) else { return false }
            child = all.first { $0.id.hasPrefix("tick-periodic-") }
            return child != nil
        }
        // It is placed and runs to completion (/bin/true).
        try await c.eventually(within: .seconds(30), "the launch runs") {
            Self.job(c, 0, child!.id).map { $0.groups[0].complete == 1 && $0.status == "dead" } ?? false
        }
        // The periodic job itself is a template: nothing of it is placed.
        #expect(Self.job(c, 0, "tick")?.allocations.isEmpty == true)
        #expect(c.log(0).contains("periodic launch"))
    }

    /// A canary rollout through the CLI: the new version's canary runs beside the old
    /// instances, `job run` stops there, `job promote` lets the rest roll over; the agent being
    /// killed and restarted in the middle changes nothing.
    @Test func aCanaryRunsBesideTheOldInstancesUntilPromoted() async throws {
        let c = try await LocalCluster(subnet: 74)
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        let file = NSTemporaryDirectory() + "canary-\(getpid()).yaml"
        func write(_ seconds: Int) throws {
            try """
            id: canary
            update: {maxParallel: 1, canary: 1, minHealthyTime: 1s}
            groups:
              - name: g
                count: 3
                tasks: [{name: t, driver: raw_exec, config: {command: /bin/sleep, args: ["\(seconds)"]}, resources: {cpu: 10m, memory: 8Mi}}]
            """.write(toFile: file, atomically: true, encoding: .utf8)
        }
        try write(300)
        let v0 = try c.cli(0, ["job", "run", file])
        #expect(v0.status == 0, "\(v0.stdout)\(v0.stderr)")
        let none = try c.cli(0, ["job", "promote", "canary"])
        #expect(none.status != 0 && none.stderr.contains("no canaries waiting"), "\(none.stderr)")

        try write(301)
        let v1 = try c.cli(0, ["job", "run", file])
        #expect(v1.status == 0 && v1.stdout.contains("Canaries of version 1 are healthy"), "\(v1.stdout)\(v1.stderr)")
        func live(_ version: Int) -> Int {
            Self.job(c, 0, "canary")?.allocations.filter { $0.desiredStatus == "run" && $0.clientStatus == "running" && $0.jobVersion == version }.count ?? -1
        }
        #expect(live(0) == 3 && live(1) == 1, "three old instances and one canary")
        let status = try c.cli(0, ["job", "status", "canary"])
        #expect(status.stdout.contains("Version 1 awaits promotion: 1 canary placed, 1 healthy"), "\(status.stdout)")

        // The agent dies and comes back: still waiting, nothing replaced meanwhile.
        c.kill(0)
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        try await c.eventually(within: .seconds(20), "the restarted agent reports the same instances") { live(0) == 3 && live(1) == 1 }
        #expect(Self.job(c, 0, "canary")?.awaitingPromotion == true)

        let promote = try c.cli(0, ["job", "promote", "canary"])
        #expect(promote.status == 0 && promote.stdout.contains("version 1 promoted"), "\(promote.stdout)\(promote.stderr)")
        try await c.eventually(within: .seconds(40), "the rest rolls over to version 1") { live(0) == 0 && live(1) == 3 }
        #expect(Self.job(c, 0, "canary")?.awaitingPromotion == false)
        let history = try JSONDecoder().decode([JobVersionView].self, from: Data(try c.cli(0, ["job", "history", "canary", "--json"]).stdout.utf8))
        try await c.eventually(within: .seconds(10), "version 1 becomes stable") {
            (try? JSONDecoder().decode([JobVersionView].self, from: Data(try c.cli(0, ["job", "history", "canary", "--json"]).stdout.utf8)))?
                .first { $0.version == 1 }?.stable == true
        }
        #expect(history.map(\.version) == [1, 0])
    }

    /// The job files that once were stored and then trapped every leader in turn (huge
    /// durations, CPU, memory, a `?wait` too large for the clock) are refused at the door with the
    /// field and its bound; the cluster keeps its leader (and elects another when it is killed),
    /// answers reads and places other jobs.
    @Test func overflowJobsAreRefusedAndTheClusterCarriesOn() async throws {
        let c = try await LocalCluster(subnet: 78)
        try c.start(0)
        for i in 1...2 { try c.start(i, join: [0]) }
        let leader = try await RaftEndToEndTests.agreedLeader(c, [0, 1, 2])
        let api = c.agent((leader + 1) % 3).api
        func job(_ id: String, update: String = "", task: String = "") -> String {
            "id: \(id)\n\(update)groups:\n  - name: g\n    tasks:\n      - name: t\n        driver: raw_exec\n        config: {command: /bin/sleep, args: ['3600']}\n        resources: {cpu: 20m, memory: 16Mi}\n\(task)"
        }
        let hostile = [
            job("o1", update: "update: {minHealthyTime: 9223372036854775}\n"),
            job("o2", task: "        killTimeout: 9223372036854775807\n"),
            job("o3", task: "        killTimeout: 30000000000000000m\n"),
            job("o4").replacingOccurrences(of: "cpu: 20m", with: "cpu: 10000000000000000"),
            job("o5").replacingOccurrences(of: "memory: 16Mi", with: "memory: 1e300Gi"),
        ]
        for text in hostile {
            do {
                _ = try await api.registerJob(text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.code == .api(status: 400, code: "invalid_job") && error.message.contains("at most"), "\(error)")
            }
        }
        let wait = try await api.send(.GET, "/v1/jobs?wait=9223372036854775807h")
        #expect(wait.status == 200)
        // Still one leader, still placing work; and after the leader goes, another one does.
        _ = try await api.registerJob(job("fine"))
        try await c.eventually(within: .seconds(30), "the fine job runs") {
            (try? await api.job("fine"))?.allocations.contains { $0.clientStatus == "running" } == true
        }
        c.kill(leader)
        let alive = (0...2).filter { $0 != leader }
        _ = try await RaftEndToEndTests.agreedLeader(c, alive, not: leader)
        let survivor = c.agent(alive[0]).api
        _ = try await survivor.registerJob(job("after").replacingOccurrences(of: "sleep", with: "cat"))
        try await c.eventually(within: .seconds(30), "a job registered after the leader's death is placed") {
            (try? await survivor.job("after"))?.allocations.isEmpty == false
        }
        #expect(try await survivor.jobs().map(\.id).sorted() == ["after", "fine"])
    }
}
