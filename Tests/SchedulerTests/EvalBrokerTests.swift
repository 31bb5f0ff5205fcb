import CaravanModel
import CaravanTesting
@testable import Scheduler
import Testing

/// The evaluation broker: priority order, one evaluation in flight per job, at-least-once
/// delivery with hand-back and redelivery, blocked evaluations woken by capacity.
@Suite struct EvalBrokerTests {
    static func eval(_ id: String, job: String, priority: Int = 50, ns: String = "default") -> Evaluation {
        var e = Evaluation(id: id, jobID: job, priority: priority, triggeredBy: .jobRegister)
        e.namespace = ns
        return e
    }

    static func next(_ b: inout EvalBroker, _ now: Int64) -> EvalBroker.Delivery? { b.dequeue(now: now) }

    @Test func deliversByPriorityThenInOrder() throws {
        var b = EvalBroker()
        b.enqueue(Self.eval("e1", job: "a", priority: 50))
        b.enqueue(Self.eval("e2", job: "b", priority: 80))
        b.enqueue(Self.eval("e3", job: "c", priority: 50))
        b.enqueue(Self.eval("e4", job: "d", priority: 10))
        var order: [String] = []
        while let d = b.dequeue(now: 0) {
            order.append(d.evaluation.id)
            try b.ack(d.evaluation.id, token: d.token)
        }
        #expect(order == ["e2", "e1", "e3", "e4"])
        #expect(b.stats == EvalBroker.Stats())
    }

    @Test func oneInFlightPerJobAndNewerWorkMerges() throws {
        var b = EvalBroker()
        b.enqueue(Self.eval("e1", job: "web"))
        let first = try #require(Self.next(&b, 0))
        // Two more for the same job while the first is out: they wait, merged into one.
        b.enqueue(Self.eval("e2", job: "web", priority: 40))
        b.enqueue(Self.eval("e3", job: "web", priority: 90))
        b.enqueue(Self.eval("x1", job: "other"))
        #expect(Self.next(&b, 0)?.evaluation.id == "x1")
        #expect(Self.next(&b, 0) == nil, "web is out: its waiting work must not be delivered beside it")
        #expect(b.stats.waiting == 1)
        try b.ack(first.evaluation.id, token: first.token)
        let next = try #require(Self.next(&b, 0))
        #expect(next.evaluation.id == "e2")
        #expect(next.evaluation.priority == 90, "the merged entry keeps the highest priority")
        // A second evaluation of a job that is only ready merges too.
        b.enqueue(Self.eval("r1", job: "ready"))
        b.enqueue(Self.eval("r2", job: "ready", priority: 70))
        #expect(b.stats.ready == 1)
    }

    @Test func handedBackEvaluationsAreRedeliveredAfterADelayThenGivenUp() throws {
        var b = EvalBroker()
        b.enqueue(Self.eval("e1", job: "web"))
        let d1 = try #require(Self.next(&b, 0))
        #expect(d1.attempt == 1)
        try b.nack("e1", token: d1.token, now: 100)
        #expect(Self.next(&b, 500) == nil, "redelivered only after the first hand-back delay")
        #expect(b.nextDeadline == 1_100)
        let d2 = try #require(Self.next(&b, 1_100))
        #expect(d2.evaluation.id == "e1" && d2.attempt == 2)
        #expect(throws: EvalBroker.BrokerError.notOutstanding(id: "e1")) { try b.ack("e1", token: d1.token) }
        try b.nack("e1", token: d2.token, now: 2_000)
        #expect(Self.next(&b, 3_000) == nil, "later hand-backs wait longer")
        let d3 = try #require(Self.next(&b, 7_000))
        #expect(d3.attempt == 3)
        // New work arriving meanwhile waits; the give-up releases it.
        b.enqueue(Self.eval("e2", job: "web"))
        try b.nack("e1", token: d3.token, now: 7_500)
        let failed = b.takeFailed()
        #expect(failed.map(\.id) == ["e1"] && failed[0].status == .failed)
        #expect(failed[0].statusDescription.contains("3 deliveries"))
        #expect(Self.next(&b, 7_500)?.evaluation.id == "e2")
        #expect(b.takeFailed().isEmpty)
    }

