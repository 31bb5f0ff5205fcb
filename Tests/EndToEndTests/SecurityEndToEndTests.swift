import API
import Foundation
import Testing

/// Access control as a user meets it: raw_exec off unless enabled, ACLs bootstrapped through
/// the CLI, tokens and policies, relays carrying the caller's token, revocation, and the ACL
/// state surviving SIGKILL of every agent after the log was compacted.
@Suite struct SecurityEndToEndTests {
    static func write(_ text: String, _ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "\(name)-\(getpid()).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func aclsThroughTheCLIAcrossRelaysRestartsAndCompaction() async throws {
        let c = try await LocalCluster(subnet: 79)
        // Agents 0 and 1 offer raw_exec; agent 2 does not, and enforces ACLs before the bootstrap.
        let extra = ["--raft-snapshot-every", "100"]
        try c.start(0, join: [1, 2], extra: extra)
        try c.start(1, join: [0, 2], extra: extra)
        try c.start(2, join: [0, 1], extra: extra + ["--acl-enabled"], rawExec: false)
        _ = try await RaftEndToEndTests.agreedLeader(c, [0, 1, 2])

        // Before the bootstrap: open on agents 0 and 1, closed on agent 2 (but for status).
        #expect(try c.cli(0, ["members"]).status == 0)
        let early = try c.cli(2, ["members"])
        #expect(early.status == 1 && early.stderr.contains("permission denied: this call needs agent:read"), "\(early.stderr)")
        #expect(try c.cli(2, ["status"]).status == 0)

        let secretFile = NSTemporaryDirectory() + "root-\(getpid()).token"
        try? FileManager.default.removeItem(atPath: secretFile)
        let boot = try c.cli(1, ["acl", "bootstrap", "--secret-file", secretFile])
        #expect(boot.status == 0 && boot.stdout.contains("Secret ID"), "\(boot.stdout)\(boot.stderr)")
        let root = try String(contentsOfFile: secretFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        var st = stat()
        #expect(stat(secretFile, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try c.cli(0, ["acl", "bootstrap"]).status == 1, "once only")

        // Every agent denies by default now (within the resolver's cache time).
        try await c.eventually(within: .seconds(5), "agent 0 refuses anonymous calls") {
            try c.cli(0, ["job", "status"]).stderr.contains("permission denied")
        }
        #expect(try c.cli(0, ["job", "status"], token: root).status == 0)
        #expect(try c.cli(0, ["job", "status"], token: "wrong").stderr.contains("unknown or expired"))

        // A deployer: submit and read jobs, nothing else.
        let policy = try Self.write("description: deploys\nnamespaces:\n  default: [submit-job, read-job]\n", "deployer")
        #expect(try c.cli(0, ["acl", "policy", "apply", "deployer", policy], token: root).status == 0)
        let badPolicy = try Self.write("namespaces:\n  default: [launch]\n", "bad-policy")
        let bad = try c.cli(0, ["acl", "policy", "apply", "x", badPolicy], token: root)
        #expect(bad.status == 2 && bad.stderr.contains("\"launch\" is not one of"), "\(bad.stderr)")
        let created = try c.cli(0, ["acl", "token", "create", "--name", "ci", "--policy", "deployer", "--json"], token: root)
        let deployer = try JSONDecoder().decode(ACLTokenView.self, from: Data(created.stdout.utf8))
        let ci = try #require(deployer.secretID)
        let readLogs = try Self.write("namespaces:\n  default: [read-logs, read-job]\n", "logs")
        #expect(try c.cli(0, ["acl", "policy", "apply", "logs", readLogs], token: root).status == 0)
        let logger = try JSONDecoder().decode(ACLTokenView.self, from: Data(
            try c.cli(0, ["acl", "token", "create", "--policy", "logs", "--json"], token: root).stdout.utf8))

        // raw_exec: a job spread over all three agents places two; the third is explained.
        let spread = try Self.write("""
            id: spread
            groups:
              - name: g
                count: 3
                constraints: [{operator: distinct_hosts}]
                tasks:
                  - {name: t, driver: raw_exec, config: {command: /bin/sleep, args: ["300"]}, resources: {cpu: 10m, memory: 8Mi}}
            """, "spread")
        let run = try c.cli(0, ["job", "run", spread, "--timeout", "10"], token: ci)
        #expect(run.status == 1 && run.stdout.contains("missing driver raw_exec (agents offer it only with --enable-raw-exec)"),
                "\(run.stdout)\(run.stderr)")

        // The deployer runs a job; it cannot exec into it, read its logs or read variables.
        let hello = try Self.write("""
            id: hello
            groups:
              - name: g
                tasks:
                  - {name: t, driver: raw_exec, config: {command: /bin/sh, args: ["-c", "echo secret-output; sleep 300"]}, resources: {cpu: 10m, memory: 8Mi}}
            """, "hello")
        let ran = try c.cli(0, ["job", "run", hello], token: ci)
        #expect(ran.status == 0, "\(ran.stdout)\(ran.stderr)")
        let allocs = try JSONDecoder().decode(JobStatusView.self, from: Data(try c.cli(0, ["job", "status", "hello", "--json"], token: ci).stdout.utf8))
        let alloc = try #require(allocs.allocations.first { $0.clientStatus == "running" })
        let exec = try LocalCluster.run(["alloc", "exec", "--address", "http://\(c.ip(0)):4680", alloc.id, "t", "cat", "/etc/hostname"],
                                        environment: ["CARAVAN_TOKEN": ci])
        #expect(exec.status != 0 && exec.stderr.contains("alloc-exec"), "\(exec.stderr)")
        #expect(try c.cli(0, ["alloc", "logs", alloc.id, "t"], token: ci).stderr.contains("read-logs"))
        #expect(try c.cli(0, ["var", "put", "app/x", "1"], token: ci).stderr.contains("variables:write"))
        #expect(try c.cli(0, ["var", "put", "app/x", "1"], token: root).status == 0)
        #expect(try c.cli(0, ["var", "get", "app/x"], token: ci).stderr.contains("permission denied"))

        // Logs relayed through an agent that does not run the allocation carry the caller's token.
        let node = try #require((0..<3).first { c.ip($0) == c.agents.values.first { $0.name == alloc.node }?.ip })
        let other = (node + 1) % 3
        let relayed = try c.cli(other, ["alloc", "logs", alloc.id, "t"], token: logger.secretID)
        #expect(relayed.status == 0 && relayed.stdout.contains("secret-output"), "\(relayed.stdout)\(relayed.stderr)")
        #expect(try c.cli(other, ["alloc", "logs", alloc.id, "t"], token: ci).stderr.contains("read-logs"))

        // Enough writes that every agent compacts its log, then SIGKILL all three and restart.
        var client = try CaravanClient(address: "http://\(c.ip(0)):4680")
        client.token = root
        for i in 0..<150 { _ = try await client.putVariable("load/\(i)", "\(i)") }
        try await c.eventually(within: .seconds(10), "every agent took a snapshot") {
            (0..<3).allSatisfy { !((try? FileManager.default.contentsOfDirectory(atPath: c.agent($0).dataDir + "/raft/snapshots")) ?? []).isEmpty }
        }
        // Revoke the deployer before the restart: it stays revoked after it.
        #expect(try c.cli(1, ["acl", "token", "delete", deployer.accessorID], token: root).status == 0)
        for i in 0..<3 { c.kill(i) }
        try c.start(0, join: [1, 2], extra: extra)
        try c.start(1, join: [0, 2], extra: extra)
        try c.start(2, join: [0, 1], extra: extra + ["--acl-enabled"], rawExec: false)
        _ = try await RaftEndToEndTests.agreedLeader(c, [0, 1, 2])
        for i in 0..<3 {
            try await c.eventually(within: .seconds(20), "agent \(i) knows the tokens again") {
                try c.cli(i, ["var", "get", "load/149"], token: root).stdout.contains("149")
            }
            #expect(try c.cli(i, ["job", "status"], token: ci).stderr.contains("unknown or expired"))
            #expect(try c.cli(i, ["job", "status"]).stderr.contains("permission denied"))
        }
        let list = try c.cli(2, ["acl", "token", "list", "--json"], token: root)
        let tokens = try JSONDecoder().decode([ACLTokenView].self, from: Data(list.stdout.utf8))
        #expect(Set(tokens.map(\.name)) == ["bootstrap token", ""] && tokens.allSatisfy { $0.secretID == nil }, "\(list.stdout)")
        #expect(!list.stdout.contains(root))
        #expect(try c.cli(0, ["job", "stop", "--purge", "hello"], token: root).status == 0)
    }
}
