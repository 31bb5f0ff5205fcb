import Foundation
import Testing

/// The fault harness (`caravan-bench faults`) for a minute: five real agents in a private
/// network namespace under SIGKILL/restart (the leader, and agents right after a snapshot),
/// SIGSTOP and nftables partitions, with clients writing, reading and registering jobs
/// throughout. Nothing acknowledged may be lost, every key's history must be linearizable, and
/// a leader must be back within 2 s of every heal.
@Suite struct FaultHarnessTests {
    @Test func aMinuteOfFaultsLosesNothingAndTheClusterStaysLive() async throws {
        let bench = URL(fileURLWithPath: LocalCluster.binary).deletingLastPathComponent().appendingPathComponent("caravan-bench").path
        let seed = UInt64(Date().timeIntervalSince1970) % 10_000
        // Five agents and four busy clients: the whole of the test run's agent budget.
        await ClusterSlots.shared.acquire(ClusterSlots.shared.limit, who: "fault harness")
        defer { Task { await ClusterSlots.shared.release(ClusterSlots.shared.limit, who: "fault harness") } }
        let r = try await LocalCluster.runAsync(["faults", "--duration", "60", "--every", "4", "--seed", "\(seed)", "--json"], executable: bench,
                                                 limit: .seconds(240))
        let last = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        let report = try #require(try? JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any],
                                  "seed \(seed): no report (exit \(r.status))\n\(r.stdout.suffix(2000))\n\(r.stderr.suffix(4000))")
        print("fault harness, seed \(seed): \(last)")
        func number(_ k: String) -> Double { (report[k] as? NSNumber)?.doubleValue ?? -1 }
        #expect(number("faults") >= 10, "seed \(seed)")
        #expect(number("restartsAfterSnapshot") >= 1, "seed \(seed)")
        #expect(number("writesAcknowledged") >= 100, "seed \(seed)")
        #expect(number("lostWrites") == 0, "seed \(seed)")
        #expect(number("lostJobs") == 0, "seed \(seed)")
        #expect((report["nonLinearizableKeys"] as? [String]) == [], "seed \(seed)")
        #expect(report["finalKeysReadable"] as? Bool == true, "seed \(seed)")
        #expect(number("finalLeaderMs") <= 2000, "seed \(seed)")
        #expect(number("leaderAfterHealMaxMs") <= 2000, "seed \(seed)")
        #expect(number("failovers") >= 1, "seed \(seed)")
        #expect((report["membershipMismatches"] as? [String]) == [], "seed \(seed)")
        #expect(r.status == 0, "seed \(seed): \(r.stderr.suffix(2000))")
    }
}
