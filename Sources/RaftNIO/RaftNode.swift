import Keyring
import Logging
import Metrics
import NIOCore
import NIOPosix
import Primitives
import Raft
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The replicated state machine the agent puts behind Raft. Called on the Raft loop only.
public protocol ReplicatedStateMachine: AnyObject, Sendable {
    /// Applies a committed command and returns the answer for whoever proposed it.
    func apply(_ command: [UInt8], index: LogIndex) -> [UInt8]
    /// Answers a read-only request from the current state.
    func query(_ request: [UInt8]) throws -> [UInt8]
    /// A read in two steps: on the loop, take what the answer reads (cheaply, all at the applied
    /// index); `build` makes the answer on a worker thread, so a large answer does not hold up
    /// heartbeats. By default the whole `query` runs on the worker, so it must be safe to call
    /// beside `apply`.
    func prepareQuery(_ request: [UInt8]) throws -> PreparedRead
    func snapshot() -> [UInt8]
    /// The state as it is now, encoded later by the closure on another thread while the loop goes
    /// on applying: the closure returns what `snapshot()` would have returned at this moment. Make
    /// the capture cheap (a copy of persistent values), so a large state does not stall the loop.
    func captureSnapshot() -> @Sendable () -> [UInt8]
    /// Replaces the whole state with a snapshot's. Throws when the snapshot can't be read: the
    /// node then stops rather than serve a state that silently lost what the snapshot held.
    func restore(_ snapshot: [UInt8]) throws
    /// For a blocking read: how to learn, cheaply and on the Raft loop, the index of the last change
    /// to what `request` answers — so a waiting read wakes only when that moves, not on every
    /// entry applied. nil: any applied entry may change the answer.
    func changeIndex(of request: [UInt8]) -> (@Sendable () -> LogIndex)?
}

/// A read whose inputs were taken on the Raft loop; `build` makes the answer on a worker.
public struct PreparedRead: Sendable {
    public var build: @Sendable () throws -> [UInt8]
    /// An answer that grows with the state (a list, a snapshot): built on the bulk worker, so
    /// small reads — an item, a node's allocations, an ACL token — never queue behind lists
    /// a client may long have given up on.
    public var bulk: Bool

    public init(bulk: Bool = false, _ build: @escaping @Sendable () throws -> [UInt8]) {
        self.build = build
        self.bulk = bulk
    }
}

extension ReplicatedStateMachine {
    public func prepareQuery(_ request: [UInt8]) throws -> PreparedRead {
        PreparedRead { [self] in try self.query(request) }
    }
    public func captureSnapshot() -> @Sendable () -> [UInt8] {
        let bytes = snapshot()
        return { bytes }
    }
    public func changeIndex(of request: [UInt8]) -> (@Sendable () -> LogIndex)? { nil }
}

public struct RaftNodeConfiguration: Sendable {
    public var id: ServerID
    public var bindHost: String
    public var port: Int
    /// `host:port` other agents use to reach this one.
    public var advertise: String
    /// Holds `wal/` and `snapshots/`.
    public var directory: String
    public var settings: RaftSettings
    public var tickInterval: Duration
    public var keyring: SharedKeyring
    /// Applied entries between two snapshots of the state machine.
    public var snapshotEvery: Int
    /// Entries kept in the log behind a snapshot, so a follower a little behind needs no snapshot.
    public var keepEntries: Int
    public var seed: UInt64

    /// Defaults match etcd's: heartbeat 100 ms, election timeout 1 s (10 ms ticks).
    public init(id: ServerID, bindHost: String, port: Int, advertise: String? = nil, directory: String,
                settings: RaftSettings = RaftSettings(heartbeatTicks: 10, electionTicks: 100), tickInterval: Duration = .milliseconds(10),
                keyring: SharedKeyring, snapshotEvery: Int = 10_000, keepEntries: Int = 2_000,
                seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        self.id = id
        self.bindHost = bindHost
        self.port = port
        self.advertise = advertise ?? "\(bindHost):\(port)"
        self.directory = directory
        self.settings = settings
        self.tickInterval = tickInterval
        self.keyring = keyring
        self.snapshotEvery = snapshotEvery
        self.keepEntries = keepEntries
        self.seed = seed
    }
}

/// Why a write or read did not go through.
public struct RaftError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable { case noLeader = "no_leader", timeout, rejected, leadershipLost = "leadership_lost", shuttingDown = "shutting_down", remote }
    public let code: Code
    public let message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}

/// One agent's Raft server: the core, its write-ahead log, the transport and the state machine,
/// all driven on one dedicated event loop in the order etcd prescribes — persist, send, apply.
///
/// Writes from any agent end up as ``apply(_:timeout:)`` on the leader (followers and
/// non-members forward them over RPC); consistent reads use ReadIndex on the leader.
public final class RaftNode: @unchecked Sendable {
    enum Op: UInt8 { case apply = 1, read = 2, status = 3, transfer = 4, staleRead = 5, waitRead = 6 }

