import API
import Foundation
import Testing

/// The whole product in one scenario, checked only through the CLI's `--json` output: three
/// agents with a key elect a leader; a 4-instance service submitted to a follower runs spread
/// over them; the agent holding the most instances is SIGKILLed and its instances are replaced;
/// then the leader is SIGKILLed, a new one is elected, the job still runs and an update sent
/// to a surviving agent is applied; both killed agents come back and nothing is duplicated.
///
/// The agents use 127.0.N.2–4 of a range of their own (not 127.0.0.x), so the scenario can run
/// beside the other suites and beside a development cluster.
@Suite struct HeadlineEndToEndTests {
    enum Variant: String, CaseIterable, Sendable { case rawExec = "raw_exec", container }

    static func jobs(_ c: LocalCluster, _ i: Int) -> [JobStatusView]? {
        guard let r = try? c.cli(i, ["job", "status", "--json"]), r.status == 0 else { return nil }
        return try? JSONDecoder().decode([JobStatusView].self, from: Data(r.stdout.utf8))
    }

    static func members(_ c: LocalCluster, _ i: Int) -> [MemberView]? {
        guard let r = try? c.cli(i, ["members", "--json"]), r.status == 0 else { return nil }
        return try? JSONDecoder().decode([MemberView].self, from: Data(r.stdout.utf8))
    }

    /// The job's instances meant to run (desired `run`, not lost), by allocation.
    static func current(_ st: JobStatusView) -> [AllocationView] {
        st.allocations.filter { $0.desiredStatus == "run" && $0.clientStatus != "lost" }
    }

    static func jobFile(_ variant: Variant, registry: String, release: String) -> String {
        let task: String
        switch variant {
        case .rawExec:
            task = """
                    driver: raw_exec
                    config:
                      command: /bin/sh
                      args: ["-c", "echo release $RELEASE; exec sleep 3600"]
            """
        case .container:
            task = """
                    driver: container
                    config:
                      image: \(registry)/busybox:1.36
                      command: httpd
                      args: ["-f", "-p", "${CARAVAN_ADDR_http}"]
            """
        }
        return """
            id: headline
            type: service
            groups:
              - name: web
                count: 4
                network: {ports: [{label: http}]}
            \(variant == .container ? "    services:\n      - {name: web, port: http, checks: [{type: http, path: /, interval: 500ms, timeout: 400ms}]}\n" : "")    tasks:
                  - name: server
            \(task)
                    env: {RELEASE: "\(release)"}
                    resources: {cpu: 100m, memory: 32Mi}
            """
    }

