import API
import Foundation
import Testing

/// Real agents inside a private network namespace, with packet loss and partitions injected by
/// nftables there. Needs root (CI runs as root), `unshare`, `nsenter` and `nft`.
@Suite(.serialized) struct FaultEndToEndTests {
    static func alive(_ c: LocalCluster, _ i: Int) async -> Int {
        (await c.view(i) ?? [:]).values.filter { $0 == "alive" }.count
    }

    @Test func agentsJoinAndStayAliveAtTenPercentLoss() async throws {
        let c = try LocalCluster(subnet: 1)
        try c.isolate()
        try c.faults(["udp dport 4682 numgen random mod 1000 < 100 drop"])
        try c.start(0)
        for i in 1..<5 { try c.start(i, join: [0]) }
        let took = try await c.eventually(within: .seconds(10), every: .milliseconds(100), "five agents converge at 10% loss") { await c.converged(Array(0..<5), alive: 5) }
        print("converged at 10% loss in \(took)")
        // 20 seconds of 10% loss: nobody healthy is declared dead.
        try await Task.sleep(for: .seconds(20))
        for i in 0..<5 {
            #expect(!c.log(i).contains("member dead"), "agent-\(i) declared a healthy member dead")
            #expect(await Self.alive(c, i) == 5)
        }
        // A crash is still detected through the loss.
        c.kill(2)
        try await c.eventually(within: .seconds(15), every: .milliseconds(100), "agent-2 dead at 10% loss") { await c.all([0, 1, 3, 4], see: "agent-2", as: "dead") }
    }

    @Test func aPartitionIsDetectedAndHealsByItself() async throws {
        let c = try LocalCluster(subnet: 2)
        try c.isolate()
        try c.start(0)
        for i in 1..<5 { try c.start(i, join: [0]) }
        try await c.eventually(within: .seconds(20), every: .milliseconds(100), "five agents converge") { await c.converged(Array(0..<5), alive: 5) }
        // {agent-0, agent-1} | {agent-2, agent-3, agent-4}: everything between the sides is dropped.
        let a = "{ \(c.ip(0)), \(c.ip(1)) }", b = "{ \(c.ip(2)), \(c.ip(3)), \(c.ip(4)) }"
        try c.faults(["ip saddr \(a) ip daddr \(b) drop", "ip saddr \(b) ip daddr \(a) drop"])
        try await c.eventually(within: .seconds(20), every: .milliseconds(200), "each side declares the other dead") {
            guard await Self.alive(c, 0) == 2, await Self.alive(c, 1) == 2 else { return false }
            for i in 2..<5 { guard await Self.alive(c, i) == 3 else { return false } }
            return true
        }
        try c.faults([])
        let healed = try await c.eventually(within: .seconds(40), every: .milliseconds(200), "the partition heals") { await c.converged(Array(0..<5), alive: 5) }
        print("partition healed in \(healed)")
    }
}