    public let id: ServerID
    let config: RaftNodeConfiguration
    let ownGroup: MultiThreadedEventLoopGroup
    let loop: any EventLoop
    let logger: Logger
    let wal: WriteAheadLog
    let fsm: any ReplicatedStateMachine
    let transport: RaftTransport
    var core: RaftCore
    var ticker: RepeatedTask?
    var processScheduled = false
    var knownConfiguration = Configuration()
    var persistedTerm: Term = 0
    var persistedVote: ServerID?
    var applied: LogIndex = 0
    var lastSnapshotIndex: LogIndex = 0
    /// Bytes of commands applied since the last snapshot, and the size of that snapshot: a large
    /// state is snapshotted only once the log behind it has grown by half of it, so snapshots
    /// cost a bounded share of what is written however large the state gets.
    var appliedBytesSinceSnapshot = 0
    var lastSnapshotBytes = 0
    /// A snapshot being encoded and written on `snapshotWorker`; at most one at a time.
    var snapshotInFlight = false
    /// Counts snapshots restored from the leader: a snapshot of our own begun before one is
    /// dropped (the state it captured was replaced) — the worker stops early when it sees it.
    let restores = Atomic<Int>(0)
    /// Encodes and writes snapshots off the Raft loop, so a large state does not stall heartbeats.
    let snapshotWorker = NIOThreadPool(numberOfThreads: 1)
    /// Builds the answers to reads off the loop (a list of thousands of large variables took long
    /// enough on the loop to cost an election): small ones on `queryWorker`, those that grow
    /// with the state on `bulkWorker`.
    let queryWorker = NIOThreadPool(numberOfThreads: 2)
    let bulkWorker = NIOThreadPool(numberOfThreads: 1)
    /// The three, snapshots first: at shutdown a snapshot being written reports to the loop
    /// when done, so the workers stop before the loop does.
    var workers: [NIOThreadPool] { [snapshotWorker, queryWorker, bulkWorker] }
    var proposals: [LogIndex: (term: Term, promise: EventLoopPromise<[UInt8]>)] = [:]
    let commitTimer = Timer(label: "caravan_raft_commit_seconds")
    let electionsCounter = Counter(label: "caravan_raft_elections_total")
    let leaderChangesCounter = Counter(label: "caravan_raft_leader_changes_total")
    var readContext: UInt64 = 0
    var readsConfirmedCount = 0
    var reads: [UInt64: EventLoopPromise<Void>] = [:]
    var readsWaitingApply: [(index: LogIndex, promise: EventLoopPromise<Void>)] = []
    /// Blocking reads waiting for the applied index to pass theirs (and, with a change index,
    /// for what they read to change past `changed`), by ticket.
    var applyWatchers: [UInt64: Watcher] = [:]
    struct Watcher {
        var after: LogIndex
        var changed: LogIndex
        var changeIndex: (@Sendable () -> LogIndex)?
        var promise: EventLoopPromise<Void>
        /// An entry past `after` is applied and, when the state machine can tell, what the read
        /// shows changed past `changed`.
        func isDue(applied: LogIndex) -> Bool {
            guard after < applied else { return false }
            guard let changeIndex else { return true }
            return changeIndex() > changed
        }
    }
    var nextWatcher: UInt64 = 0
    /// When a message from the current leader last arrived (followers).
    var lastLeaderContact: ContinuousClock.Instant?
    /// RPC addresses of agents that are Raft members, from gossip; where non-members forward to.
    var memberHints: [String] = []
    var shuttingDown = false
    /// Received snapshot files waiting for the core to accept them, by index.
    var spooled: [LogIndex: String] = [:]
    /// Set once the loop is about to go away; callbacks from other threads check it first.
    let stopped = Atomic<Bool>(false)
    let shutdownStarted = Atomic<Bool>(false)
    /// The core's status as shutdown found it (answered once the loop is gone).
    let finalStatus = Mutex<RaftStatus?>(nil)
    /// While this server leads: its configuration, set by the Raft thread after every round, so
    /// who leads is answered here without a trip to that thread (``leaderAndConfiguration(timeout:)``).
    private let leading = Mutex<Configuration?>(nil)

    private init(config: RaftNodeConfiguration, fsm: any ReplicatedStateMachine, group: any EventLoopGroup, logger: Logger,
                 recovered: WriteAheadLog.Recovered, wal: WriteAheadLog) throws(WriteAheadLog.Failure) {
        self.id = config.id
        self.config = config
        self.ownGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.loop = ownGroup.next()
        self.logger = logger
        self.wal = wal
        self.fsm = fsm
        self.transport = RaftTransport(id: config.id, bind: config.bindHost, port: config.port, advertise: config.advertise,
                                       keyring: config.keyring, group: ownGroup, logger: logger, spoolDirectory: wal.spoolDirectory)
        self.core = RaftCore(id: config.id, settings: config.settings, seed: config.seed, hardState: recovered.hardState,
                             snapshot: recovered.snapshot?.metadata, entries: recovered.entries)
        self.persistedTerm = recovered.hardState.term
        self.persistedVote = recovered.hardState.vote
        if let snap = recovered.snapshot {
            do { try fsm.restore(snap.data) } catch {
                throw WriteAheadLog.Failure(description: "snapshot \(wal.snapshotPath(snap.metadata)) cannot be restored: \(error); remove this member's data dir to rejoin as a new member")
            }
            applied = snap.metadata.index
            lastSnapshotIndex = snap.metadata.index
            lastSnapshotBytes = snap.data.count
        }
        for w in workers { w.start() }
    }

