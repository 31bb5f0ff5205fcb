import API
import Foundation
import Testing

/// Allocations really run on the agents: output, task events, restarts by policy, and tasks
/// that keep running (and are found again) when their agent is SIGKILLed and restarted.
@Suite struct ExecutorEndToEndTests {
    static func alloc(_ c: LocalCluster, _ i: Int, _ id: String) -> AllocationView? {
        guard let r = try? c.cli(i, ["alloc", "status", id, "--json"]), r.status == 0 else { return nil }
        return try? JSONDecoder().decode(AllocationView.self, from: Data(r.stdout.utf8))
    }

    static func write(_ text: String, _ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "\(name)-\(getpid()).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The pid a task was started with, from its newest "Started" event.
    static func startedPid(_ a: AllocationView, _ task: String) -> Int32? {
        guard let e = a.taskStates[task]?.events.last(where: { $0.type == "Started" }),
              let r = e.message.range(of: "pid ") else { return nil }
        return Int32(e.message[r.upperBound...].prefix { $0.isNumber })
    }

    @Test func tasksRunLogAndSurviveTheirAgentBeingKilled() async throws {
        let c = try await LocalCluster(subnet: 54)
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        let job = try Self.write("""
            id: ticker
            groups:
              - name: g
                count: 1
                network: {ports: [{label: http}]}
                tasks:
                  - name: tick
                    driver: raw_exec
                    config: {command: /bin/sh, args: ["-c", "echo port=$CARAVAN_PORT_http; echo err >&2; while true; do sleep 0.2; done"]}
                    resources: {cpu: 50m, memory: 16Mi}
            """, "ticker")
        let run = try c.cli(0, ["job", "run", job])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("1 running"), "\(run.stdout)")
        let st = try #require(JobEndToEndTests.job(c, 0, "ticker"))
        let id = try #require(st.allocations.first?.id)
        let a = try #require(Self.alloc(c, 0, String(id.prefix(8))))
        #expect(a.clientStatus == "running" && a.taskStates["tick"]?.state == "running")
        let port = try #require(a.ports["http"])
        // Its output, through the CLI (stdout and stderr apart).
        try await c.eventually(within: .seconds(5), "the task's output") {
            (try? c.cli(0, ["alloc", "logs", id]))?.stdout == "port=\(port)\n"
        }
        #expect(try c.cli(0, ["alloc", "logs", "--stderr", id, "tick"]).stdout == "err\n")
        let pid = try #require(Self.startedPid(a, "tick"))
        #expect(Foundation.kill(pid, 0) == 0)

        // SIGKILL the agent: the task keeps running; the restarted agent finds it and does not restart it.
        c.kill(0)
        #expect(Foundation.kill(pid, 0) == 0, "the task outlives its agent")
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        try await c.eventually(within: .seconds(10), "the agent found its task again") { c.log(0).contains("found running tasks again") }
        let again = try #require(Self.alloc(c, 0, id))
        #expect(again.clientStatus == "running")
        #expect(again.taskStates["tick"]?.restarts == 0)
        #expect(Self.startedPid(again, "tick") == pid)

        // A command inside the task, through any agent: its environment, its output, its exit status.
        // (The address goes first: everything after the task is the command.)
        let ex = try LocalCluster.run(["alloc", "exec", "--address", "http://\(c.ip(0)):4680", String(id.prefix(8)), "tick",
                                       "--", "/bin/sh", "-c", "echo $CARAVAN_TASK_NAME; exit 3"])
        #expect(ex.stdout == "tick\n" && ex.status == 3, "\(ex.stdout)\(ex.stderr)")
        let none = try LocalCluster.run(["alloc", "exec", "--address", "http://\(c.ip(0)):4680", id, "nosuch", "true"])
        #expect(none.status == 2 && none.stderr.contains("no task nosuch"), "\(none.stderr)")

        // Stopping the job kills the task.
        #expect(try c.cli(0, ["job", "stop", "ticker"]).status == 0)
        try await c.eventually(within: .seconds(10), "the task is killed") { Foundation.kill(pid, 0) != 0 }
        try await c.eventually(within: .seconds(10), "the allocation is complete") { Self.alloc(c, 0, id)?.clientStatus == "complete" }
    }

