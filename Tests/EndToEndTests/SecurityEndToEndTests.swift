import API
import Foundation
import Testing

/// Access control as a user meets it: raw_exec off unless enabled, ACLs bootstrapped through
/// the CLI, tokens and policies, relays carrying the caller's token, revocation, and the ACL
/// state surviving SIGKILL of every agent after the log was compacted.
@Suite struct SecurityEndToEndTests {
    /// Runs a one-task raw_exec job running `script` through the CLI and returns its running allocation.
    static func runShell(_ c: LocalCluster, id: String, script: String, token: String?) throws -> AllocationView {
        let file = try write("""
            id: \(id)
            groups:
              - name: g
                tasks:
                  - {name: t, driver: raw_exec, config: {command: /bin/sh, args: ["-c", "\(script)"]}, resources: {cpu: 10m, memory: 8Mi}}
            """, "job-\(id)")
        let ran = try c.cli(0, ["job", "run", file], token: token)
        #expect(ran.status == 0, "\(ran.stdout)\(ran.stderr)")
        let status = try JSONDecoder().decode(JobStatusView.self, from: Data(try c.cli(0, ["job", "status", id, "--json"], token: token).stdout.utf8))
        return try #require(status.allocations.first { $0.clientStatus == "running" })
    }

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
        let alloc = try Self.runShell(c, id: "hello", script: "echo secret-output; sleep 300", token: ci)
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