    /// Opens the log in `config.directory` (repairing a torn tail), restores the state machine,
    /// binds the RPC port and starts ticking.
    public static func start(_ config: RaftNodeConfiguration, stateMachine: any ReplicatedStateMachine,
                             group: any EventLoopGroup, logger: Logger) async throws -> RaftNode {
        let wal = WriteAheadLog(directory: config.directory)
        let recovered = try wal.open()
        for note in recovered.repairs { logger.warning("raft log repaired: \(note)") }
        let node = try RaftNode(config: config, fsm: stateMachine, group: group, logger: logger, recovered: recovered, wal: wal)
        let t = node.transport
        t.onMessage = { m in
            guard !node.stopped.load(ordering: .relaxed) else { return }
            node.loop.execute {
                node.core.step(m)
                if m.from == node.core.leader { node.lastLeaderContact = .now }
                node.scheduleProcess()
            }
        }
        t.onSnapshotFile = { meta, path in
            guard !node.stopped.load(ordering: .relaxed) else { return }
            node.loop.execute { node.spooled[meta.index] = path }
        }
        t.onUnreachable = { peer, gone in
            guard !node.stopped.load(ordering: .relaxed) else { return }
            node.loop.execute {
                if gone, node.core.leader == peer {
                    node.logger.debug("raft: lost the connection to the leader; campaigning early", metadata: ["leader": "\(peer)"])
                    node.core.leaderUnreachable()
                }
                node.core.reportUnreachable(peer)
            }
        }
        t.onRequest = { op, payload in node.handleRequest(op, payload) }
        do {
            try await t.start(port: config.port)
        } catch {
            for w in node.workers { try? await w.shutdownGracefully() }
            try? await node.ownGroup.shutdownGracefully()
            throw error
        }
        try await node.loop.submit {
            node.syncAddresses()
            node.ticker = node.loop.scheduleRepeatedTask(initialDelay: .zero, delay: .nanoseconds(Int64(config.tickInterval / .nanoseconds(1)))) { _ in
                node.core.tick()
                node.process()
            }
            node.process()
        }.get()
        if recovered.entries.count + (recovered.snapshot == nil ? 0 : 1) > 0 {
            logger.info("raft log recovered", metadata: ["term": "\(recovered.hardState.term)", "entries": "\(recovered.entries.count)",
                                                         "snapshot": "\(recovered.snapshot?.metadata.index ?? 0)"])
        }
        return node
    }

    /// Starts a new group with these servers; every one of them must do the same with the same
    /// configuration. Refused if this server already has a log.
    public func bootstrap(_ configuration: Configuration) async throws {
        try await loop.submit {
            guard self.core.lastIndex == 0 else {
                throw RaftError(.rejected, "this agent already belongs to a Raft group")
            }
            // A peer that bootstrapped a moment earlier may already have asked for our vote and
            // raised our term: keep that term and vote (never go back), add the same first entry.
            let entry = RaftCore.bootstrapEntry(configuration)
            let hs = HardState(term: max(1, self.core.term), vote: self.core.vote)
            try self.wal.save(hardState: hs, entries: [entry], sync: true)
            self.persistedTerm = hs.term
            self.persistedVote = hs.vote
            self.core = RaftCore(id: self.id, settings: self.config.settings, seed: self.config.seed ^ 0x5eed, hardState: hs, entries: [entry])
            self.syncAddresses()
            self.logger.info("raft group bootstrapped", metadata: ["voters": "\(configuration.voters.map(\.rawValue).joined(separator: ","))"])
        }.get()
    }

    // MARK: - Writes and reads

    /// The largest command one log entry carries: with its framing it still fits in one message
    /// to a follower (``RaftTransport``'s largest frame).
    public static let maxCommandBytes = RaftCodec.maxEntryBytes - (64 << 10)

    /// Commits `command` through the leader and returns the state machine's answer.
    public func apply(_ command: [UInt8], timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        // Larger would be logged, then never reach the followers: refused before it is.
        guard command.count <= Self.maxCommandBytes else {
            throw RaftError(.rejected, "a command of \(command.count) bytes is over the \(Self.maxCommandBytes)-byte limit of one log entry")
        }
        return try await submit(.apply, command, hops: 0, deadline: ContinuousClock.now + timeout).get()
    }

    /// Answers `request` from state that reflects every write acknowledged before the call
    /// (ReadIndex on the leader); or, when `stale`, from this agent's own copy if it has one.
    public func read(_ request: [UInt8], stale: Bool = false, timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        // A stale read is answered from this agent's copy when it has one, else by any member.
        try await submit(stale ? .staleRead : .read, request, hops: 0, deadline: ContinuousClock.now + timeout).get()
    }

    /// A blocking read: waits (up to `wait`) until this group has applied an entry past `after`,
    /// and — when the state machine can tell (``ReplicatedStateMachine/changeIndex(of:)``) —
    /// until what `request` reads last changed past `changedAfter`; then answers like
    /// ``read(_:stale:timeout:)``, together with the applied index the answer reflects. Returns at
    /// the end of `wait` even if nothing changed (the caller compares).
    public func read(_ request: [UInt8], stale: Bool = false, after: LogIndex, changedAfter: LogIndex = 0, wait: Duration,
                     timeout: Duration = .seconds(10)) async throws -> (applied: LogIndex, answer: [UInt8]) {
        let until = ContinuousClock.now + wait
        // Cancelling the caller's task gives up at once (an agent shutting down does not wait out
        // a read that waits on the leader).
        let payload = Self.waitPayload(request, stale: stale, after: after, changedAfter: changedAfter, until: until)
        let bytes = try await Self.cancellable(submit(.waitRead, payload, hops: 0, deadline: until + timeout))
        var r = ByteReader(bytes)
        guard let applied = r.varint() else { throw RaftError(.remote, "unreadable blocking-read answer") }
        return (applied, Array(r.raw(r.remaining) ?? []))
    }

    /// Awaits a future, or throws `CancellationError` as soon as the calling task is cancelled.
    static func cancellable<T: Sendable>(_ future: EventLoopFuture<T>) async throws -> T {
        let waiting = Mutex<CheckedContinuation<T, any Error>?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
                waiting.withLock { $0 = c }
                future.whenComplete { r in waiting.withLock { $0.take() }?.resume(with: r) }
                if Task.isCancelled { waiting.withLock { $0.take() }?.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            waiting.withLock { $0.take() }?.resume(throwing: CancellationError())
        }
    }

    /// Waits (up to `wait`) until this agent has applied an entry past `after` — and, when
    /// `change` is given (read on the Raft thread after each apply, so it must be cheap), until it
    /// has moved past `changedAfter`: a caller that cares about part of the state is not woken by
    /// writes to the rest. Returns the applied index then.
    public func waitApplied(after: LogIndex, changedAfter: LogIndex = 0, change: (@Sendable () -> LogIndex)? = nil,
                            wait: Duration) async -> LogIndex {
        guard !stopped.load(ordering: .relaxed) else { return after }
        let until = ContinuousClock.now + wait
        return (try? await loop.flatSubmit { self.watch(after: after, changedAfter: changedAfter, change: change, until: until).map { self.applied } }.get()) ?? after
    }

