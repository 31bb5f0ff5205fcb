import API
import Foundation
import Testing

/// A log follow of a quiet task is ended by the agent from time to time (30 s, or
/// `--max-query-wait` when shorter) and resumed by the client, so `alloc logs -f` still shows
/// everything — and a client that went away no longer holds a follow slot for as long as the
/// task stays quiet (it held it until the task ended).
@Suite struct FollowEndToEndTests {
    @Test func aQuietFollowIsResumedAndAClientThatLeftFreesItsSlot() async throws {
        let c = try await LocalCluster(subnet: 92)
        try c.start(0, extra: ["--max-query-wait", "1"])
        for i in 1...2 { try c.start(i, join: [0], extra: ["--max-query-wait", "1"]) }
        _ = try await RaftEndToEndTests.agreedLeader(c, [0, 1, 2])
        let job = """
        id: quiet
        type: batch
        groups:
          - name: g
            count: 1
            tasks:
              - name: t
                driver: raw_exec
                config: {command: /bin/sh, args: ["-c", "echo a; sleep 3; echo b; sleep 3; echo c"]}
                resources: {cpu: 50m, memory: 32Mi}
        """
        let (a, node) = try await c.runJob(job, id: "quiet")
        let other = (node + 1) % 3

        // A client that reads the head of a follow and leaves: its slot is free again within
        // the idle period, though the task stays quiet.
        let size = try await c.agent(node).api.logs(allocation: a.id, task: "t", stderr: false, offset: 0).size
        let leaver = Task {
            // From the end: nothing to send until the task writes again (3 s later).
            let s = try await c.agent(node).api.followLogs(allocation: a.id, task: "t", stderr: false, offset: size)
            s.close()
        }
        _ = try await leaver.value
        try await c.eventually(within: .seconds(2.5), "the follow slot is free again") {
            guard let r = try? await c.agent(node).api.send(.GET, "/v1/metrics") else { return false }
            return String(decoding: r.body, as: UTF8.self).contains("caravan_http_streams{kind=\"follow\"} 0")
        }

        // Through another agent (a relay), with quiet stretches longer than the idle period:
        // everything arrives, in order, and the command ends when the task does.
        let r = try await LocalCluster.runAsync(["alloc", "logs", "-f", a.id, "--address", "http://\(c.ip(other)):4680"], limit: .seconds(60))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "a\nb\nc\n", "\(r.stdout)")
    }
}
