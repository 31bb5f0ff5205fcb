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
        let c = try LocalCluster(subnet: 52)
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
        let c = try LocalCluster(subnet: 53)
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
}