    /// `flags | after | [changedAfter] | wait ms | request`; flags: 1 stale, 2 changedAfter present.
    static func waitPayload(_ request: [UInt8], stale: Bool, after: LogIndex, changedAfter: LogIndex, until: ContinuousClock.Instant) -> [UInt8] {
        var w = ByteWriter(capacity: request.count + 20)
        w.byte((stale ? 1 : 0) | (changedAfter > 0 ? 2 : 0))
        w.varint(after)
        if changedAfter > 0 { w.varint(changedAfter) }
        let left = max(.zero, ContinuousClock.now.duration(to: until))
        w.varint(UInt64(left / .milliseconds(1)))
        w.raw(request)
        return w.bytes
    }

    struct WaitRequest {
        var stale: Bool
        var after: LogIndex
        var changedAfter: LogIndex
        var wait: Duration
        var request: [UInt8]
    }

    static func parseWait(_ payload: [UInt8]) -> WaitRequest? {
        var r = ByteReader(payload)
        guard let flags = r.byte(), flags & ~3 == 0, let after = r.varint() else { return nil }
        var changed: LogIndex = 0
        if flags & 2 != 0 {
            guard let c = r.varint() else { return nil }
            changed = c
        }
        guard let ms = r.varint(), ms <= 3_600_000 else { return nil }
        return WaitRequest(stale: flags & 1 != 0, after: after, changedAfter: changed, wait: .milliseconds(Int64(ms)),
                           request: Array(r.raw(r.remaining) ?? []))
    }

    /// On the loop: a blocking read served here (the leader, or a member for a stale one) —
    /// wait for the applied index, then answer with it; anywhere else, forwarded.
    private func waitRead(_ payload: [UInt8], hops: UInt8, deadline: ContinuousClock.Instant) -> EventLoopFuture<[UInt8]>? {
        guard let p = Self.parseWait(payload) else {
            return loop.makeFailedFuture(RaftError(.rejected, "malformed blocking read"))
        }
        let (stale, after, request) = (p.stale, p.after, p.request)
        let member = stale && core.configuration.contains(id) && applied > 0
        guard member || core.role == .leader else { return nil }
        let until = ContinuousClock.now + p.wait
        return watch(after: after, changedAfter: p.changedAfter, request: request, until: until).flatMap {
            @Sendable func answer() -> EventLoopFuture<[UInt8]> {
                let at = self.applied
                return self.answer(request, deadline: deadline).map { body in
                    var w = ByteWriter()
                    w.varint(at)
                    w.raw(body)
                    return w.bytes
                }
            }
            if member { return answer() }
            if self.core.role == .leader { return self.confirmRead().flatMap { answer() } }
            // Leadership moved while waiting: ask the new leader, without waiting again.
            return self.route(.waitRead, Self.waitPayload(request, stale: false, after: after, changedAfter: p.changedAfter, until: .now),
                              hops: hops, deadline: deadline)
        }
    }

    /// Succeeds once an entry past `after` is applied and what `request` reads changed past
    /// `changedAfter` (when the state machine can tell), or at `until`, whichever comes first.
    private func watch(after: LogIndex, changedAfter: LogIndex, request: [UInt8]?, until: ContinuousClock.Instant) -> EventLoopFuture<Void> {
        watch(after: after, changedAfter: changedAfter, change: changedAfter > 0 ? request.flatMap { fsm.changeIndex(of: $0) } : nil, until: until)
    }

    private func watch(after: LogIndex, changedAfter: LogIndex, change changeIndex: (@Sendable () -> LogIndex)?,
                       until: ContinuousClock.Instant) -> EventLoopFuture<Void> {
        let w = Watcher(after: after, changed: changedAfter, changeIndex: changeIndex, promise: loop.makePromise(of: Void.self))
        guard !w.isDue(applied: applied), ContinuousClock.now < until else {
            w.promise.succeed(())
            return w.promise.futureResult
        }
        nextWatcher += 1
        let ticket = nextWatcher
        let p = w.promise
        applyWatchers[ticket] = w
        let left = ContinuousClock.now.duration(to: until)
        loop.scheduleTask(in: .nanoseconds(Int64(left / .nanoseconds(1)))) {
            self.applyWatchers.removeValue(forKey: ticket)?.promise.succeed(())
        }
        return p.futureResult
    }

    private func wakeWatchers() {
        guard !applyWatchers.isEmpty else { return }
        for (ticket, w) in applyWatchers where w.isDue(applied: applied) {
            applyWatchers[ticket] = nil
            w.promise.succeed(())
        }
    }

    private func submit(_ op: Op, _ payload: [UInt8], hops: UInt8, deadline: ContinuousClock.Instant) -> EventLoopFuture<[UInt8]> {
        guard !stopped.load(ordering: .relaxed) else {
            return MultiThreadedEventLoopGroup.singleton.next().makeFailedFuture(RaftError(.shuttingDown, "the agent is shutting down"))
        }
        return loop.flatSubmit { self.route(op, payload, hops: hops, deadline: deadline) }
    }