    @Test(arguments: Variant.allCases)
    func submitAnywhereSurviveAWorkerAndTheLeaderAndRejoin(_ variant: Variant) async throws {
        var registry = ""
        var registryDir: String?
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Deploy/registry.sh").standardized.path
        if variant == .container {
            guard ContainerEndToEndTests.canRun else { return }  // needs root and runc (CI has both)
            registry = "127.0.0.1:\(5300 + Int(getpid() % 40))"
            let dir = NSTemporaryDirectory() + "caravan-headline-registry-\(getpid())"
            let up = try LocalCluster.run(["up", registry, dir], executable: script)
            try #require(up.status == 0, "\(up.stderr)")
            registryDir = dir
        }
        defer {
            if let registryDir {
                _ = try? LocalCluster.run(["down", registryDir], executable: script)
                try? FileManager.default.removeItem(atPath: registryDir)
            }
        }

        // 1. Three agents with a key; one leader.
        let c = try await LocalCluster(subnet: variant == .rawExec ? 70 : 71)
        let key = try LocalCluster.run(["keygen"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let all = [1, 2, 3]
        for i in all { try c.start(i, key: key, join: [1]) }
        let leader = try await RaftEndToEndTests.agreedLeader(c, all, within: .seconds(30))
        try await c.eventually(within: .seconds(20), "three nodes ready") {
            guard let r = try? c.cli(leader, ["node", "status", "--json"]), r.status == 0,
                  let nodes = try? JSONDecoder().decode([NodeView].self, from: Data(r.stdout.utf8)) else { return false }
            return nodes.filter { $0.status == "ready" }.count == 3
        }

        // 2. A 4-instance service, submitted to a follower.
        let follower = all.first { $0 != leader }!
        let v1 = try ExecutorEndToEndTests.write(Self.jobFile(variant, registry: registry, release: "1"), "headline-\(variant.rawValue)-1")
        let run = try c.cli(follower, ["job", "run", "--timeout", "120", v1])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")

        // 3. All four run, spread over the three nodes (instances of a group avoid sharing a node while others have room).
        let placed = try #require(JobEndToEndTests.job(c, leader, "headline"))
        let live = Self.current(placed)
        #expect(live.count == 4 && live.allSatisfy { $0.clientStatus == "running" }, "\(live.map { ($0.name, $0.clientStatus) })")
        let perNode = Dictionary(grouping: live, by: \.node).mapValues(\.count)
        #expect(perNode.count == 3 && perNode.values.sorted() == [1, 1, 2], "\(perNode)")
        if variant == .container { #expect(placed.groups.first?.healthy == 4) }

        // 4. SIGKILL the agent holding the most instances: they are lost and run again on the survivors.
        let busiest = perNode.max { $0.value < $1.value }!.key
        let victim = all.first { "agent-\($0)" == busiest }!
        let victimPids = live.filter { $0.node == busiest }.compactMap { ExecutorEndToEndTests.startedPid($0, "server") }
        c.kill(victim)
        let survivors = all.filter { $0 != victim }
        try await c.eventually(within: .seconds(60), every: .milliseconds(250), "the lost instances run again on the survivors") {
            guard let st = JobEndToEndTests.job(c, survivors[0], "headline") else { return false }
            let now = Self.current(st)
            return st.allocations.filter { $0.node == busiest && $0.clientStatus == "lost" }.count == 2
                && now.count == 4 && now.allSatisfy { $0.node != busiest && $0.clientStatus == "running" }
        }
        // It comes back: it rejoins, and the tasks of its lost instances are stopped, not run twice.
        try c.start(victim, key: key, join: [survivors[0]])
        try await c.eventually(within: .seconds(30), every: .milliseconds(250), "the restarted agent rejoins and stops its lost tasks") {
            guard let ms = Self.members(c, victim), ms.filter({ $0.status == "alive" }).count == 3 else { return false }
            return victimPids.allSatisfy { Foundation.kill($0, 0) != 0 }
        }

        // 5. SIGKILL the leader: a new one is elected, the job is still there and still runs,
        //    and an update sent to a surviving agent is applied.
        let leader2 = try await RaftEndToEndTests.agreedLeader(c, all, within: .seconds(30))
        c.kill(leader2)
        let remaining = all.filter { $0 != leader2 }
        let leader3 = try await RaftEndToEndTests.agreedLeader(c, remaining, within: .seconds(30), not: leader2)
        try await c.eventually(within: .seconds(60), every: .milliseconds(250), "four instances run on the two live agents") {
            guard let st = JobEndToEndTests.job(c, leader3, "headline") else { return false }
            let now = Self.current(st)
            return now.count == 4 && now.allSatisfy { $0.node != "agent-\(leader2)" && $0.clientStatus == "running" }
        }
        let other = remaining.first { $0 != leader3 }!
        let v2 = try ExecutorEndToEndTests.write(Self.jobFile(variant, registry: registry, release: "2"), "headline-\(variant.rawValue)-2")
        let update = try c.cli(other, ["job", "run", "--timeout", "120", v2])
        #expect(update.status == 0, "\(update.stdout)\(update.stderr)")
        let updated = try #require(JobEndToEndTests.job(c, other, "headline"))
        #expect(updated.version == 1)
        #expect(Self.current(updated).filter { $0.jobVersion == 1 && $0.clientStatus == "running" }.count == 4)

        // 6. The killed leader comes back too: every member alive everywhere, one running instance per name.
        try c.start(leader2, key: key, join: [other])
        try await c.eventually(within: .seconds(30), every: .milliseconds(250), "all three alive as every agent sees it") {
            all.allSatisfy { i in Self.members(c, i).map { $0.count == 3 && $0.allSatisfy { $0.status == "alive" } } ?? false }
        }
        try await c.eventually(within: .seconds(30), every: .milliseconds(250), "nothing duplicated") {
            guard let st = JobEndToEndTests.job(c, leader2, "headline"),
                  let jobs = Self.jobs(c, leader2), jobs.map(\.id) == ["headline"] else { return false }
            let running = st.allocations.filter { $0.clientStatus == "running" }
            return running.count == 4 && Set(running.map(\.name)).count == 4 && running.allSatisfy { $0.desiredStatus == "run" && $0.jobVersion == 1 }
        }
        try await c.eventually(within: .seconds(30), every: .milliseconds(250), "the restarted leader follows the group again") {
            c.status(leader2)?.leader != nil
        }
    }
}
