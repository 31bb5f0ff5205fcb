import API
import Foundation
import Testing

/// `caravan operator snapshot save` on one cluster, `restore` into a new one with another
/// cluster key: the jobs run again on the new cluster's node, the old node is marked down,
/// sealed variables read back, and all of it survives the new agent being SIGKILLed and
/// restarted. Wrong files are refused with the reason.
@Suite struct SnapshotRestoreEndToEndTests {
    @Test func aSnapshotRestoredIntoANewClusterRunsItsJobsThere() async throws {
        let old = try await LocalCluster(subnet: 84)
        try old.start(0, extra: ["--bootstrap-expect", "1"], name: "old-node")
        _ = try await RaftEndToEndTests.agreedLeader(old, [0])
        let path = NSTemporaryDirectory() + "restore-web-\(getpid()).yaml"
        try """
            id: web
            groups:
              - name: g
                count: 2
                tasks: [{name: t, driver: raw_exec, config: {command: /bin/sleep, args: ["300"]}, resources: {cpu: 10m, memory: 16Mi}}]
            """.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try old.cli(0, ["job", "run", path]).status == 0)
        #expect(try old.cli(0, ["var", "put", "app/db", "s3cret"]).status == 0)
        try await old.eventually(within: .seconds(30), "web runs on the old cluster") {
            (try? await old.agent(0).api.allocations())?.filter { $0.clientStatus == "running" }.count == 2
        }
        let snap = NSTemporaryDirectory() + "restore-\(getpid()).snap"
        try? FileManager.default.removeItem(atPath: snap)
        defer { try? FileManager.default.removeItem(atPath: snap) }
        #expect(try old.cli(0, ["operator", "snapshot", "save", snap]).status == 0)
        old.kill(0)
        // Its slot goes back before the new cluster waits for one.
        await old.close()

        // A new cluster under another key.
        let newKey = try LocalCluster.run(["keygen"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let c = try await LocalCluster(subnet: 85)
        try c.start(0, key: newKey, extra: ["--bootstrap-expect", "1", "--raft-snapshot-every", "100"], name: "new-node")
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        #expect(try c.cli(0, ["var", "put", "app/other", "x"]).status == 0)

        // Wrong files are refused, and nothing changes.
        let junk = NSTemporaryDirectory() + "restore-junk-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: junk) }
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: snap)))
        for (content, expected) in [(Array("hello".utf8), "not a Caravan snapshot file"), (Array(bytes.prefix(bytes.count / 2)), "damaged")] {
            try Data(content).write(to: URL(fileURLWithPath: junk))
            let r = try c.cli(0, ["operator", "snapshot", "restore", junk])
            #expect(r.status != 0 && r.stderr.contains(expected), "\(r.stderr)")
            // The same through the API, past the CLI's own check.
            let api = try await c.agent(0).api.send(.PUT, "/v1/operator/snapshot", body: content)
            #expect(api.status == 400 && String(decoding: api.body, as: UTF8.self).contains("invalid_snapshot"), "\(api.status)")
        }
        // The file's variables are sealed under the old key, which this cluster lacks.
        let missing = try c.cli(0, ["operator", "snapshot", "restore", snap])
        #expect(missing.status != 0 && missing.stderr.contains("caravan keyring install"), "\(missing.stderr)")
        #expect(try c.cli(0, ["var", "get", "app/other"]).stdout == "x\n")

        #expect(try c.cli(0, ["keyring", "install", LocalCluster.clusterKey]).status == 0)
        let restored = try c.cli(0, ["operator", "snapshot", "restore", snap, "--json"])
        #expect(restored.status == 0, "\(restored.stderr)")
        let view = try JSONDecoder().decode(SnapshotRestoreView.self, from: Data(restored.stdout.utf8))
        #expect(view.jobs == 1 && view.allocations == 2 && view.variables == 1 && view.nodesDown == ["old-node"] && view.nodesKept.isEmpty, "\(view)")

        func settled() async -> Bool {
            guard let allocs = try? await c.agent(0).api.allocations() else { return false }
            let running = allocs.filter { $0.clientStatus == "running" && $0.desiredStatus == "run" }
            return running.count == 2 && running.allSatisfy { $0.node == "new-node" }
                && allocs.filter { $0.node == "old-node" }.allSatisfy { $0.clientStatus == "lost" }
        }
        try await c.eventually(within: .seconds(30), "web runs on the new cluster's node") { await settled() }
        #expect(try c.cli(0, ["var", "get", "app/db"]).stdout == "s3cret\n")
        // The file's variables replaced this cluster's.
        #expect(try c.cli(0, ["var", "get", "app/other"]).status != 0)
        let nodes = try c.cli(0, ["node", "status"]).stdout
        #expect(nodes.contains("old-node") && nodes.contains("new-node"), "\(nodes)")
        // Values written after the restore are sealed under this cluster's data key, which stays.
        #expect(try c.cli(0, ["var", "put", "app/after", "y"]).status == 0)
        // Enough writes that the restore is compacted into a Raft snapshot before the restart.
        for i in 0..<120 { _ = try await c.agent(0).api.putVariable("fill/\(i)", "v") }

        // Killed and restarted: the restore comes back from the Raft snapshot it was compacted into.
        c.kill(0)
        try c.start(0, key: newKey, extra: ["--bootstrap-expect", "1", "--raft-snapshot-every", "100"], name: "new-node")
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        try await c.eventually(within: .seconds(30), "web still runs after a restart") { await settled() }
        #expect(try c.cli(0, ["var", "get", "app/db"]).stdout == "s3cret\n")
        #expect(try c.cli(0, ["var", "get", "app/after"]).stdout == "y\n")
    }
}