    /// On the loop: serve locally if leader, else forward to the leader (or a member), retrying
    /// until the deadline while no leader is known.
    private func route(_ op: Op, _ payload: [UInt8], hops: UInt8, deadline: ContinuousClock.Instant) -> EventLoopFuture<[UInt8]> {
        guard !shuttingDown else { return loop.makeFailedFuture(RaftError(.shuttingDown, "the agent is shutting down")) }
        if op == .staleRead, core.configuration.contains(id), applied > 0 {
            return answer(payload, deadline: deadline)
        }
        if op == .waitRead, let served = waitRead(payload, hops: hops, deadline: deadline) { return served }
        if core.role == .leader {
            switch op {
            case .waitRead: break  // served above
            case .apply: return proposeLocally(payload)
            case .read, .staleRead: return readLocally(payload, deadline: deadline)
            case .status: return loop.makeSucceededFuture(GroupView(core.status).encode())
            case .transfer:
                let target = payload.isEmpty ? nil : ServerID(String(decoding: payload, as: UTF8.self))
                do { try core.transferLeadership(to: target) } catch { return loop.makeFailedFuture(RaftError(.rejected, "\(error)")) }
                scheduleProcess()
                return loop.makeSucceededFuture([])
            }
        }
        // The leader if we know it; otherwise any member gossip names (a server removed while it
        // was down still lists itself, and only the group can tell it where the leader is).
        let leaderAddress = core.leader.flatMap { core.configuration.server($0)?.address ?? transport.addressBook[$0] }
        let anyMember = memberHints.filter { $0 != config.advertise }.randomElement()
        let target: String? = op == .staleRead ? anyMember ?? leaderAddress : leaderAddress ?? anyMember
        let remaining = ContinuousClock.now.duration(to: deadline)
        @Sendable func retrySoon() -> EventLoopFuture<[UInt8]> {
            loop.scheduleTask(in: .milliseconds(25)) {}.futureResult.flatMap { self.route(op, payload, hops: hops, deadline: deadline) }
        }
        // A request passed around while no one knew the leader (an election) has used up its
        // hops; it may still go to the leader once one is known: that is its last stop.
        let towardLeader = target != nil && target == leaderAddress
        guard let target, hops < 3 || (towardLeader && hops < 6) else {
            guard remaining > .milliseconds(50) else {
                return loop.makeFailedFuture(RaftError(.noLeader, "no Raft leader is known; the cluster may be electing one or may have lost its quorum"))
            }
            return retrySoon()
        }
        var w = ByteWriter(capacity: payload.count + 2)
        w.byte(hops + 1)
        if op == .waitRead, let p = Self.parseWait(payload) {
            // What is left of the wait travels, not the wait first asked for.
            let until = ContinuousClock.now + p.wait
            w.raw(Self.waitPayload(p.request, stale: p.stale, after: p.after, changedAfter: p.changedAfter, until: until))
        } else {
            w.raw(payload)
        }
        let timeout = TimeAmount.nanoseconds(Int64(max(remaining, .milliseconds(1)) / .nanoseconds(1)))
        return transport.request(op.rawValue, w.bytes, to: target, timeout: timeout).hop(to: loop).flatMapError { error in
            // The leader moved, went away or refused for now: try again while time remains.
            ContinuousClock.now.duration(to: deadline) > .milliseconds(100) ? retrySoon() : self.loop.makeFailedFuture(error)
        }
    }

    private func handleRequest(_ op: UInt8, _ payload: [UInt8]) -> EventLoopFuture<[UInt8]> {
        guard let op = Op(rawValue: op), let hops = payload.first else {
            return loop.makeFailedFuture(RaftError(.rejected, "unknown request"))
        }
        let rest = Array(payload.dropFirst())
        let wait = op == .waitRead ? Self.parseWait(rest)?.wait ?? .zero : .zero
        return submit(op, rest, hops: hops, deadline: ContinuousClock.now + wait + .seconds(5))
    }

    private func proposeLocally(_ command: [UInt8]) -> EventLoopFuture<[UInt8]> {
        do {
            let (index, term) = try core.propose(command)
            return track(index: index, term: term)
        } catch {
            return loop.makeFailedFuture(RaftError(.rejected, "\(error)"))
        }
    }

    /// The answer for the entry proposed at (index, term): the state machine's result once it is
    /// applied, a failure if another entry takes its place or it is not committed within 10 s.
    private func track(index: LogIndex, term: Term) -> EventLoopFuture<[UInt8]> {
        let p = loop.makePromise(of: [UInt8].self)
        proposals[index] = (term, p)
        let proposed = ContinuousClock.now
        p.futureResult.whenSuccess { [commitTimer] _ in commitTimer.record(duration: ContinuousClock.now - proposed) }
        loop.scheduleTask(in: .seconds(10)) {
            guard let pending = self.proposals[index], pending.term == term else { return }
            self.proposals[index] = nil
            pending.promise.fail(RaftError(.timeout, "the write was not committed within 10s (no quorum?); it may or may not be applied"))
        }
        scheduleProcess()
        return p.futureResult
    }

    private func readLocally(_ request: [UInt8], deadline: ContinuousClock.Instant) -> EventLoopFuture<[UInt8]> {
        confirmRead().flatMap { self.answer(request, deadline: deadline) }
    }

    /// On the loop: what the answer reads is taken now; the answer is built on a worker — unless
    /// it waited there past the read's deadline (its client has given up: nothing is built).
    private func answer(_ request: [UInt8], deadline: ContinuousClock.Instant) -> EventLoopFuture<[UInt8]> {
        do {
            let read = try fsm.prepareQuery(request)
            let build = read.build
            return (read.bulk ? bulkWorker : queryWorker).runIfActive(eventLoop: loop) {
                guard ContinuousClock.now < deadline else {
                    throw RaftError(.timeout, "the read waited past its deadline behind other reads; it was not answered")
                }
                return try build()
            }
        } catch {
            return loop.makeFailedFuture(error)
        }
    }