        // A follow in progress ends once its token is revoked (it does not run on to its end).
        let tick = try Self.runShell(c, id: "ticker", script: "while true; do echo tick; sleep 0.2; done", token: root)
        let follow = Task {
            try await LocalCluster.runAsync(["alloc", "logs", "-f", tick.id, "t", "--address", "http://\(c.ip(2)):4680", "--token", logger.secretID!],
                                            limit: .seconds(60))
        }
        try await Task.sleep(for: .seconds(1))
        // Narrow its policy to another namespace (the token itself stays): the follow ends too.
        let elsewhere = try Self.write("namespaces:\n  other: [read-logs, read-job]\n", "logs-elsewhere")
        #expect(try c.cli(0, ["acl", "policy", "apply", "logs", elsewhere], token: root).status == 0)
        let clock = ContinuousClock()
        let revokedAt = clock.now
        let ended = try await follow.value
        #expect(clock.now - revokedAt < .seconds(10), "the follow ran on after its token was revoked")
        #expect(ended.status != 0 && ended.stdout.contains("tick"), "\(ended.stderr)")
        #expect(try c.cli(0, ["acl", "token", "delete", logger.accessorID], token: root).status == 0)
        #expect(try c.cli(0, ["job", "stop", "--purge", "ticker"], token: root).status == 0)

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
        #expect(Set(tokens.map(\.name)) == ["bootstrap token"] && tokens.allSatisfy { $0.secretID == nil }, "\(list.stdout)")
        #expect(!list.stdout.contains(root))
        #expect(try c.cli(0, ["job", "stop", "--purge", "hello"], token: root).status == 0)
    }

    /// Certificates for a test: a CA with an agent and a client certificate, and a second CA
    /// with a client certificate of its own.
    static func certificates(_ dir: String) throws -> (ca: String, server: String, client: String, otherClient: String) {
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (args, what) in [(["tls", "ca", "create", "--out", dir + "/ca"], "CA"),
                             (["tls", "cert", "create", "--server", "--ca", dir + "/ca.pem", "--ca-key", dir + "/ca-key.pem", "--out", dir + "/server"], "server"),
                             (["tls", "cert", "create", "--client", "--ca", dir + "/ca.pem", "--ca-key", dir + "/ca-key.pem", "--out", dir + "/client"], "client"),
                             (["tls", "ca", "create", "--out", dir + "/other-ca"], "other CA"),
                             (["tls", "cert", "create", "--client", "--ca", dir + "/other-ca.pem", "--ca-key", dir + "/other-ca-key.pem",
                               "--out", dir + "/other-client"], "other client")] {
            let r = try LocalCluster.run(args)
            guard r.status == 0 else { throw HarnessError("\(what): \(r.stderr)") }
        }
        // Never overwritten; client certificates name no agent.
        #expect(try LocalCluster.run(["tls", "ca", "create", "--out", dir + "/ca"]).stderr.contains("exists; not overwriting"))
        #expect(try LocalCluster.run(["tls", "cert", "create", "--client", "--ip", "127.0.0.1", "--ca", dir + "/ca.pem", "--ca-key", dir + "/ca-key.pem",
                                      "--out", dir + "/x"]).status == 2)
        var st = stat()
        #expect(stat(dir + "/ca-key.pem", &st) == 0 && st.st_mode & 0o777 == 0o600)
        return (dir + "/ca", dir + "/server", dir + "/client", dir + "/other-client")
    }

    @Test func mutualTLSForTheCLIAndBetweenAgents() async throws {
        let dir = NSTemporaryDirectory() + "caravan-tls-\(getpid())"
        let certs = try Self.certificates(dir)
        let c = try await LocalCluster(subnet: 80)
        c.tls = .init(ca: certs.ca + ".pem", cert: certs.client + ".pem", key: certs.client + "-key.pem")
        let tls = ["--tls-ca-file", certs.ca + ".pem", "--tls-cert-file", certs.server + ".pem", "--tls-key-file", certs.server + "-key.pem"]
        try c.start(0, join: [1, 2], extra: tls)
        try c.start(1, join: [0, 2], extra: tls)
        try c.start(2, join: [0, 1], extra: tls)
        _ = try await RaftEndToEndTests.agreedLeader(c, [0, 1, 2])
        let boot = try c.cli(0, ["acl", "bootstrap", "--json"])
        let root = try #require(try JSONDecoder().decode(ACLTokenView.self, from: Data(boot.stdout.utf8)).secretID)

        // The CLI with the CA, a client certificate and a token runs a job; its logs are relayed
        // between agents over mutual TLS.
        let alloc = try Self.runShell(c, id: "hello", script: "echo over-tls; sleep 300", token: root)
        let node = try #require((0..<3).first { c.ip($0) == c.agents.values.first { $0.name == alloc.node }?.ip })
        let relayed = try c.cli((node + 1) % 3, ["alloc", "logs", alloc.id, "t"], token: root)
        #expect(relayed.status == 0 && relayed.stdout.contains("over-tls"), "\(relayed.stdout)\(relayed.stderr)")

        // Refused: plain HTTP, no client certificate, a client certificate from another CA, an
        // agent certificate checked against another CA.
        let address = "https://\(c.ip(0)):4680"
        let plain = try LocalCluster.run(["members", "--address", "http://\(c.ip(0)):4680"], environment: ["CARAVAN_TOKEN": root])
        #expect(plain.status == 1 && plain.stderr.contains("plain http"), "\(plain.stderr)")
        let noCert = try LocalCluster.run(["members", "--address", address], environment: ["CARAVAN_CACERT": certs.ca + ".pem", "CARAVAN_TOKEN": root])
        #expect(noCert.status == 1 && noCert.stderr.contains("asks for a client certificate"), "\(noCert.stderr)")
        let stranger = try LocalCluster.run(["members", "--address", address],
                                            environment: ["CARAVAN_CACERT": certs.ca + ".pem", "CARAVAN_CLIENT_CERT": certs.otherClient + ".pem",
                                                          "CARAVAN_CLIENT_KEY": certs.otherClient + "-key.pem", "CARAVAN_TOKEN": root])
        #expect(stranger.status == 1 && stranger.stderr.contains("refused this client certificate"), "\(stranger.stderr)")
        let wrongCA = try LocalCluster.run(["members", "--address", address],
                                           environment: ["CARAVAN_CACERT": dir + "/other-ca.pem", "CARAVAN_CLIENT_CERT": certs.client + ".pem",
                                                         "CARAVAN_CLIENT_KEY": certs.client + "-key.pem", "CARAVAN_TOKEN": root])
        #expect(wrongCA.status == 1 && wrongCA.stderr.contains("not from this CA"), "\(wrongCA.stderr)")
        let https = try LocalCluster.run(["members", "--address", address], environment: ["CARAVAN_TOKEN": root])
        #expect(https.status == 2 && https.stderr.contains("CARAVAN_CACERT"), "\(https.stderr)")

        // An agent refuses to start with files that would fail its clients: a client certificate,
        // one from another CA.
        for (cert, message) in [(certs.client, "may not serve TLS"), (certs.otherClient, "is not signed by the CA")] {
            let r = try LocalCluster.run(["agent", "--dev", "--bind", "127.0.80.9", "--data-dir", dir + "/bad-agent",
                                          "--tls-ca-file", certs.ca + ".pem", "--tls-cert-file", cert + ".pem", "--tls-key-file", cert + "-key.pem"])
            #expect(r.status == 2 && r.stderr.contains(message), "\(r.stderr)")
        }
        // A server with a client certificate from the CA does not pass as an agent (openssl
        // stands in for one): the CLI checks the server role.
        let impostor = Process()
        impostor.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        impostor.arguments = ["s_server", "-accept", "127.0.80.9:4680", "-cert", certs.client + ".pem", "-key", certs.client + "-key.pem",
                              "-CAfile", certs.ca + ".pem", "-www", "-quiet"]
        impostor.standardOutput = FileHandle.nullDevice
        impostor.standardError = FileHandle.nullDevice
        try impostor.run()
        defer {
            kill(impostor.processIdentifier, SIGKILL)
            impostor.waitUntilExit()
        }
        var refused = LocalCluster.Output(status: 0, stdout: "", stderr: "")
        try await c.eventually(within: .seconds(10), "the impostor listens") {
            refused = try LocalCluster.run(["members", "--address", "https://127.0.80.9:4680"],
                                           environment: ["CARAVAN_CACERT": certs.ca + ".pem", "CARAVAN_CLIENT_CERT": certs.client + ".pem",
                                                         "CARAVAN_CLIENT_KEY": certs.client + "-key.pem", "CARAVAN_TOKEN": root])
            return !refused.stderr.contains("cannot reach")
        }
        #expect(refused.status == 1 && (refused.stderr.contains("does not name server.caravan") || refused.stderr.contains("not from this CA")),
                "\(refused.stderr)")
        // TLS options with a plain address are refused before the token could go out in the clear.
        let clear = try LocalCluster.run(["members", "--address", "http://\(c.ip(0)):4680", "--ca-cert", certs.ca + ".pem"])
        #expect(clear.status == 2 && clear.stderr.contains("plain http"), "\(clear.stderr)")
        #expect(try c.cli(0, ["job", "stop", "--purge", "hello"], token: root).status == 0)
        try? FileManager.default.removeItem(atPath: dir)
    }

    @Test func namespacesKeepJobsApartAndQuotasRefuseWhatIsOver() async throws {
        let c = try await LocalCluster(subnet: 81)
        try c.start(0, extra: ["--bootstrap-expect", "1", "--raft-snapshot-every", "100"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        // A leader registers its node at its next pass: plans before that see no nodes.
        try await c.eventually(within: .seconds(20), "the node registered") {
            (try? JSONDecoder().decode([NodeView].self, from: Data(c.cli(0, ["node", "status", "--json"]).stdout.utf8)))?.count == 1
        }
        let web = try Self.write("""
            id: web
            groups:
              - name: g
                count: 3
                tasks:
                  - {name: t, driver: raw_exec, config: {command: /bin/sleep, args: ["300"]}, resources: {cpu: 10m, memory: 32Mi}}
            """, "ns-web")
        // A namespace must exist before jobs go in it.
        let missing = try c.cli(0, ["job", "run", "--namespace", "team-a", web])
        #expect(missing.status == 2 && missing.stderr.contains("namespace team-a does not exist"), "\(missing.stderr)")
        #expect(try c.cli(0, ["namespace", "apply", "team-a", "--memory", "64Mi", "--instances", "5", "--description", "team A"]).status == 0)
        // Two of three fit in the quota; the third is explained.
        let plan = try c.cli(0, ["job", "plan", "--namespace", "team-a", web])
        #expect(plan.stdout.contains("namespace team-a: memory 64Mi of 64Mi used"), "\(plan.stdout)\(plan.stderr)")
        let over = try c.cli(0, ["job", "run", "--namespace", "team-a", web, "--timeout", "10"])
        #expect(over.status == 1 && over.stdout.contains("1 of group g not placed: namespace team-a: memory 64Mi of 64Mi used"), "\(over.stdout)\(over.stderr)")
        // The same id in the default namespace is another job.
        #expect(try c.cli(0, ["job", "run", web]).status == 0)
        let status = try JSONDecoder().decode(NamespaceView.self, from: Data(try c.cli(0, ["namespace", "status", "team-a", "--json"]).stdout.utf8))
        #expect(status.used.memoryMiB == 64 && status.used.instances == 2 && status.quota?.memoryMiB == 64 && status.jobs == 1)
        let list = try c.cli(0, ["namespace", "list"])
        #expect(list.stdout.contains("team-a") && list.stdout.contains("default"), "\(list.stdout)")
        #expect(try c.cli(0, ["job", "status", "web", "--namespace", "team-a", "--json"]).stdout.contains("team-a"))
        // Raising the quota places the one that waited.
        #expect(try c.cli(0, ["namespace", "apply", "team-a", "--memory", "128Mi"]).status == 0)
        try await c.eventually(within: .seconds(10), "the third instance runs once the quota allows it") {
            let v = try? JSONDecoder().decode(JobStatusView.self, from: Data(try c.cli(0, ["job", "status", "web", "--namespace", "team-a", "--json"]).stdout.utf8))
            return v?.allocations.filter { $0.clientStatus == "running" }.count == 3
        }
        // A namespace may allow only some drivers: a job using another is refused, naming it.
        #expect(try c.cli(0, ["namespace", "apply", "locked", "--enabled-drivers", "exec,container", "--disabled-drivers", "raw_exec"]).status == 0)
        let locked = try c.cli(0, ["job", "run", "--namespace", "locked", web])
        #expect(locked.status != 0 && locked.stderr.contains("namespace locked does not allow the raw_exec driver (task g.t)"), "\(locked.stderr)")
        let shown = try c.cli(0, ["namespace", "status", "locked"])
        #expect(shown.stdout.contains("Drivers     = exec, container except raw_exec"), "\(shown.stdout)")
        // A typo is refused, not dropped; so is a driver both enabled and disabled, and an empty list.
        for (body, message) in [(#"{"capabilities": {"disabledTaskDriver": ["raw_exec"]}}"#, #"unknown field \"capabilities.disabledTaskDriver\""#),
                                (#"{"capabilities": {"enabledTaskDrivers": ["exec"], "disabledTaskDrivers": ["exec"]}}"#, "exec is both enabled and disabled")] {
            let r = try LocalCluster.run(["-s", "-X", "PUT", "--data-binary", body, "http://\(c.ip(0)):4680/v1/namespace/locked"], executable: "/usr/bin/curl")
            #expect(r.stdout.contains(message), "\(body) → \(r.stdout)")
        }
        let empty = try c.cli(0, ["namespace", "apply", "locked", "--enabled-drivers", ","])
        #expect(empty.status == 2 && empty.stderr.contains("name at least one driver"), "\(empty.stderr)")
        // job plan says what job run would.
        let planned = try c.cli(0, ["job", "plan", "--namespace", "locked", web])
        #expect(planned.status != 0 && planned.stderr.contains("does not allow the raw_exec driver"), "\(planned.stdout)\(planned.stderr)")
        let badDriver = try c.cli(0, ["namespace", "apply", "locked", "--disabled-drivers", "docker"])
        #expect(badDriver.status != 0 && badDriver.stderr.contains("\"docker\" is not a driver"), "\(badDriver.stderr)")
        // It survives SIGKILL and restart.
        c.kill(0)
        try c.start(0, extra: ["--bootstrap-expect", "1", "--raft-snapshot-every", "100"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        let after = try JSONDecoder().decode(NamespaceView.self, from: Data(try c.cli(0, ["namespace", "status", "team-a", "--json"]).stdout.utf8))
        #expect(after.quota?.memoryMiB == 128 && after.description == "team A")
        let lockedAfter = try JSONDecoder().decode(NamespaceView.self, from: Data(try c.cli(0, ["namespace", "status", "locked", "--json"]).stdout.utf8))
        #expect(lockedAfter.capabilities == NamespaceCapabilities(enabledTaskDrivers: ["exec", "container"], disabledTaskDrivers: ["raw_exec"]))
        #expect(try c.cli(0, ["job", "run", "--namespace", "locked", web]).status != 0)
        // A namespace with jobs cannot go; once they are purged it can.
        let busy = try c.cli(0, ["namespace", "delete", "team-a"])
        #expect(busy.status != 0 && busy.stderr.contains("holds 1 job"), "\(busy.stderr)")
        #expect(try c.cli(0, ["job", "stop", "--purge", "--namespace", "team-a", "web"]).status == 0)
        #expect(try c.cli(0, ["namespace", "delete", "team-a"]).status == 0)
        let keep = try c.cli(0, ["namespace", "delete", "default"])
        #expect(keep.status == 1 && keep.stderr.contains("cannot be deleted"), "\(keep.stderr)")
        #expect(try c.cli(0, ["job", "stop", "--purge", "web"]).status == 0)
    }

    @Test(.enabled(if: geteuid() == 0 && (access("/usr/sbin/runc", X_OK) == 0 || access("/usr/bin/runc", X_OK) == 0)))
    func aJobPastItsEphemeralDiskFailsAndRootInExecIsRefused() async throws {
        let c = try await LocalCluster(subnet: 82)
        try c.start(0, extra: ["--bootstrap-expect", "1"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        // 4 files of 4 MiB with 8 MiB allowed (+ 2 MiB of logs): the watch fails the allocation.
        let fill = try Self.write("""
            id: fill
            groups:
              - name: g
                ephemeralDisk: {size: 8Mi}
                restart: {attempts: 0, mode: fail}
                reschedule: {attempts: 0}
                tasks:
                  - name: t
                    driver: exec
                    config: {command: /bin/sh, args: ["-c", "for i in 1 2 3 4; do head -c 4194304 /dev/zero > /local/f$i; done; exec sleep 300"]}
                    logs: {maxFiles: 1, maxFileSize: 1Mi}
                    resources: {cpu: 10m, memory: 32Mi}
            """, "disk-fill")
        #expect(try c.cli(0, ["job", "run", fill, "--detach"]).status == 0)
        func failure(_ job: String) async throws -> String {
            var why = ""
            try await c.eventually(within: .seconds(30), "\(job)'s allocation fails, saying why") {
                let v = try? JSONDecoder().decode(JobStatusView.self, from: Data(try c.cli(0, ["job", "status", job, "--json"]).stdout.utf8))
                why = v?.allocations.first?.clientDescription ?? ""
                return v?.allocations.first?.clientStatus == "failed"
            }
            return why
        }
        let why = try await failure("fill")
        #expect(why.contains("ephemeral disk exceeded: over 10 MiB used (ephemeralDisk 8 MiB and its logs' 2 MiB)"), "\(why)")
        // A task naming root is refused by the agent's default rule, with the reason in its events.
        let root = try Self.write("""
            id: as-root
            type: batch
            groups:
              - name: g
                restart: {attempts: 0, mode: fail}
                reschedule: {attempts: 0}
                tasks:
                  - {name: t, driver: exec, user: root, config: {command: /bin/true}, resources: {cpu: 10m, memory: 32Mi}}
            """, "as-root")
        #expect(try c.cli(0, ["job", "run", root, "--detach"]).status == 0)
        let refused = try await failure("as-root")
        #expect(refused.contains("user root (uid 0) may not run exec tasks on this node (its agent denies uids 0)"), "\(refused)")
        for j in ["fill", "as-root"] { #expect(try c.cli(0, ["job", "stop", "--purge", j]).status == 0) }
    }
}
