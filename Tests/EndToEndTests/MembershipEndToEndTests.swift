import API
import Foundation
import Testing

/// Real agents on loopback: what users see through the CLI and the API.
@Suite(.serialized) struct MembershipEndToEndTests {
    static let key = "tFwHuaDyo8QG7cKLsjAhIE0qXMPp0c9o5ZhW0lKxq+8="
    static let otherKey = "K2d5c0Jp1lH2m1Jj3Yy8oJm6D2pQH0bq1M+7ZQm3Xy4="

    @Test func fiveAgentsAgreeAndAKilledOneIsDeadEverywhere() async throws {
        let c = try await LocalCluster(subnet: 41)
        try c.start(0, key: Self.key)
        for i in 1..<5 { try c.start(i, key: Self.key, join: [0]) }
        try await c.eventually(within: .seconds(20), "all five agents list five alive members") { await c.converged(Array(0..<5), alive: 5) }
        // What a user sees: `caravan members --json` on every node agrees.
        let views = try (0..<5).map { try c.membersViaCLI($0).map { "\($0.name) \($0.status) \($0.address)" } }
        #expect(Set(views.map { $0.joined(separator: ",") }).count == 1)
        let first = try c.membersViaCLI(2)
        // Every agent publishes its capacity and its Raft role (voter, learner, or agent outside the group).
        #expect(first.allSatisfy { $0.capacity != nil && ["agent", "voter", "learner"].contains($0.role) })

        c.kill(3)
        let took = try await c.eventually(within: .seconds(15), "every other agent reports agent-3 dead") { await c.all([0, 1, 2, 4], see: "agent-3", as: "dead") }
        print("agent-3 known dead by all in \(took)")
        // The moment is logged with the member's name.
        #expect(c.log(0).contains("member dead") && c.log(0).contains("member=agent-3"))
    }

    @Test func anAgentWithTheWrongKeyCannotJoin() async throws {
        let c = try await LocalCluster(subnet: 42)
        try c.start(0, key: Self.key)
        try c.start(1, key: Self.key, join: [0])
        try c.start(2, key: Self.otherKey, join: [0], name: "intruder")
        try c.start(3, key: nil, join: [0], extra: ["--dev"], name: "plaintext")  // only --dev runs without a key
        // Wait until agent-0 has dropped several of their sealed and plaintext frames.
        try await c.eventually(within: .seconds(20), "agent-0 drops wrong-key and plaintext traffic") {
            guard let s = try? await c.agent(0).api.agentSelf() else { return false }
            return (s.gossip.dropped["unknown_key"] ?? 0) >= 2 && (s.gossip.dropped["plaintext_refused"] ?? 0) >= 2
        }
        for i in 0...1 {
            let names = Set((await c.members(i) ?? []).map(\.name))
            #expect(names == ["agent-0", "agent-1"])
        }
        // The outsiders see nobody.
        #expect((await c.members(2) ?? []).map(\.name) == ["intruder"])
        #expect((await c.members(3) ?? []).map(\.name) == ["plaintext"])
    }