    /// Succeeds once this leader has confirmed it still leads and has applied everything
    /// committed before the call (ReadIndex).
    private func confirmRead() -> EventLoopFuture<Void> {
        readsConfirmedCount += 1
        readContext += 1
        let p = loop.makePromise(of: Void.self)
        do {
            try core.readIndex(context: readContext)
        } catch {
            return loop.makeFailedFuture(RaftError(.noLeader, "\(error)"))
        }
        reads[readContext] = p
        let ctx = readContext
        loop.scheduleTask(in: .seconds(5)) {
            self.reads.removeValue(forKey: ctx)?.fail(RaftError(.timeout, "the read was not confirmed by a quorum in time"))
        }
        scheduleProcess()
        return p.futureResult
    }

    // MARK: - Operator actions

    /// Who leads and the configuration it leads: answered at once while this server leads (as of
    /// the Raft thread's last round), else asked of the group (``groupView(timeout:)``).
    public func leaderAndConfiguration(timeout: Duration = .seconds(5)) async throws -> (leader: ServerID?, configuration: Configuration) {
        if let configuration = leading.withLock({ $0 }) { return (id, configuration) }
        let v = try await groupView(timeout: timeout)
        return (v.leader, v.configuration)
    }

    /// The group as its leader sees it (asked over RPC when this agent is not the leader).
    public func groupView(timeout: Duration = .seconds(5)) async throws -> GroupView {
        let bytes = try await submit(.status, [], hops: 0, deadline: ContinuousClock.now + timeout).get()
        guard let v = GroupView.decode(bytes) else { throw RaftError(.remote, "the leader sent an unreadable status") }
        return v
    }

    /// Asks the leader, wherever it is, to hand leadership to `target` (or the best voter).
    public func requestLeadershipTransfer(to target: ServerID?, timeout: Duration = .seconds(5)) async throws {
        _ = try await submit(.transfer, Array((target?.rawValue ?? "").utf8), hops: 0, deadline: ContinuousClock.now + timeout).get()
    }

    /// Whether this agent knows a leader, and how long ago it last heard from it (zero on the
    /// leader; nil when it never did) — what a stale read's answer may lag by.
    public func leaderContact() async -> (known: Bool, lastContact: Duration?) {
        (try? await loop.submit { () -> (Bool, Duration?) in
            if self.core.role == .leader { return (true, .zero) }
            return (self.core.leader != nil, self.lastLeaderContact.map { ContinuousClock.now - $0 })
        }.get()) ?? (false, nil)
    }

    public func status() async -> RaftStatus {
        if let s = try? await loop.submit({ self.core.status }).get() { return s }
        return finalStatus.withLock { $0 }!
    }

    public func change(_ change: ConfigurationChange) async throws {
        _ = try await loop.flatSubmit {
            do {
                let (index, term) = try self.core.proposeChange(change)
                return self.track(index: index, term: term)
            } catch {
                return self.loop.makeFailedFuture(RaftError(.rejected, "\(error)"))
            }
        }.get()
    }

    /// Addresses of agents that are Raft members (from gossip), for forwarding from non-members.
    public func setMemberHints(_ addresses: [String]) {
        loop.execute { self.memberHints = addresses }
    }

    /// Tells the transport where a server listens (for a learner about to be added).
    public func learnAddress(_ id: ServerID, _ address: String) { transport.learn(id, address: address) }

    public var framesDropped: Int { get async { (try? await transport.loop.submit { self.transport.framesDropped }.get()) ?? 0 } }
    /// Incoming RPC connections closed for exceeding the per-address or total cap, or for not
    /// proving the key in time.
    public var framesReplayed: Int { get async { (try? await transport.loop.submit { self.transport.framesReplayed }.get()) ?? 0 } }
    public var connectionsRefused: Int { get async { (try? await transport.loop.submit { self.transport.connectionsRefused }.get()) ?? 0 } }
    /// ReadIndex rounds this agent started as the leader (each one heartbeat to every follower).
    public var readsConfirmed: Int { get async { (try? await loop.submit { self.readsConfirmedCount }.get()) ?? 0 } }
    public var walCounters: (fsyncs: Int, entries: Int) { get async { (try? await loop.submit { (self.wal.fsyncs, self.wal.entriesWritten) }.get()) ?? (0, 0) } }

    /// The first index still in the log (past 1 once a snapshot has compacted it).
    var firstIndex: LogIndex { get async { (try? await loop.submit { self.core.firstIndex }.get()) ?? 0 } }

    /// Hands leadership to another voter first (so the cluster does not wait for an election
    /// timeout), then stops.
    public func shutdown(transferTimeout: Duration = .seconds(1)) async {
        // Once: a second call (the agent's cleanup after an early stop) returns at once.
        guard !shutdownStarted.exchange(true, ordering: .relaxed) else { return }
        let wasLeader = (try? await loop.submit { () -> Bool in
            guard self.core.role == .leader, self.core.configuration.voters.count > 1 else { return false }
            try? self.core.transferLeadership(to: nil)
            self.process()
            return true
        }.get()) ?? false
        if wasLeader {
            let deadline = ContinuousClock.now + transferTimeout
            while ContinuousClock.now < deadline {
                let still = (try? await loop.submit { self.core.role == .leader }.get()) ?? false
                if !still { break }
                try? await Task.sleep(for: .milliseconds(2))
            }
        }
        try? await loop.submit {
            self.shuttingDown = true
            self.leading.withLock { $0 = nil }
            self.finalStatus.withLock { $0 = self.core.status }
            self.ticker?.cancel()
            for (_, p) in self.proposals { p.promise.fail(RaftError(.shuttingDown, "the agent is shutting down")) }
            self.proposals = [:]
            for (_, w) in self.applyWatchers { w.promise.succeed(()) }
            self.applyWatchers = [:]
        }.get()
        await transport.close()
        stopped.store(true, ordering: .relaxed)
        // The loop itself stays a while: the agent's other services may still ask for status or
        // propose (they get shutting_down) while they stop; it goes with the process, or after 5 s.
        let (group, workers) = (ownGroup, workers)
        Task.detached {
            try? await Task.sleep(for: .seconds(5))
            for w in workers { try? await w.shutdownGracefully() }
            try? await group.shutdownGracefully()
        }
    }