    @Test func aDeliveryNotAnsweredInTimeIsRedelivered() throws {
        var s = EvalBroker.Settings()
        s.nackTimeout = 1_000
        var b = EvalBroker(settings: s)
        b.enqueue(Self.eval("e1", job: "web"))
        let d1 = try #require(Self.next(&b, 0))
        #expect(Self.next(&b, 999) == nil)
        b.tick(now: 1_000)  // timed out: handed back
        #expect(b.stats.unacked == 0 && b.stats.delayed == 1)
        let d2 = try #require(Self.next(&b, 2_000))
        #expect(d2.evaluation.id == "e1" && d2.token != d1.token)
        #expect(throws: EvalBroker.BrokerError.self) { try b.ack("e1", token: d1.token) }
        try b.ack("e1", token: d2.token)
    }

    @Test func blockedEvaluationsWaitForCapacityAndAreSupersededByNewWork() throws {
        var b = EvalBroker()
        b.block(Self.eval("b1", job: "big"))
        b.block(Self.eval("b2", job: "huge"))
        b.block(Self.eval("b3", job: "big"))  // newest per job
        #expect(b.stats.blocked == 2)
        #expect(Self.next(&b, 0) == nil)
        // New work for a blocked job replaces its blocked evaluation.
        b.enqueue(Self.eval("n1", job: "huge"))
        #expect(b.stats.blocked == 1 && b.blockedEvaluation(of: .init("default", "big"))?.id == "b3")
        let woken = b.unblock()
        #expect(woken == 1)
        var got: [String] = []
        while let d = b.dequeue(now: 0) { got.append(d.evaluation.id); try b.ack(d.evaluation.id, token: d.token) }
        #expect(got == ["n1", "b3"])
        // Blocking is ignored while newer work for the job is queued.
        b.enqueue(Self.eval("q1", job: "big"))
        b.block(Self.eval("old", job: "big"))
        #expect(b.stats.blocked == 0)
    }

    /// Seeded random operations against the broker's promises: never two deliveries of one job
    /// out at once; every enqueued job is eventually delivered after its last enqueue; tokens
    /// of answered deliveries are refused.
    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func randomOperationsKeepThePromises(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        var b = EvalBroker()
        var out: [String: (job: String, token: UInt64)] = [:]
        var needs: Set<String> = []  // jobs enqueued since their last delivery began
        var now: Int64 = 0
        var n = 0
        for _ in 0..<3_000 {
            now += Int64.random(in: 0...400, using: &rng)
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4:
                n += 1
                let job = "j\(Int.random(in: 0..<8, using: &rng))"
                b.enqueue(Self.eval("e\(n)", job: job, priority: Int.random(in: 1...100, using: &rng)))
                needs.insert(job)
            case 4..<7:
                if let d = b.dequeue(now: now) {
                    #expect(!out.values.contains { $0.job == d.evaluation.jobID }, "two deliveries of \(d.evaluation.jobID) out at once")
                    out[d.evaluation.id] = (d.evaluation.jobID, d.token)
                    needs.remove(d.evaluation.jobID)
                }
            case 7..<9:
                if let (id, o) = out.randomElement(using: &rng) {
                    out[id] = nil
                    try b.ack(id, token: o.token)
                    #expect(throws: EvalBroker.BrokerError.self) { try b.ack(id, token: o.token) }
                }
            default:
                if let (id, o) = out.randomElement(using: &rng) {
                    out[id] = nil
                    try b.nack(id, token: o.token, now: now)
                    if !b.failed.contains(where: { $0.id == id }) { needs.insert(o.job) }
                }
            }
        }
        // Drain: acknowledge everything; every job that still needed work gets delivered.
        for (id, o) in out { try b.ack(id, token: o.token) }
        var guardrail = 0
        while b.stats.ready + b.stats.delayed + b.stats.waiting > 0 && guardrail < 10_000 {
            guardrail += 1
            now += 1_000
            while let d = b.dequeue(now: now) {
                needs.remove(d.evaluation.jobID)
                try b.ack(d.evaluation.id, token: d.token)
            }
        }
        _ = b.takeFailed()
        #expect(needs.isEmpty, "jobs never delivered after their last enqueue: \(needs.sorted())")
        #expect(b.stats == EvalBroker.Stats())
    }
}