    @Test func keyRotationLosesNoMemberAndKeysNeverShow() async throws {
        let c = try await LocalCluster(subnet: 43)
        try c.start(0, key: Self.key)
        for i in 1..<4 { try c.start(i, key: Self.key, join: [0]) }
        try await c.eventually(within: .seconds(20), "four agents converge") { await c.converged(Array(0..<4), alive: 4) }
        let newKey = try LocalCluster.run(["keygen"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let addr = ["--address", "http://\(c.ip(1)):4680"]
        let install = try LocalCluster.run(["keyring", "install", newKey] + addr)
        #expect(install.status == 0, "\(install.stderr)")
        #expect(install.stdout.contains("on 4/4 nodes"))
        // Removing the primary key is refused (409: the state, not the request, is at fault).
        let refused = try LocalCluster.run(["keyring", "remove", Self.key] + addr)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("primary"))
        #expect(try LocalCluster.run(["keyring", "use", newKey] + addr).status == 0)
        // Read the key from stdin this time.
        let remove = try LocalCluster.run(["keyring", "remove", "-"] + addr, stdin: Self.key + "\n")
        #expect(remove.status == 0, "\(remove.stderr)")
        let list = try LocalCluster.run(["keyring", "list", "--json"] + addr)
        let view = try JSONDecoder().decode(KeyringView.self, from: Data(list.stdout.utf8))
        #expect(view.keys.count == 1 && view.keys.values.first == 4 && view.succeeded == 4)
        // No key material in API answers, logs or the process list.
        #expect(!list.stdout.contains(newKey) && !list.stdout.contains(Self.key))
        for i in 0..<4 {
            #expect(!c.log(i).contains(Self.key) && !c.log(i).contains(newKey))
            let cmdline = try String(contentsOfFile: "/proc/\(c.agent(i).process.processIdentifier)/cmdline", encoding: .utf8)
            #expect(!cmdline.contains(Self.key))
        }
        // Nobody was lost, and the cluster still detects failures with the new key.
        for i in 0..<4 { #expect(await c.view(i)?.values.filter { $0 == "alive" }.count == 4) }
        c.kill(2)
        try await c.eventually(within: .seconds(15), "agent-2 dead everywhere after rotation") { await c.all([0, 1, 3], see: "agent-2", as: "dead") }
        // A restart keeps the rotated keyring (it is persisted in the data dir).
        try c.start(2, key: Self.key, join: [0])
        try await c.eventually(within: .seconds(15), "restarted agent-2 is alive again everywhere") { await c.all(Array(0..<4), see: "agent-2", as: "alive") }
    }

    @Test func anAgentDownDuringARotationRejoinsByItself() async throws {
        let c = try await LocalCluster(subnet: 47)
        try c.start(0, key: Self.key)
        for i in 1..<4 { try c.start(i, key: Self.key, join: [0]) }
        try await c.eventually(within: .seconds(20), "four agents converge") { await c.converged(Array(0..<4), alive: 4) }
        // Let peers persist each other's identity keys, then take agent-3 down for the rotation.
        try await c.eventually(within: .seconds(10), "agent-3 remembers its peers") {
            FileManager.default.fileExists(atPath: c.agent(3).dataDir + "/peers.json")
        }
        c.kill(3)
        try await c.eventually(within: .seconds(15), "agent-3 dead everywhere") { await c.all(Array(0..<3), see: "agent-3", as: "dead") }
        let newKey = try LocalCluster.run(["keygen"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let addr = ["--address", "http://\(c.ip(0)):4680"]
        for step in [["install", newKey], ["use", newKey], ["remove", Self.key]] {
            let r = try LocalCluster.run(["keyring"] + step + addr)
            #expect(r.status == 0, "\(step[0]): \(r.stderr)")
        }
        // agent-3 comes back holding only the removed key, with no --join at all.
        try c.start(3, key: Self.key)
        try await c.eventually(within: .seconds(30), "agent-3 is alive everywhere again") {
            for i in 0..<4 { guard let v = await c.view(i), v["agent-3"] == "alive", v.count == 4 else { return false } }
            return true
        }
        #expect(c.log(3).contains("keyring recovered after a missed rotation"))
        let ring = try String(contentsOfFile: c.agent(3).dataDir + "/keyring.json", encoding: .utf8)
        #expect(!ring.contains(Self.key))
    }

    @Test func aGracefulLeaveShowsLeftAndARestartRejoins() async throws {
        let c = try await LocalCluster(subnet: 44)
        try c.start(0)
        for i in 1..<3 { try c.start(i, join: [0]) }
        try await c.eventually(within: .seconds(20), "three agents converge") { await c.converged(Array(0..<3), alive: 3) }
        c.kill(1, signal: SIGTERM)
        #expect(c.agent(1).process.terminationStatus == 0)
        try await c.eventually(within: .seconds(10), "agent-1 shows left") { await c.all([0, 2], see: "agent-1", as: "left") }
        try c.start(1, join: [2])
        try await c.eventually(within: .seconds(15), "agent-1 rejoined") { await c.all(Array(0..<3), see: "agent-1", as: "alive") }
        // `caravan leave` works the same way through the API.
        let leave = try LocalCluster.run(["leave", "--address", "http://\(c.ip(2)):4680"])
        #expect(leave.status == 0)
        try await c.eventually(within: .seconds(10), "agent-2 left after `caravan leave`") {
            guard let v = await c.view(0), v["agent-2"] == "left" else { return false }
            return !c.agent(2).process.isRunning
        }
    }

    @Test func aFrozenAgentIsNotDeclaredDeadAndRefutes() async throws {
        let c = try await LocalCluster(subnet: 45)
        try c.start(0)
        for i in 1..<4 { try c.start(i, join: [0]) }
        try await c.eventually(within: .seconds(20), "four agents converge") { await c.converged(Array(0..<4), alive: 4) }
        // Freeze agent-3 for 2.5 s of every 5 s, three times.
        let pid = c.agent(3).process.processIdentifier
        for _ in 0..<3 {
            kill(pid, SIGSTOP)
            try await Task.sleep(for: .milliseconds(2500))
            kill(pid, SIGCONT)
            try await Task.sleep(for: .milliseconds(2500))
        }
        for i in 0..<3 {
            #expect(!c.log(i).contains("member dead"), "agent-\(i) declared someone dead")
        }
        for i in 0..<4 { #expect(await c.view(i)?.values.filter { $0 == "alive" }.count == 4) }
    }
}

@Suite struct CommandLineInputTests {
    @Test func badInputGetsOneLineAndExitStatusTwo() throws {
        let cases: [([String], String)] = [
            (["agent", "--bind", "not-an-ip", "--data-dir", "/tmp/x"], "--bind"),
            (["agent", "--bind", "127.0.0.1", "--data-dir", "/tmp/x", "--no-such-flag"], "no-such-flag"),
            (["agent", "--bind", "127.0.0.1", "--data-dir", "/tmp/x", "--join", "1.2.3.4:99999"], "--join"),
            (["agent", "--bind", "127.0.0.1", "--data-dir", "/tmp/x", "--encrypt", "short"], "--encrypt"),
            (["agent", "--bind", "127.0.0.1", "--data-dir", "/tmp/x", "--tag", "novalue"], "--tag"),
            (["agent", "--bind", "127.0.0.1"], "--data-dir"),
            (["keyring", "install", "@@@"], "KEY"),
            (["members", "--address", "ftp://x"], "http"),
        ]
        for (args, needle) in cases {
            let r = try LocalCluster.run(args)
            #expect(r.status == 2, "\(args): status \(r.status)")
            #expect(r.stderr.contains(needle), "\(args): \(r.stderr)")
        }
    }

    @Test func anUnreachableAgentIsAFailedOperation() throws {
        let r = try LocalCluster.run(["members", "--address", "http://127.0.0.1:1"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("cannot reach the agent"))
        #expect(r.stderr.split(separator: "\n").count == 1)
    }

    @Test func anUnreadableKeyringFileAndABusyAddressAreClearErrors() async throws {
        let dir = NSTemporaryDirectory() + "caravan-badkey-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "not json".write(toFile: dir + "/k.json", atomically: true, encoding: .utf8)
        let bad = try LocalCluster.run(["agent", "--bind", "127.0.46.2", "--data-dir", dir, "--keyring-file", dir + "/k.json"])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("k.json"))
        let missing = try LocalCluster.run(["agent", "--bind", "127.0.46.2", "--data-dir", dir, "--keyring-file", dir + "/none.json"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("does not exist"))
        // No key at all: refused outside --dev (Raft and gossip would travel unsealed).
        let keyless = try LocalCluster.run(["agent", "--bind", "127.0.46.2", "--data-dir", dir + "/keyless"])
        #expect(keyless.status == 2 && keyless.stderr.contains("no cluster key") && keyless.stderr.contains("caravan keygen"),
                "\(keyless.status): \(keyless.stderr)")
        let devOutside = try LocalCluster.run(["agent", "--dev", "--bind", "10.0.0.1", "--data-dir", dir + "/dev"])
        #expect(devOutside.status == 2 && devOutside.stderr.contains("loopback only"), "\(devOutside.status): \(devOutside.stderr)")
        try #"{"keys": []}"#.write(toFile: dir + "/empty.json", atomically: true, encoding: .utf8)
        let empty = try LocalCluster.run(["agent", "--bind", "127.0.46.2", "--data-dir", dir + "/keyless", "--keyring-file", dir + "/empty.json"])
        #expect(empty.status == 2, "\(empty.stderr)")

        // Occupy the agent's ports, then start a second agent on the same address.
        let c = try await LocalCluster(subnet: 46)
        let first = try c.start(1)
        try await c.eventually(within: .seconds(20), "the first agent serves") { (try? await first.api.agentSelf()) != nil }
        try c.start(1, name: "second")
        let second = c.agents["second"]!.process
        second.waitUntilExit()
        #expect(second.terminationStatus == 1)
        let log = try String(contentsOfFile: c.agents["second"]!.logPath, encoding: .utf8)
        // RPC binds first: the second agent names the port it could not have.
        #expect(log.contains("cannot bind RPC on 127.0.46.2:4681 (TCP): address already in use"), "\(log)")
        #expect(first.process.isRunning)
    }
}