    /// `caravan alloc exec -i/-t` through an agent that does not run the allocation (the stream
    /// is relayed both ways): input in, output and stderr out as written, the exit status, a
    /// terminal when asked for.
    @Test func interactiveExecStreamsBothWaysThroughAnyAgent() async throws {
        let c = try await LocalCluster(subnet: 75)
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        try c.start(1, join: [0])
        try await c.eventually(within: .seconds(30), "agent-1 is a node") {
            guard let r = try? c.cli(0, ["node", "status", "--json"]), r.status == 0,
                  let nodes = try? JSONDecoder().decode([NodeView].self, from: Data(r.stdout.utf8)) else { return false }
            return nodes.contains { $0.id == "agent-1" && $0.status == "ready" }
        }
        let job = try Self.write("""
            id: shell
            constraints: [{attribute: "${attr.unique.hostname}", value: agent-1}]
            groups:
              - name: g
                tasks:
                  - {name: t, driver: raw_exec, config: {command: /bin/sleep, args: ["300"]}, resources: {cpu: 10m, memory: 8Mi}}
            """, "shell")
        let run = try c.cli(0, ["job", "run", job])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        let a = try #require(JobEndToEndTests.job(c, 0, "shell")?.allocations.first)
        #expect(a.node == "agent-1")
        let id = String(a.id.prefix(8))

        // (The address goes before the command: everything after TASK is the command's.)
        func exec(_ i: Int, _ args: [String], stdin: String? = nil) throws -> LocalCluster.Output {
            try LocalCluster.run(["alloc", "exec", "--address", "http://\(c.ip(i)):4680"] + args, stdin: stdin)
        }
        let cat = try exec(0, ["-i", id, "t", "cat"], stdin: "hello\nworld\n")
        #expect(cat.status == 0 && cat.stdout == "hello\nworld\n", "\(cat)")
        let split = try exec(0, ["-i", id, "t", "sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(split.status == 3 && split.stdout == "out\n" && split.stderr == "err\n", "\(split)")
        let term = try exec(0, ["-t", id, "t", "sh", "-c", "tty; stty size; echo $TERM"])
        #expect(term.status == 0 && term.stdout.contains("/dev/pts/") && term.stdout.contains("24 80") && term.stdout.contains("xterm"), "\(term)")
        let shell = try exec(0, ["-t", id, "t", "sh"], stdin: "echo hi-$((1+1))\nexit 5\n")
        #expect(shell.status == 5 && shell.stdout.contains("hi-2"), "\(shell)")
        // The same on the agent that runs it.
        #expect(try exec(1, ["-i", id, "t", "cat"], stdin: "direct\n").stdout == "direct\n")
        let missing = try exec(0, ["-i", "ffffffff", "t", "cat"])
        #expect(missing.status != 0 && missing.stderr.contains("no allocation ffffffff"), "\(missing)")
        let noTask = try exec(0, ["-i", id, "nosuch", "cat"])
        #expect(noTask.status != 0 && noTask.stderr.contains("no task nosuch"), "\(noTask)")
    }

    @Test func aCrashingTaskRestartsThenFailsAndJobRunSaysWhy() async throws {
        let c = try await LocalCluster(subnet: 55)
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        let job = try Self.write("""
            id: crasher
            type: batch
            groups:
              - name: g
                restart: {attempts: 2, interval: 1m, delay: 100ms, mode: fail}
                reschedule: {attempts: 0, unlimited: false}
                tasks:
                  - name: boom
                    driver: raw_exec
                    config: {command: /bin/sh, args: ["-c", "echo crashing; exit 3"]}
                    resources: {cpu: 50m, memory: 16Mi}
            """, "crasher")
        let run = try c.cli(0, ["job", "run", job])
        #expect(run.status == 1, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("Exceeded allowed attempts 2"), "\(run.stdout)")
        let st = try #require(JobEndToEndTests.job(c, 0, "crasher"))
        let allocID = try #require(st.allocations.first?.id)
        let a = try #require(Self.alloc(c, 0, allocID))
        #expect(a.clientStatus == "failed")
        let t = try #require(a.taskStates["boom"])
        #expect(t.failed && t.restarts == 2 && t.exitCode == 3)
        #expect(t.events.filter { $0.type == "Terminated" }.count == 3)
        // A command that does not exist: a clear event, not a hang.
        let missing = try Self.write("""
            id: missing
            type: batch
            groups:
              - name: g
                tasks:
                  - {name: t, driver: raw_exec, config: {command: /no/such/program}, resources: {cpu: 50m, memory: 16Mi}}
            """, "missing")
        let r2 = try c.cli(0, ["job", "run", "--timeout", "40", missing])
        #expect(r2.status == 1)
        #expect(r2.stdout.contains("command /no/such/program not found"), "\(r2.stdout)")
    }
}

/// The container driver through real agents: an image from a registry on loopback, health-checked,
/// reachable, and still the same container after its agent is SIGKILLed and restarted.
@Suite struct ContainerEndToEndTests {
    static var canRun: Bool { geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/runc") }

    @Test(.enabled(if: canRun)) func aContainerServiceRunsHealthyAndSurvivesItsAgent() async throws {
        // A registry of our own with busybox:1.36.
        let registry = "127.0.0.1:\(5250 + Int(getpid() % 40))"
        let dir = NSTemporaryDirectory() + "caravan-e2e-registry-\(getpid())"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Deploy/registry.sh").standardized.path
        let up = try LocalCluster.run(["up", registry, dir], executable: script)
        try #require(up.status == 0, "\(up.stderr)")
        defer {
            _ = try? LocalCluster.run(["down", dir], executable: script)
            try? FileManager.default.removeItem(atPath: dir)
        }
        let c = try await LocalCluster(subnet: 60)
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        let job = try ExecutorEndToEndTests.write("""
            id: web
            groups:
              - name: web
                count: 2
                network: {ports: [{label: http}]}
                services:
                  - {name: web, port: http, checks: [{type: http, path: /, interval: 500ms, timeout: 400ms}]}
                tasks:
                  - name: server
                    driver: container
                    config:
                      image: \(registry)/busybox:1.36
                      command: httpd
                      args: ["-f", "-p", "${CARAVAN_ADDR_http}"]
                    resources: {cpu: 100m, memory: 32Mi}
            """, "web-e2e")
        let run = try c.cli(0, ["job", "run", job])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("2 healthy"), "\(run.stdout)")
        let st = try #require(JobEndToEndTests.job(c, 0, "web"))
        let a = try #require(st.allocations.first { $0.desiredStatus == "run" })
        let port = try #require(a.ports["http"])
        // Reachable from inside another task's container too (host network).
        let fetch = try LocalCluster.run(["alloc", "exec", "--address", "http://\(c.ip(0)):4680", a.id, "server",
                                          "--", "wget", "-qO-", "http://\(c.ip(0)):\(port)/"])
        #expect(fetch.stdout == "hello from a caravan container\n", "\(fetch.stdout)\(fetch.stderr)")
        let view = try #require(ExecutorEndToEndTests.alloc(c, 0, a.id))
        let pid = try #require(ExecutorEndToEndTests.startedPid(view, "server"))
        #expect(view.checks.values.allSatisfy { $0 == "passing" })

        c.kill(0)
        #expect(Foundation.kill(pid, 0) == 0, "the container outlives its agent")
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        try await c.eventually(within: .seconds(15), "found again, not restarted") {
            guard let v = ExecutorEndToEndTests.alloc(c, 0, a.id) else { return false }
            return v.clientStatus == "running" && v.taskStates["server"]?.restarts == 0 && ExecutorEndToEndTests.startedPid(v, "server") == pid
        }
        #expect(try c.cli(0, ["job", "stop", "web"]).status == 0)
        try await c.eventually(within: .seconds(20), "the containers are gone") { Foundation.kill(pid, 0) != 0 }
    }
}