    // MARK: - The loop

    private func scheduleProcess() {
        guard !processScheduled else { return }
        processScheduled = true
        loop.execute {
            self.processScheduled = false
            self.process()
        }
    }

    /// Persist, send, apply — for every Ready the core has.
    private func process() {
        guard !shuttingDown else { return }
        while core.hasReady {
            let r = core.ready()
            // A leader may send appends before its own fsync (dissertation §10.2.1): its entries
            // count toward commitment only once advance() reports them stable. Anything that
            // changes term or vote must be on disk before any message leaves.
            let termOrVoteChanged = r.hardState.map { $0.term != persistedTerm || $0.vote != persistedVote } ?? false
            let sendFirst = core.role == .leader && !termOrVoteChanged && r.snapshot == nil
            if sendFirst { send(r.messages) }
            do {
                if let snap = r.snapshot {
                    // A snapshot from the leader: its file (spooled while it arrived) becomes ours.
                    if let path = spooled.removeValue(forKey: snap.metadata.index) {
                        try wal.installSnapshotFile(path, metadata: snap.metadata)
                    } else {
                        try wal.saveSnapshot(snap)
                    }
                }
                try wal.save(hardState: r.hardState, entries: r.entries, resetTo: r.snapshot?.metadata.index, sync: r.mustSync)
            } catch {
                logger.critical("cannot write the Raft log; stopping so no acknowledged write is lost", metadata: ["error": "\(error)"])
                exit(74)
            }
            if let hs = r.hardState {
                persistedTerm = hs.term
                persistedVote = hs.vote
            }
            if !sendFirst { send(r.messages) }
            if let snap = r.snapshot {
                do {
                    let data = try wal.readSnapshot(snap.metadata).data
                    try fsm.restore(data)
                    (lastSnapshotBytes, appliedBytesSinceSnapshot) = (data.count, 0)
                } catch {
                    logger.critical("cannot restore the snapshot the leader sent; stopping so no state is served without it", metadata: ["error": "\(error)"])
                    exit(74)
                }
                applied = snap.metadata.index
                lastSnapshotIndex = snap.metadata.index
                restores.add(1, ordering: .relaxed)
                wal.removeSegments(before: snap.metadata.index + 1)
                for (i, p) in proposals where i <= applied {
                    p.promise.fail(RaftError(.leadershipLost, "leadership changed before the write was applied"))
                    proposals[i] = nil
                }
            }
            for e in r.committed { applyEntry(e) }
            for rs in r.readStates {
                if let p = reads.removeValue(forKey: rs.context) { readsWaitingApply.append((rs.index, p)) }
            }
            core.advance(r)
            answerReads()
            wakeWatchers()
        }
        syncAddresses()
        failStaleProposals()
        maybeSnapshot()
        noteRoleChange()
        let leads = core.role == .leader ? core.configuration : nil
        leading.withLock { $0 = leads }
    }

    private var lastRole: Role = .follower
    private var lastLeader: ServerID?

    private func noteRoleChange() {
        guard core.role != lastRole || core.leader != lastLeader else { return }
        if core.role == .candidate && lastRole != .candidate { electionsCounter.increment() }
        if core.leader != lastLeader && core.leader != nil { leaderChangesCounter.increment() }
        lastRole = core.role
        lastLeader = core.leader
        if core.role == .leader {
            logger.info("raft: this agent is the leader", metadata: ["term": "\(core.term)"])
        } else if let l = core.leader {
            logger.info("raft: following \(l)", metadata: ["term": "\(core.term)"])
        } else {
            logger.debug("raft: \(core.role.rawValue), no leader", metadata: ["term": "\(core.term)"])
        }
    }

    /// Hands messages to the transport; snapshots are streamed from their file.
    private func send(_ messages: [Message]) {
        var plain: [Message] = []
        plain.reserveCapacity(messages.count)
        for m in messages {
            if case .snapshot(let s) = m.body {
                transport.sendSnapshot(m, file: wal.snapshotPath(s.metadata))
            } else {
                plain.append(m)
            }
        }
        if !plain.isEmpty { transport.send(plain) }
    }

    private func applyEntry(_ e: Entry) {
        var result: [UInt8] = []
        if e.kind == .command { result = fsm.apply(e.data, index: e.index) }
        appliedBytesSinceSnapshot += e.data.count
        applied = e.index
        if let p = proposals.removeValue(forKey: e.index) {
            if p.term == e.term {
                p.promise.succeed(result)
            } else {
                p.promise.fail(RaftError(.leadershipLost, "leadership changed before the write was committed; it was not applied"))
            }
        }
    }

    private func answerReads() {
        guard !readsWaitingApply.isEmpty else { return }
        var rest: [(index: LogIndex, promise: EventLoopPromise<Void>)] = []
        for w in readsWaitingApply {
            if w.index <= applied { w.promise.succeed(()) } else { rest.append(w) }
        }
        readsWaitingApply = rest
    }

    /// A proposal whose entry was cut from the log (a new leader overwrote it) can never apply.
    /// Entries still in the log are settled by applyEntry: same term applied, other term failed.
    private func failStaleProposals() {
        guard !proposals.isEmpty, core.role != .leader else { return }
        for (i, p) in proposals {
            if i > core.lastIndex {
                p.promise.fail(RaftError(.leadershipLost, "leadership changed before the write was committed; it was not applied"))
            } else {
                // Still in the log, uncommitted: a new leader may yet commit it or drop it.
                p.promise.fail(RaftError(.leadershipLost, "leadership changed while the write was in flight; it may or may not be applied"))
            }
            proposals[i] = nil
        }
    }

