import CaravanModel
import HeapModule

/// The leader's queue of evaluations: what the scheduler works on next.
///
/// - **Priority order**: the highest-priority ready evaluation is delivered first; equal
///   priorities in the order they were enqueued.
/// - **One in flight per job**: while a job's evaluation is out (delivered, not yet acknowledged)
///   or being redelivered, newer evaluations of that job wait behind it, merged into one
///   (the scheduler reconciles the whole job, so one pass answers them all). A second evaluation
///   of a job that is already ready is merged into it.
/// - **At least once**: a delivery is acknowledged (`ack`) when its plan is committed, or handed
///   back (`nack`) when it could not be; it is redelivered after a delay (1 s, then 5 s), and a
///   delivery neither acknowledged nor handed back within `nackTimeout` counts as handed back.
///   After `deliveryLimit` deliveries the evaluation is given up and listed in `failed`, for the
///   leader to record as such.
/// - **Blocked evaluations**: an evaluation that could not place everything is parked (one per
///   job, the newest) until capacity frees — a node joins or becomes eligible, an allocation
///   stops — when `unblock` puts them back in the queue.
///
/// Pure and deterministic: time is passed in (milliseconds), tokens count up.
public struct EvalBroker: Sendable {
    public struct Settings: Sendable, Equatable {
        /// How long a delivery may stay out before it counts as handed back.
        public var nackTimeout: Int64 = 60_000
        /// Delay before a handed-back evaluation is delivered again (first, later times).
        public var initialNackDelay: Int64 = 1_000
        public var subsequentNackDelay: Int64 = 5_000
        /// Deliveries before an evaluation is given up.
        public var deliveryLimit = 3
        public init() {}
    }

    /// A job, by namespace and id.
    public struct JobKey: Hashable, Sendable, Comparable {
        public var namespace: String
        public var id: String
        public init(_ namespace: String, _ id: String) { self.namespace = namespace; self.id = id }
        public init(_ e: Evaluation) { self.init(e.namespace, e.jobID) }
        public static func < (a: JobKey, b: JobKey) -> Bool { (a.namespace, a.id) < (b.namespace, b.id) }
    }

    /// An evaluation handed to the scheduler: acknowledge or hand it back with `token`.
    public struct Delivery: Sendable, Equatable {
        public let evaluation: Evaluation
        public let token: UInt64
        /// 1 for the first delivery.
        public let attempt: Int
    }

    public enum BrokerError: Error, Equatable, CustomStringConvertible {
        /// The evaluation is not out under this token (already answered, or timed out and redelivered).
        case notOutstanding(id: String)
        public var description: String {
            switch self {
            case .notOutstanding(let id): "evaluation \(id) is not outstanding under this token"
            }
        }
    }

    public struct Stats: Sendable, Equatable {
        public var ready = 0, unacked = 0, delayed = 0, waiting = 0, blocked = 0, failed = 0
        public init() {}
        init(ready: Int, unacked: Int, delayed: Int, waiting: Int, blocked: Int, failed: Int) {
            (self.ready, self.unacked, self.delayed, self.waiting, self.blocked, self.failed) = (ready, unacked, delayed, waiting, blocked, failed)
        }
    }

    struct Entry: Sendable {
        var eval: Evaluation
        var deliveries = 0
        var readyAt: Int64 = 0
        var seq: UInt64 = 0
        var job: JobKey { JobKey(eval) }

        /// Folds a newer evaluation of the same job into this one: the higher priority wins.
        mutating func merge(_ e: Evaluation) { eval.priority = max(eval.priority, e.priority) }
    }

    /// Where a ready entry stands: higher priority first, then older first. The heap may hold
    /// ranks of entries that have since been merged or delivered; a rank counts only while it
    /// matches its job's ready entry.
    struct Rank: Comparable, Sendable {
        var priority: Int
        var seq: UInt64
        var job: JobKey
        static func < (a: Rank, b: Rank) -> Bool { a.priority != b.priority ? a.priority < b.priority : a.seq > b.seq }
        static func == (a: Rank, b: Rank) -> Bool { a.priority == b.priority && a.seq == b.seq && a.job == b.job }
    }

    public var settings: Settings
    /// Ready entries by job, and their ranks in a heap (the best on top): enqueue and dequeue
    /// cost O(log n) however many are queued.
    private var ready: [JobKey: Entry] = [:]
    private var ranks = Heap<Rank>()
    /// Handed back, to be redelivered at `readyAt`.
    private var delayed: [JobKey: Entry] = [:]
    private var unacked: [String: (entry: Entry, token: UInt64, deadline: Int64)] = [:]
    private var outJobs: Set<JobKey> = []
    /// Newer work for a job whose evaluation is out or delayed.
    private var waiting: [JobKey: Entry] = [:]
    private var blocked: [JobKey: Evaluation] = [:]
    /// Evaluations given up after `deliveryLimit` deliveries, not yet taken by `takeFailed`.
    public private(set) var failed: [Evaluation] = []
    private var nextToken: UInt64 = 0
    private var nextSeq: UInt64 = 0

    public init(settings: Settings = Settings()) { self.settings = settings }

    public var stats: Stats {
        Stats(ready: ready.count, unacked: unacked.count, delayed: delayed.count, waiting: waiting.count, blocked: blocked.count, failed: failed.count)
    }

    /// Whether the job has an evaluation ready, out, delayed or waiting.
    public func isQueued(_ job: JobKey) -> Bool {
        ready[job] != nil || outJobs.contains(job) || delayed[job] != nil || waiting[job] != nil
    }

