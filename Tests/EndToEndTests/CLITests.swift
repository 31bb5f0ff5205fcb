import API
import Foundation
import Testing

/// The CLI's promises that need no cluster: completion scripts, and `--json` on every command
/// that reports something.
@Suite struct CLITests {
    @Test func completionScriptsAreGeneratedForEachShell() throws {
        for shell in ["bash", "zsh", "fish"] {
            let r = try LocalCluster.run(["--generate-completion-script", shell])
            #expect(r.status == 0, "\(shell): \(r.stderr)")
            for word in ["job", "alloc", "node", "keyring", "operator"] {
                #expect(r.stdout.contains(word), "the \(shell) script offers \(word)")
            }
        }
    }

    @Test func everyReportingCommandOffersJSON() throws {
        let commands = [
            ["job", "run"], ["job", "plan"], ["job", "status"], ["job", "stop"], ["job", "history"], ["job", "revert"], ["job", "validate"],
            ["alloc", "status"], ["alloc", "exec"], ["node", "status"], ["node", "drain"], ["node", "eligibility"], ["members"], ["status"],
            ["keyring", "list"], ["keyring", "install"], ["keyring", "use"], ["keyring", "remove"],
            ["var", "put"], ["var", "get"], ["var", "list"], ["var", "delete"],
            ["operator", "raft", "peers"], ["operator", "raft", "transfer-leader"], ["operator", "scheduler", "get-config"],
            ["operator", "scheduler", "set-config"], ["eval", "list"], ["eval", "status"], ["leave"],
        ]
        for c in commands {
            let r = try LocalCluster.run(c + ["--help"])
            #expect(r.status == 0 && r.stdout.contains("--json"), "caravan \(c.joined(separator: " ")) has no --json")
        }
    }
}

/// `caravan agent --config FILE`: the example file works, flags win over it, and a bad file is
/// refused with its file, line and key before anything starts.
@Suite struct AgentConfigFileTests {
    static var example: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Deploy/agent.yaml").standardized.path
    }

    @Test func badConfigFilesAreRefusedWithFileLineAndKey() throws {
        let dir = NSTemporaryDirectory() + "caravan-config-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (text, message) in [
            ("bind: 127.0.73.2\nnmae: x\n", ":2: nmae: unknown setting"),
            ("bind: 127.0.73.2\njoin: {a: b}\n", ":2: join: expected a list of values, found a mapping"),
            ("bind: 127.0.73.2\nports: {http: 80x}\n", "ports.http: \"80x\" is not a port"),
            ("bind: 127.0.73.2\nports: {web: 80}\n", ":2: ports.web: unknown port"),
            ("bind: 127.0.73.2\nbootstrapExpect: many\n", ":2: bootstrapExpect: \"many\" is not a whole number"),
            ("- a list\n", ":1: expected a mapping of agent settings"),
            // Every documented setting is known (raftSnapshotEvery once was not); values are checked.
            ("bind: 127.0.73.2\nraftSnapshotEvery: 5\n", "--raft-snapshot-every: 5 must be 100 to 1000000 entries"),
            ("bind: 127.0.73.2\nmaxQueryWait: 0\n", "--max-query-wait: 0 must be 1 to 3600 seconds"),
            ("bind: 127.0.73.2\ntaskUsers: {denyUids: \"0,x-9\"}\n", "taskUsers.denyUids: \"0,x-9\" is not a list of ids or ranges"),
            ("bind: 127.0.73.2\ntaskUsers: {denyGids: \"9-1\"}\n", "taskUsers.denyGids: \"9-1\" is not a list"),
            ("bind: 127.0.73.2\ntaskUsers: {drivers: \"exec,docker\"}\n", "\"docker\" is not a driver (raw_exec, exec, container)"),
            ("bind: 127.0.73.2\ntaskUsers: {denyUid: 0}\n", "taskUsers.denyUid: unknown setting (denyUids, denyGids, drivers)"),
        ] {
            let path = dir + "/agent.yaml"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let r = try LocalCluster.run(["agent", "--config", path, "--data-dir", dir + "/data"])
            #expect(r.status == 2 && r.stderr.contains(message), "\(text) → \(r.status): \(r.stderr)")
        }
        let missing = try LocalCluster.run(["agent", "--config", dir + "/none.yaml"])
        #expect(missing.status == 2 && missing.stderr.contains("cannot read"))
    }

    @Test func theExampleFileRunsAnAgentAndFlagsWinOverIt() async throws {
        let dir = NSTemporaryDirectory() + "caravan-config-run-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: LocalCluster.binary)
        // The example binds 10.0.0.11 and joins 10.0.0.x: the flags keep it on loopback.
        p.arguments = ["agent", "--config", Self.example, "--bind", "127.0.73.2", "--join", "127.0.73.2", "--data-dir", dir,
                       "--encrypt", LocalCluster.clusterKey]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { Foundation.kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        var seen: MemberView?
        try await eventually(within: .seconds(30), "the agent answers") {
            guard let r = try? LocalCluster.run(["members", "--json", "--address", "http://127.0.73.2:4680"]), r.status == 0,
                  let ms = try? JSONDecoder().decode([MemberView].self, from: Data(r.stdout.utf8)) else { return false }
            seen = ms.first
            return seen != nil
        }
        #expect(seen?.name == "web-1", "the name comes from the file")
        #expect(seen?.tags == ["zone": "a", "rack": "r3"], "so do the tags")
        #expect(seen?.address == "127.0.73.2:4682", "the bind address from the flag wins")
    }

    /// An agent that cannot bind its HTTP port says so and exits 1 at once (it once exited 0
    /// after 3 s, the error swallowed by the shutdown watchdog).
    @Test func anAgentWhoseHTTPPortIsTakenSaysSoAndFails() async throws {
        let dir = NSTemporaryDirectory() + "caravan-port-taken-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = Process()
        first.executableURL = URL(fileURLWithPath: LocalCluster.binary)
        first.arguments = ["agent", "--dev", "--bind", "127.0.73.3", "--data-dir", dir + "/a"]
        first.standardOutput = FileHandle.nullDevice
        first.standardError = FileHandle.nullDevice
        try first.run()
        defer { Foundation.kill(first.processIdentifier, SIGKILL); first.waitUntilExit() }
        try await eventually(within: .seconds(30), "the first agent answers") {
            (try? await CaravanClient(address: "http://127.0.73.3:4680").status()) != nil
        }
        let start = ContinuousClock.now
        let r = try await LocalCluster.runAsync(["agent", "--dev", "--bind", "127.0.73.3", "--rpc-port", "5681", "--gossip-port", "5682",
                                                 "--data-dir", dir + "/b"], limit: .seconds(60))
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("cannot serve the HTTP API on 127.0.73.3:4680"), "\(r.stderr)")
        #expect(ContinuousClock.now - start < .seconds(10))
    }
}