    /// A state under this size is snapshotted every `snapshotEvery` entries; a larger one also
    /// waits until the commands applied since add up to half of its last snapshot.
    static let largeSnapshotBytes = 8 << 20

    private func maybeSnapshot() {
        guard !snapshotInFlight, applied >= lastSnapshotIndex + LogIndex(config.snapshotEvery) else { return }
        guard lastSnapshotBytes < Self.largeSnapshotBytes || appliedBytesSinceSnapshot >= lastSnapshotBytes / 2 else { return }
        guard let meta = core.snapshotMetadata(index: applied) else { return }
        // The state is captured here, at `applied`; encoding and writing it happen on the worker
        // while the loop goes on. The log is compacted only once the snapshot that replaces it is
        // on disk (a failed write, say a full disk, leaves the log whole and is tried again after
        // another snapshotEvery entries, not on every pass).
        lastSnapshotIndex = meta.index
        snapshotInFlight = true
        let encode = fsm.captureSnapshot()
        let (file, counted, restoresThen) = (wal.snapshotPath(meta) + ".tmp", appliedBytesSinceSnapshot, restores.load(ordering: .relaxed))
        snapshotWorker.submit { [self] state in
            let written: Result<Int, WriteAheadLog.Failure>
            do throws(WriteAheadLog.Failure) {
                guard state == .active else { throw WriteAheadLog.Failure(description: "the agent is stopping") }
                let superseded = WriteAheadLog.Failure(description: "superseded by the leader's snapshot")
                guard restores.load(ordering: .relaxed) == restoresThen else { throw superseded }
                let data = encode()
                guard restores.load(ordering: .relaxed) == restoresThen else { throw superseded }
                try WriteAheadLog.writeSnapshotFile(Snapshot(metadata: meta, data: data), to: file)
                written = .success(data.count)
            } catch {
                written = .failure(error)
            }
            // The loop outlives the worker (shutdown stops the worker first).
            loop.execute { self.snapshotWritten(meta, file: file, written, counted: counted, restoresThen: restoresThen) }
        }
    }

    private func snapshotWritten(_ meta: SnapshotMetadata, file: String, _ written: Result<Int, WriteAheadLog.Failure>,
                                 counted: Int, restoresThen: Int) {
        snapshotInFlight = false
        let size: Int
        switch written {
        case .success(let n): size = n
        case .failure(let error):
            unlink(file)
            // Stopping, or the leader's snapshot replaced the state: nothing failed.
            if !shuttingDown && restores.load(ordering: .relaxed) == restoresThen {
                logger.error("snapshot failed; the log is kept whole", metadata: ["error": "\(error)"])
            }
            return
        }
        // Stopping, or the leader's snapshot replaced the state this one captured: not installed.
        guard !shuttingDown, restores.load(ordering: .relaxed) == restoresThen, core.snapshotMetadata(index: meta.index) == meta else {
            unlink(file)
            return
        }
        do {
            try wal.installSnapshotFile(file, metadata: meta)
        } catch {
            unlink(file)
            logger.error("snapshot failed; the log is kept whole", metadata: ["error": "\(error)"])
            return
        }
        (lastSnapshotBytes, appliedBytesSinceSnapshot) = (size, max(0, appliedBytesSinceSnapshot - counted))
        _ = core.compact(index: meta.index, keep: config.keepEntries)
        do {
            try wal.rollOver()
            wal.removeSegments(before: core.firstIndex)
        } catch {
            logger.critical("cannot start a new Raft log segment; stopping so no acknowledged write is lost", metadata: ["error": "\(error)"])
            exit(74)
        }
        // Enough may have been applied meanwhile for the next one.
        maybeSnapshot()
    }

    private func syncAddresses() {
        guard core.configuration != knownConfiguration else { return }
        knownConfiguration = core.configuration
        for s in knownConfiguration.servers { transport.learn(s.id, address: s.address) }
    }
}

/// The leader's view of the group, as `caravan operator raft peers` shows it.
public struct GroupView: Sendable, Equatable {
    public var term: Term
    public var leader: ServerID?
    public var commit: LogIndex
    public var configuration: Configuration
    /// How far each follower's log matches the leader's.
    public var matches: [ServerID: LogIndex]

    init(_ s: RaftStatus) {
        term = s.term
        leader = s.leader
        commit = s.commit
        configuration = s.configuration
        matches = Dictionary(uniqueKeysWithValues: s.peers.map { ($0.id, $0.match) })
        matches[s.id] = s.lastIndex
    }

    init(term: Term, leader: ServerID?, commit: LogIndex, configuration: Configuration, matches: [ServerID: LogIndex]) {
        self.term = term
        self.leader = leader
        self.commit = commit
        self.configuration = configuration
        self.matches = matches
    }

    func encode() -> [UInt8] {
        var w = ByteWriter()
        w.varint(term); w.string(leader?.rawValue ?? ""); w.varint(commit)
        w.blob(ConfigurationCodec.encode(configuration))
        w.varint(UInt64(matches.count))
        for (k, v) in matches.sorted(by: { $0.key < $1.key }) { w.string(k.rawValue); w.varint(v) }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) -> GroupView? {
        var r = ByteReader(bytes)
        guard let t = r.varint(), let l = r.string(), let c = r.varint(), let cb = r.blob(max: 1 << 20),
              let config = ConfigurationCodec.decode(cb), let n = r.count(max: 1024) else { return nil }
        var m: [ServerID: LogIndex] = [:]
        for _ in 0..<n {
            guard let k = r.string(), let v = r.varint() else { return nil }
            m[ServerID(k)] = v
        }
        return GroupView(term: t, leader: l.isEmpty ? nil : ServerID(l), commit: c, configuration: config, matches: m)
    }
}