    /// Adds an evaluation. A newer evaluation supersedes the job's blocked one.
    public mutating func enqueue(_ e: Evaluation) {
        let job = JobKey(e)
        blocked[job] = nil
        let readyEntry = ready[job]
        // Behind an evaluation that is out, or being retried: new work waits (a retry that
        // keeps failing is given up alone).
        if outJobs.contains(job) || delayed[job] != nil || readyEntry.map({ $0.deliveries > 0 }) == true {
            if waiting[job] == nil { waiting[job] = Entry(eval: e) } else { waiting[job]!.merge(e) }
        } else if var entry = readyEntry {
            entry.merge(e)
            insertReady(entry, keepSeq: true)
        } else {
            insertReady(Entry(eval: e), keepSeq: false)
        }
    }

    /// The best ready evaluation, now out under a fresh token; nil when none is ready. Delayed
    /// evaluations whose time has come and timed-out deliveries become ready first.
    public mutating func dequeue(now: Int64) -> Delivery? {
        tick(now: now)
        var popped: Entry?
        while popped == nil, let top = ranks.popMax() {
            if let e = ready[top.job], e.seq == top.seq, e.eval.priority == top.priority { popped = ready.removeValue(forKey: top.job) }
        }
        guard var entry = popped else { return nil }
        entry.deliveries += 1
        nextToken += 1
        unacked[entry.eval.id] = (entry, nextToken, now + settings.nackTimeout)
        outJobs.insert(entry.job)
        return Delivery(evaluation: entry.eval, token: nextToken, attempt: entry.deliveries)
    }

    /// The delivery is done with: the job's waiting work (if any) becomes ready.
    public mutating func ack(_ id: String, token: UInt64) throws(BrokerError) {
        guard let out = unacked[id], out.token == token else { throw .notOutstanding(id: id) }
        unacked[id] = nil
        release(out.entry.job)
    }

    /// The delivery could not be completed: it is delivered again after a delay, or given up
    /// (listed in `failed`) after `deliveryLimit` deliveries.
    public mutating func nack(_ id: String, token: UInt64, now: Int64) throws(BrokerError) {
        guard let out = unacked[id], out.token == token else { throw .notOutstanding(id: id) }
        unacked[id] = nil
        handBack(out.entry, now: now)
    }

    /// Parks an evaluation that could not place everything until `unblock` (one per job, the
    /// newest). Ignored when newer work for the job is already queued (it supersedes this).
    public mutating func block(_ e: Evaluation) {
        let job = JobKey(e)
        guard ready[job] == nil, waiting[job] == nil, delayed[job] == nil else { return }
        blocked[job] = e
    }

    /// Capacity freed: every blocked evaluation goes back in the queue. Returns how many.
    @discardableResult
    public mutating func unblock() -> Int {
        let all = blocked.values.sorted { ($0.createIndex, $0.id) < ($1.createIndex, $1.id) }
        blocked = [:]
        for e in all { enqueue(e) }
        return all.count
    }

    /// Drops a job's blocked evaluation (the job was stopped or purged, or placed after all).
    public mutating func forgetBlocked(_ job: JobKey) { blocked[job] = nil }

    public func blockedEvaluation(of job: JobKey) -> Evaluation? { blocked[job] }

    /// Evaluations given up since the last call.
    public mutating func takeFailed() -> [Evaluation] {
        defer { failed = [] }
        return failed
    }

    /// Moves delayed evaluations whose time has come into the ready queue, and hands back
    /// deliveries out for longer than `nackTimeout`.
    public mutating func tick(now: Int64) {
        for (id, out) in unacked where out.deadline <= now {
            unacked[id] = nil
            handBack(out.entry, now: now)
        }
        for (job, entry) in delayed where entry.readyAt <= now {
            delayed[job] = nil
            insertReady(entry, keepSeq: true)
        }
    }

    /// When something out or delayed next needs attention (a redelivery or a timeout), if ever.
    public var nextDeadline: Int64? {
        (delayed.values.map(\.readyAt) + unacked.values.map(\.deadline)).min()
    }

    // MARK: - Private

    private mutating func handBack(_ entry: Entry, now: Int64) {
        let job = entry.job
        outJobs.remove(job)
        if entry.deliveries >= settings.deliveryLimit {
            var e = entry.eval
            e.status = .failed
            e.statusDescription = "evaluation given up after \(entry.deliveries) deliveries"
            failed.append(e)
            release(job)
            return
        }
        var again = entry
        again.readyAt = now + (entry.deliveries <= 1 ? settings.initialNackDelay : settings.subsequentNackDelay)
        delayed[job] = again
    }

    private mutating func release(_ job: JobKey) {
        outJobs.remove(job)
        guard delayed[job] == nil, ready[job] == nil, let next = waiting.removeValue(forKey: job) else { return }
        insertReady(next, keepSeq: false)
    }

    private mutating func insertReady(_ entry: Entry, keepSeq: Bool) {
        var e = entry
        if !keepSeq || e.seq == 0 {
            nextSeq += 1
            e.seq = nextSeq
        }
        let old = ready.updateValue(e, forKey: e.job)
        if old?.seq != e.seq || old?.eval.priority != e.eval.priority { ranks.insert(Rank(priority: e.eval.priority, seq: e.seq, job: e.job)) }
        // Ranks left by merged entries are dropped now and then, so the heap stays near the queue's size.
        if ranks.count > 2 * ready.count + 64 { ranks = Heap(ready.values.map { Rank(priority: $0.eval.priority, seq: $0.seq, job: $0.job) }) }
    }
}
