import API
import Foundation
import Testing

/// `caravan operator what-if` against three real agents in three racks: what it predicts for
/// losing rack r1 is what happens when that agent is SIGKILLed.
@Suite struct WhatIfEndToEndTests {
    @Test func whatIfLosingARackPredictsWhatKillingItDoes() async throws {
        let c = try await LocalCluster(subnet: 83)
        for i in 0...2 { try c.start(i, join: i == 0 ? [] : [0], extra: ["--tag", "rack=r\(i + 1)"]) }
        _ = try await RaftEndToEndTests.agreedLeader(c, [0, 1, 2])
        try await c.eventually(within: .seconds(20), "three nodes ready") {
            (try? JSONDecoder().decode([NodeView].self, from: Data(c.cli(0, ["node", "status", "--json"]).stdout.utf8)))?.count == 3
        }
        func task(_ extra: String = "") -> String {
            "    tasks: [{name: t, driver: raw_exec, config: {command: /bin/sleep, args: [\"300\"]}, resources: {cpu: 10m, memory: 16Mi}}]\n" + extra
        }
        let jobs = [
            // A service spread over the three racks, one instance per host.
            ("web", "id: web\ngroups:\n  - name: g\n    count: 3\n    spreads: [{attribute: \"${meta.rack}\"}]\n    constraints: [{operator: distinct_hosts}]\n" + task()),
            ("pinned", "id: pinned\ngroups:\n  - name: g\n    constraints: [{attribute: \"${meta.rack}\", value: r1}]\n" + task()),
            ("cache", "id: cache\ngroups:\n  - name: g\n    count: 2\n" + task()),
        ]
        for (id, text) in jobs {
            let path = NSTemporaryDirectory() + "what-if-\(id)-\(getpid()).yaml"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let r = try c.cli(0, ["job", "run", path])
            #expect(r.status == 0, "\(id): \(r.stdout)\(r.stderr)")
        }
        let r1 = c.agent(0).name
        let predicted = try JSONDecoder().decode(WhatIfView.self, from: Data(try c.cli(1, ["operator", "what-if", "--kill-nodes-where", "meta.rack=r1", "--json"]).stdout.utf8))
        #expect(predicted.killed == [r1])
        // cache is binpacked beside pinned on r1: it moves.
        #expect(predicted.moved.contains { $0.job == "cache" }, "\(predicted)")
        #expect(predicted.stopped.map(\.name).contains("pinned.g[0]") && predicted.stopped.contains { $0.job == "web" }, "\(predicted)")
        #expect(predicted.unplaced.contains { $0.job == "pinned" } && predicted.unplaced.contains { $0.job == "web" && $0.reason.contains("distinct_hosts") })
        let text = try c.cli(1, ["operator", "what-if", "--kill-nodes-where", "meta.rack=r1"])
        #expect(text.stdout.contains("Would not fit:") && text.stdout.contains("pinned group g:"), "\(text.stdout)")
        // The same question of a saved snapshot, offline, gives the same answer.
        let snap = NSTemporaryDirectory() + "what-if-\(getpid()).snap"
        try? FileManager.default.removeItem(atPath: snap)
        let saved = try c.cli(2, ["operator", "snapshot", "save", snap])
        #expect(saved.status == 0 && saved.stdout.contains("3 nodes"), "\(saved.stdout)\(saved.stderr)")
        #expect((try FileManager.default.attributesOfItem(atPath: snap)[.posixPermissions] as? Int) == 0o600)
        #expect(try c.cli(2, ["operator", "snapshot", "save", snap]).stderr.contains("exists"))
        let offline = try JSONDecoder().decode(WhatIfView.self, from: Data(try LocalCluster.run(
            ["operator", "what-if", "--snapshot", snap, "--kill-nodes-where", "meta.rack=r1", "--json"]).stdout.utf8))
        #expect(offline.moved == predicted.moved && offline.stopped == predicted.stopped && offline.unplaced == predicted.unplaced, "\(offline)")
        let notASnapshot = try LocalCluster.run(["operator", "what-if", "--snapshot", "/etc/hostname", "--kill-node", "x"])
        #expect(notASnapshot.status == 2 && notASnapshot.stderr.contains("not a Caravan snapshot file"), "\(notASnapshot.stderr)")
        try? FileManager.default.removeItem(atPath: snap)
        let bad = try c.cli(1, ["operator", "what-if", "--kill-node", "nope"])
        #expect(bad.status != 0 && bad.stderr.contains("no node nope"), "\(bad.stderr)")
        // Now for real.
        c.kill(0)
        try await c.eventually(within: .seconds(30), "the cluster settles as predicted") {
            guard let allocs = try? await c.agent(1).api.allocations() else { return false }
            let live = allocs.filter { $0.desiredStatus == "run" && ($0.clientStatus == "running" || $0.clientStatus == "pending") }
            let moved = predicted.moved.allSatisfy { m in live.contains { $0.name == m.name && $0.node == m.to && $0.clientStatus == "running" } }
            let stopped = predicted.stopped.allSatisfy { s in !live.contains { $0.name == s.name } }
            return moved && stopped
        }
    }
}
