import Primitives

/// One Raft server without IO, in the etcd shape: the shell calls ``tick()`` on a timer,
/// ``step(_:)`` for every message, ``propose(_:)`` for writes, then drains ``ready()`` —
/// persist, send, apply — and calls ``advance(_:)``.
///
/// Implements leader election with PreVote and CheckQuorum, pipelined replication with flow
/// control and fast backtracking, ReadIndex reads, single-server membership changes with
/// learners, leadership transfer and snapshots. Section numbers refer to the Raft paper and
/// Ongaro's dissertation.
public struct RaftCore: Sendable {
    public enum ProposalError: Error, Equatable, Sendable, CustomStringConvertible {
        case notLeader(ServerID?)
        case transferringLeadership
        case configurationChangePending
        case tooManyUncommitted
        case invalidChange(String)

        public var description: String {
            switch self {
            case .notLeader(let l): "not the leader" + (l.map { " (the leader is \($0))" } ?? " (no leader known)")
            case .transferringLeadership: "leadership is being transferred"
            case .configurationChangePending: "another configuration change is still being committed"
            case .tooManyUncommitted: "too many uncommitted entries; try again"
            case .invalidChange(let why): why
            }
        }
    }

    public let id: ServerID
    public let settings: RaftSettings
    public private(set) var term: Term
    public private(set) var vote: ServerID?
    public private(set) var role: Role = .follower
    public private(set) var leader: ServerID?
    public private(set) var configuration: Configuration
    var log: RaftLog

    private var random: Xoshiro
    /// Ticks since this core started; the leader stamps followers' answers with it.
    private var clock = 0
    private var electionElapsed = 0
    private var heartbeatElapsed = 0
    private var randomizedElectionTimeout = 0
    private var votes: [ServerID: Bool] = [:]
    private var progress: [ServerID: Progress] = [:]
    private var snapshotElapsed: [ServerID: Int] = [:]
    private var outbox: [Message] = []
    private var readStates: [ReadState] = []
    private struct PendingRead { var seq: UInt64; var context: UInt64; var index: LogIndex; var from: ServerID; var acks: Set<ServerID> }
    private var pendingReads: [PendingRead] = []
    private var readsAwaitingCommit: [(context: UInt64, from: ServerID)] = []
    private var readSeq: UInt64 = 0
    private var transferTarget: ServerID?
    private var transferElapsed = 0
    private var uncommittedBytes = 0
    private var needsBroadcast = false
    /// A follower's commit index is behind and no append will carry it: told at the next tick
    /// (``RaftSettings/commitNoticeAtTick``).
    private(set) var commitNoticeDue = false
    private var configurationIndex: LogIndex
    private var persistedHardState: HardState
    private var snapshotToInstall: Snapshot?

    /// Creates a server from what it persisted: hard state, latest snapshot, log entries after it.
    public init(id: ServerID, settings: RaftSettings = RaftSettings(), seed: UInt64,
                hardState: HardState = HardState(), snapshot: SnapshotMetadata? = nil, entries: [Entry] = []) {
        self.id = id
        self.settings = settings
        self.random = Xoshiro(seed: seed)
        self.term = hardState.term
        self.vote = hardState.vote
        let meta = snapshot ?? SnapshotMetadata(index: 0, term: 0, configuration: Configuration())
        self.log = RaftLog(snapshot: meta, entries: entries, committed: hardState.commit)
        self.log.committed = min(log.committed, log.lastIndex)
        if snapshot != nil { self.log.latestSnapshot = meta }
        self.configurationIndex = log.configurationIndex
        self.configuration = log.configuration(at: log.lastIndex, base: meta.configuration)
        self.persistedHardState = hardState
        resetElectionTimeout()
    }

    /// The entry that starts a new group: every bootstrapping server writes the same one (term 1,
    /// index 1) with `HardState(term: 1)` before it starts.
    public static func bootstrapEntry(_ configuration: Configuration) -> Entry {
        Entry(term: 1, index: 1, kind: .configuration, data: ConfigurationCodec.encode(configuration))
    }

    public var status: RaftStatus {
        RaftStatus(id: id, term: term, role: role, leader: leader, commit: log.committed, applied: log.applied,
                   lastIndex: log.lastIndex, configuration: configuration,
                   peers: progress.keys.sorted().map { RaftStatus.Peer(id: $0, match: progress[$0]!.match, recentlyActive: isRecentlyActive(progress[$0]!)) })
    }

    public var commitIndex: LogIndex { log.committed }
    public var lastIndex: LogIndex { log.lastIndex }
    public var appliedIndex: LogIndex { log.applied }
    private var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
    private var isPromotable: Bool { configuration.isVoter(id) }

    // MARK: - Inputs

    /// Advances the logical clock by one tick.
    public mutating func tick() {
        clock += 1
        if role == .leader { tickLeader() } else { tickElection() }
    }

    private mutating func tickElection() {
        electionElapsed += 1
        if isPromotable && electionElapsed >= randomizedElectionTimeout {
            electionElapsed = 0
            campaign(preVote: settings.preVote, transfer: false)
        }
    }

    private mutating func tickLeader() {
        heartbeatElapsed += 1
        electionElapsed += 1
        // CheckQuorum, every tick: step down as soon as a quorum has been silent for an
        // election timeout, so a cut-off leader is gone within one timeout of the cut.
        if settings.checkQuorum && !quorumRecentlyActive() {
            becomeFollower(term: term, leader: nil)
            return
        }
        if electionElapsed >= settings.electionTicks {
            electionElapsed = 0
            if transferTarget != nil { transferTarget = nil }
        }
        for (peer, elapsed) in snapshotElapsed {
            if elapsed + 1 >= settings.electionTicks * 2 {
                // The snapshot (or its answer) was lost; go back to probing.
                snapshotElapsed[peer] = nil
                progress[peer]?.becomeProbe()
            } else {
                snapshotElapsed[peer] = elapsed + 1
            }
        }
        if commitNoticeDue {
            commitNoticeDue = false
            sendCommitNotices()
        }
        if heartbeatElapsed >= settings.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat(context: pendingReads.last?.seq ?? 0)
        }
    }

    /// An empty append to each follower that is caught up, idle, and behind on the commit index.
    private mutating func sendCommitNotices() {
        for peer in progress.keys.sorted() {
            let pr = progress[peer]!
            if pr.state == .replicate && pr.inflight.isEmpty && pr.sentCommit < log.committed {
                sendAppend(to: peer, sendIfEmpty: true)
            }
        }
    }

    /// Feeds one message from another server.
    public mutating func step(_ m: Message) {
        guard m.to == id, m.from != id else { return }
        if m.term > term {
            if case .vote(_, _, _, let transfer) = m.body {
                let inLease = settings.checkQuorum && leader != nil && electionElapsed < settings.electionTicks
                if inLease && !transfer { return }  // §4.2.3: a disruptive server cannot depose a live leader
            }
            switch m.body {
            case .vote(_, _, true, _): break  // a pre-vote never changes our term
            case .voteResponse(true, true): break  // granted pre-votes carry the future term
            case .append, .heartbeat, .snapshot: becomeFollower(term: m.term, leader: m.from)
            default: becomeFollower(term: m.term, leader: nil)
            }
        } else if m.term < term {
            switch m.body {
            case .append, .heartbeat:
                // Tell a stale leader about the newer term so it steps down.
                if settings.checkQuorum || settings.preVote {
                    send(to: m.from, .appendResponse(success: false, index: 0, hintIndex: 0, hintTerm: 0))
                }
            case .vote(_, _, true, _):
                send(to: m.from, .voteResponse(granted: false, preVote: true))
            default: break
            }
            return
        }

        if case .vote(let lastIndex, let lastTerm, let pre, _) = m.body {
            handleVote(m, lastIndex: lastIndex, lastTerm: lastTerm, preVote: pre)
            return
        }
        switch role {
        case .leader: stepLeader(m)
        case .candidate, .preCandidate: stepCandidate(m)
        case .follower: stepFollower(m)
        }
    }

    /// Appends a command; returns where it will be if it commits. Only the leader accepts writes.
    @discardableResult
    public mutating func propose(_ data: [UInt8]) throws(ProposalError) -> (index: LogIndex, term: Term) {
        guard role == .leader else { throw .notLeader(leader) }
        guard transferTarget == nil else { throw .transferringLeadership }
        guard uncommittedBytes + data.count <= settings.maxUncommittedBytes || uncommittedBytes == 0 else {
            throw .tooManyUncommitted
        }
        let e = Entry(term: term, index: log.lastIndex + 1, kind: .command, data: data)
        appendAsLeader(e)
        return (e.index, e.term)
    }

    /// Proposes a change of one server. The leader refuses while an earlier change is uncommitted
    /// or before it has committed an entry of its own term (the dissertation's fix for
    /// single-server changes).
    @discardableResult
    public mutating func proposeChange(_ change: ConfigurationChange) throws(ProposalError) -> (index: LogIndex, term: Term) {
        guard role == .leader else { throw .notLeader(leader) }
        guard transferTarget == nil else { throw .transferringLeadership }
        guard configurationIndex <= log.committed, log.term(at: log.committed) == term else {
            throw .configurationChangePending
        }
        var servers = configuration.servers
        switch change {
        case .addLearner(let sid, let address):
            guard !configuration.contains(sid) else { throw .invalidChange("\(sid) is already a member") }
            servers.append(.init(id: sid, address: address, voter: false))
        case .addVoter(let sid, let address):
            guard !configuration.isVoter(sid) else { throw .invalidChange("\(sid) is already a voter") }
            servers.removeAll { $0.id == sid }
            servers.append(.init(id: sid, address: address, voter: true))
        case .demote(let sid):
            guard configuration.isVoter(sid) else { throw .invalidChange("\(sid) is not a voter") }
            servers = servers.map { $0.id == sid ? .init(id: sid, address: $0.address, voter: false) : $0 }
        case .remove(let sid):
            guard configuration.contains(sid) else { throw .invalidChange("\(sid) is not a member") }
            servers.removeAll { $0.id == sid }
        }
        let next = Configuration(servers: servers)
        guard !next.voters.isEmpty else { throw .invalidChange("the last voter cannot be removed") }
        let e = Entry(term: term, index: log.lastIndex + 1, kind: .configuration, data: ConfigurationCodec.encode(next))
        appendAsLeader(e)
        return (e.index, e.term)
    }

    /// Asks for a linearizable read point (ReadIndex, §6.4). The answer arrives as a
    /// ``ReadState`` with the same context in a later ``Ready``; it is lost if leadership changes,
    /// so callers time out and retry.
    public mutating func readIndex(context: UInt64) throws(ProposalError) {
        if role == .leader {
            handleReadIndex(context: context, from: id)
        } else if let l = leader {
            send(to: l, .readIndex(context: context))
        } else {
            throw .notLeader(nil)
        }
    }

    /// Hands leadership to `target` (or the most up-to-date voter): bring it up to date, then
    /// tell it to campaign at once. Proposals are refused meanwhile; aborted after an election
    /// timeout.
    public mutating func transferLeadership(to target: ServerID? = nil) throws(ProposalError) {
        guard role == .leader else { throw .notLeader(leader) }
        let candidates = configuration.voters.filter { $0 != id }
        guard let t = target ?? candidates.max(by: { (progress[$0]?.match ?? 0) < (progress[$1]?.match ?? 0) }) else {
            throw .invalidChange("there is no other voter to transfer leadership to")
        }
        guard t != id else { return }
        guard configuration.isVoter(t) else { throw .invalidChange("\(t) is not a voter") }
        transferTarget = t
        transferElapsed = 0
        electionElapsed = 0
        if progress[t]?.match == log.lastIndex {
            send(to: t, .timeoutNow)
        } else {
            sendAppend(to: t, sendIfEmpty: true)
        }
    }

    /// The shell lost its connection to the leader in a way that says the leader's process is
    /// gone (connection refused or reset). A follower then stops honouring the leader's lease
    /// and campaigns within a few ticks instead of waiting out a whole election timeout.
    /// Safe: PreVote still needs a quorum that also lost the leader, and no lease-based reads
    /// depend on it unless ``RaftSettings/leaseReads`` is on, in which case this does nothing.
    public mutating func leaderUnreachable() {
        guard role == .follower, leader != nil, !settings.leaseReads else { return }
        leader = nil
        let soon = Int.random(in: 0...max(1, settings.heartbeatTicks), using: &random)
        electionElapsed = max(electionElapsed, randomizedElectionTimeout - soon - 1)
    }

    /// The shell could not deliver to `peer`; stop pipelining to it until it answers.
    public mutating func reportUnreachable(_ peer: ServerID) {
        guard role == .leader, var pr = progress[peer] else { return }
        if pr.state == .replicate { pr.becomeProbe() }
        progress[peer] = pr
    }

    /// The state machine saved a snapshot at `index` (≤ applied): the log before it can go.
    /// `keep` entries before the snapshot stay so slightly lagging followers need no snapshot.
    /// The core keeps only the metadata; the shell keeps the data (on disk) and fills it in when
    /// it sends a ``Message/Body/snapshot(_:)`` message.
    public mutating func compact(index: LogIndex, keep: Int = 1024) -> SnapshotMetadata? {
        guard let meta = snapshotMetadata(index: index) else { return nil }
        log.compact(to: meta, keep: keep)
        return meta
    }

    /// The first index still in the in-memory log (the shell may delete WAL segments before it).
    public var firstIndex: LogIndex { log.firstIndex }

    // MARK: - Ready / advance

    public mutating func ready(maxApplyBytes: Int = 8 << 20) -> Ready {
        if needsBroadcast {
            needsBroadcast = false
            if role == .leader { broadcastAppend() }
        }
        let hs = hardState
        let entries = Array(log.unstable)
        let r = Ready(hardState: hs == persistedHardState ? nil : hs,
                      entries: entries,
                      snapshot: snapshotToInstall,
                      messages: outbox,
                      committed: snapshotToInstall == nil ? Array(log.unapplied(maxBytes: maxApplyBytes)) : [],
                      readStates: readStates,
                      mustSync: hs.term != persistedHardState.term || hs.vote != persistedHardState.vote
                        || !entries.isEmpty || snapshotToInstall != nil)
        outbox.removeAll(keepingCapacity: true)
        readStates.removeAll()
        return r
    }

    public var hasReady: Bool {
        needsBroadcast || !outbox.isEmpty || !readStates.isEmpty || snapshotToInstall != nil
            || hardState != persistedHardState || log.stableIndex < log.lastIndex
            || log.applied < min(log.committed, log.stableIndex)
    }

    /// Tells the core that a ``Ready`` was carried out.
    public mutating func advance(_ r: Ready) {
        if let hs = r.hardState { persistedHardState = hs }
        if r.snapshot != nil { snapshotToInstall = nil }
        if let last = r.entries.last { log.markStable(through: last.index, term: last.term) }
        if let last = r.committed.last { log.applied = max(log.applied, last.index) }
        if role == .leader, maybeCommit() { afterCommit() }
    }

    // MARK: - Roles

    private mutating func resetElectionTimeout() {
        randomizedElectionTimeout = settings.electionTicks + Int.random(in: 0..<settings.electionSpreadTicks, using: &random)
    }

    private mutating func becomeFollower(term t: Term, leader l: ServerID?) {
        if t != term {
            term = t
            vote = nil
        }
        role = .follower
        leader = l
        electionElapsed = 0
        heartbeatElapsed = 0
        resetElectionTimeout()
        progress = [:]
        snapshotElapsed = [:]
        pendingReads = []
        readsAwaitingCommit = []
        transferTarget = nil
        needsBroadcast = false
        commitNoticeDue = false
    }

    private mutating func campaign(preVote: Bool, transfer: Bool) {
        if preVote {
            role = .preCandidate
            leader = nil
            votes = [id: true]
            if tallyWon() { campaign(preVote: false, transfer: false); return }
            for v in configuration.voters where v != id {
                send(to: v, term: term + 1, .vote(lastIndex: log.lastIndex, lastTerm: log.lastTerm, preVote: true, transfer: false))
            }
        } else {
            becomeFollower(term: term + 1, leader: nil)
            role = .candidate
            vote = id
            votes = [id: true]
            if tallyWon() { becomeLeader(); return }
            for v in configuration.voters where v != id {
                send(to: v, .vote(lastIndex: log.lastIndex, lastTerm: log.lastTerm, preVote: false, transfer: transfer))
            }
        }
    }

    private func tallyWon() -> Bool {
        configuration.voters.filter { votes[$0] == true }.count >= configuration.quorum
    }

    private func tallyLost() -> Bool {
        configuration.voters.filter { votes[$0] == false }.count > configuration.voters.count - configuration.quorum
    }

    private mutating func becomeLeader() {
        role = .leader
        leader = id
        electionElapsed = 0
        heartbeatElapsed = 0
        progress = [:]
        for s in configuration.servers where s.id != id {
            var pr = Progress(next: log.lastIndex + 1)
            pr.lastHeard = clock
            progress[s.id] = pr
        }
        uncommittedBytes = 0
        // §5.4.2 and §6.4: commit an entry of our own term before trusting earlier ones. When
        // the configuration is known only from a snapshot, that entry restates it: a follower
        // restarted from a snapshot written without its configuration (an earlier version's
        // compaction bug) learns it again and can campaign.
        if log.snapshot.index > 0 && configurationIndex <= log.snapshot.index {
            appendAsLeader(Entry(term: term, index: log.lastIndex + 1, kind: .configuration, data: ConfigurationCodec.encode(configuration)))
        } else {
            appendAsLeader(Entry(term: term, index: log.lastIndex + 1, kind: .empty))
        }
    }

    /// Where a snapshot of the state machine at `index` (≤ applied) would stand, without
    /// compacting anything: the shell saves the snapshot file first, then calls ``compact``.
    public func snapshotMetadata(index: LogIndex) -> SnapshotMetadata? {
        guard index <= log.applied, index > (log.latestSnapshot?.index ?? 0), let t = log.term(at: index) else { return nil }
        return SnapshotMetadata(index: index, term: t, configuration: log.configuration(at: index, base: log.snapshot.configuration))
    }

    // MARK: - Votes

    private mutating func handleVote(_ m: Message, lastIndex: LogIndex, lastTerm: Term, preVote: Bool) {
        let canVote = vote == m.from || (vote == nil && leader == nil) || (preVote && m.term > term)
        if canVote && log.isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm) {
            send(to: m.from, term: m.term, .voteResponse(granted: true, preVote: preVote))
            if !preVote {
                electionElapsed = 0
                vote = m.from
            }
        } else {
            send(to: m.from, .voteResponse(granted: false, preVote: preVote))
        }
    }

    private mutating func stepCandidate(_ m: Message) {
        switch m.body {
        case .append, .heartbeat, .snapshot:
            becomeFollower(term: m.term, leader: m.from)
            stepFollower(m)
        case .voteResponse(let granted, let pre):
            guard pre == (role == .preCandidate) else { return }
            votes[m.from] = granted
            if tallyWon() {
                if role == .preCandidate { campaign(preVote: false, transfer: false) } else { becomeLeader() }
            } else if tallyLost() {
                becomeFollower(term: term, leader: nil)
            }
        default: break
        }
    }

    // MARK: - Follower

    private mutating func stepFollower(_ m: Message) {
        switch m.body {
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            electionElapsed = 0
            leader = m.from
            handleAppend(from: m.from, prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .heartbeat(let commit, let context):
            electionElapsed = 0
            leader = m.from
            if commit > log.committed { log.committed = min(commit, log.lastIndex) }
            send(to: m.from, .heartbeatResponse(context: context))
        case .snapshot(let snap):
            electionElapsed = 0
            leader = m.from
            handleSnapshot(from: m.from, snap)
        case .timeoutNow:
            if isPromotable { campaign(preVote: false, transfer: true) }
        case .readIndexResponse(let context, let index):
            readStates.append(ReadState(context: context, index: index))
        default: break
        }
    }

    private mutating func handleAppend(from: ServerID, prevIndex: LogIndex, prevTerm: Term, entries: [Entry], commit: LogIndex) {
        if prevIndex < log.committed {
            send(to: from, .appendResponse(success: true, index: log.committed, hintIndex: 0, hintTerm: 0))
            return
        }
        if let lastNew = log.appendFromLeader(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries) {
            if entries.contains(where: { $0.kind == .configuration })
                || (configurationIndex > log.snapshot.index && log.entry(at: configurationIndex)?.kind != .configuration) {
                refreshConfiguration()
            }
            let newCommit = min(commit, lastNew)
            if newCommit > log.committed { log.committed = newCommit }
            send(to: from, .appendResponse(success: true, index: lastNew, hintIndex: 0, hintTerm: 0))
        } else {
            let (hi, ht) = log.lastIndex(atOrBelow: prevIndex, termAtMost: prevTerm)
            send(to: from, .appendResponse(success: false, index: prevIndex, hintIndex: hi, hintTerm: ht))
        }
    }

    private mutating func handleSnapshot(from: ServerID, _ snap: Snapshot) {
        let meta = snap.metadata
        if meta.index <= log.committed {
            send(to: from, .appendResponse(success: true, index: log.committed, hintIndex: 0, hintTerm: 0))
        } else if log.matches(index: meta.index, term: meta.term) {
            // We already have the log up to there; just learn that it is committed.
            log.committed = meta.index
            send(to: from, .appendResponse(success: true, index: meta.index, hintIndex: 0, hintTerm: 0))
        } else {
            log.restore(meta)
            snapshotToInstall = snap
            refreshConfiguration()
            send(to: from, .appendResponse(success: true, index: meta.index, hintIndex: 0, hintTerm: 0))
        }
    }

    private mutating func refreshConfiguration() {
        configurationIndex = log.configurationIndex
        configuration = log.configuration(at: log.lastIndex, base: log.snapshot.configuration)
        if role == .leader { syncProgressWithConfiguration() }
    }

    // MARK: - Leader

    private mutating func appendAsLeader(_ e: Entry) {
        log.append(e)
        uncommittedBytes += e.data.count
        if e.kind == .configuration { refreshConfiguration() }
        needsBroadcast = true
        // A group of one commits as soon as its own disk has the entry (see advance).
    }

    private mutating func syncProgressWithConfiguration() {
        for s in configuration.servers where s.id != id && progress[s.id] == nil {
            var pr = Progress(next: log.lastIndex + 1)
            pr.lastHeard = clock
            progress[s.id] = pr
        }
        for peer in progress.keys where !configuration.contains(peer) {
            progress[peer] = nil
            snapshotElapsed[peer] = nil
        }
    }

    private mutating func stepLeader(_ m: Message) {
        if case .readIndex(let context) = m.body {
            handleReadIndex(context: context, from: m.from)
            return
        }
        guard progress[m.from] != nil else { return }
        switch m.body {
        case .appendResponse(let success, let index, let hintIndex, let hintTerm):
            handleAppendResponse(from: m.from, success: success, index: index, hintIndex: hintIndex, hintTerm: hintTerm)
        case .heartbeatResponse(let context):
            var pr = progress[m.from]!
            pr.lastHeard = clock
            switch pr.state {
            case .probe: pr.probeSent = false
            case .replicate:
                // Appends or their answers may have been lost: free a slot so one goes out, and
                // send from `next` even if empty — a gap makes the follower reject and we probe.
                if pr.isPaused(settings), !pr.inflight.isEmpty {
                    pr.inflightBytes -= pr.inflight.removeFirst().bytes
                }
            case .snapshot: break
            }
            progress[m.from] = pr
            if pr.match < log.lastIndex { sendAppend(to: m.from, sendIfEmpty: true) }
            if context != 0 { ackRead(seq: context, from: m.from) }
        default: break
        }
    }

    private mutating func handleAppendResponse(from: ServerID, success: Bool, index: LogIndex, hintIndex: LogIndex, hintTerm: Term) {
        var pr = progress[from]!
        pr.lastHeard = clock
        if !success {
            guard index > 0 else { progress[from] = pr; return }
            let stale: Bool
            if pr.state == .replicate {
                stale = index <= pr.match
            } else {
                stale = pr.next - 1 != index
            }
            if !stale {
                var probeAt = hintIndex
                if hintTerm > 0 { probeAt = log.lastIndex(atOrBelow: hintIndex, termAtMost: hintTerm).0 }
                pr.becomeProbe()
                pr.next = max(min(index, probeAt + 1), pr.match + 1)
                progress[from] = pr
                sendAppend(to: from, sendIfEmpty: true)
            } else {
                progress[from] = pr
            }
            return
        }
        let advanced = pr.update(index)
        if advanced {
            switch pr.state {
            case .probe: pr.becomeReplicate()
            case .snapshot:
                if pr.match >= pr.pendingSnapshot {
                    snapshotElapsed[from] = nil
                    pr.becomeReplicate()
                }
            case .replicate: break
            }
        } else if pr.state == .snapshot, index >= pr.pendingSnapshot {
            snapshotElapsed[from] = nil
            pr.becomeReplicate()
        }
        progress[from] = pr
        if advanced, maybeCommit() { afterCommit() }
        if from == transferTarget, progress[from]?.match == log.lastIndex {
            send(to: from, .timeoutNow)
        }
        guard role == .leader else { return }
        var sent = false
        while sendAppend(to: from, sendIfEmpty: false) { sent = true }
        // Tell it the new commit index if nothing else will.
        if !sent, let pr = progress[from], pr.sentCommit < log.committed, pr.state == .replicate {
            if settings.commitNoticeAtTick { commitNoticeDue = true } else { sendAppend(to: from, sendIfEmpty: true) }
        }
    }

    /// Sends entries from the follower's `next`; false if nothing was sent.
    @discardableResult
    private mutating func sendAppend(to peer: ServerID, sendIfEmpty: Bool) -> Bool {
        guard var pr = progress[peer], !pr.isPaused(settings) else { return false }
        let prevIndex = pr.next - 1
        guard let prevTerm = log.term(at: prevIndex) else { return sendSnapshot(to: peer) }
        let entries = log.slice(from: pr.next, to: log.lastIndex, maxBytes: settings.maxMessageBytes)
        if entries.isEmpty && !sendIfEmpty { return false }
        send(to: peer, .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: Array(entries), commit: log.committed))
        pr.sentCommit = log.committed
        if let last = entries.last {
            switch pr.state {
            case .replicate:
                pr.next = last.index + 1
                let bytes = entries.reduce(0) { $0 + $1.size }
                pr.inflight.append((last.index, bytes))
                pr.inflightBytes += bytes
            case .probe: pr.probeSent = true
            case .snapshot: break
            }
        } else if pr.state == .probe {
            pr.probeSent = true
        }
        progress[peer] = pr
        return !entries.isEmpty
    }

    private mutating func sendSnapshot(to peer: ServerID) -> Bool {
        guard let meta = log.latestSnapshot else { return false }
        progress[peer]!.becomeSnapshot(meta.index)
        snapshotElapsed[peer] = 0
        send(to: peer, .snapshot(Snapshot(metadata: meta, data: [])))  // the shell attaches the data
        return false
    }

    private mutating func broadcastAppend() {
        for peer in progress.keys.sorted() {
            while sendAppend(to: peer, sendIfEmpty: false) {}
        }
    }

    private mutating func broadcastHeartbeat(context: UInt64) {
        for (peer, pr) in progress.sorted(by: { $0.key < $1.key }) {
            send(to: peer, .heartbeat(commit: min(pr.match, log.committed), context: context))
        }
    }

    private func isRecentlyActive(_ pr: Progress) -> Bool { clock - pr.lastHeard < settings.electionTicks }

    private func quorumRecentlyActive() -> Bool {
        var active = configuration.isVoter(id) ? 1 : 0
        for (peer, pr) in progress where configuration.isVoter(peer) && isRecentlyActive(pr) { active += 1 }
        return active >= configuration.quorum
    }

    /// Moves the commit index to the highest index a quorum of voters has, if it is of this term.
    private mutating func maybeCommit() -> Bool {
        var matches: [LogIndex] = []
        for v in configuration.voters { matches.append(v == id ? log.stableIndex : progress[v]?.match ?? 0) }
        guard !matches.isEmpty else { return false }
        matches.sort(by: >)
        let candidate = matches[configuration.quorum - 1]
        guard candidate > log.committed, log.term(at: candidate) == term else { return false }
        var i = log.committed + 1
        while i <= candidate {
            if let e = log.entry(at: i) { uncommittedBytes = max(0, uncommittedBytes - e.data.count) }
            i += 1
        }
        log.committed = candidate
        return true
    }

    private mutating func afterCommit() {
        if !readsAwaitingCommit.isEmpty {
            let waiting = readsAwaitingCommit
            readsAwaitingCommit = []
            for r in waiting { handleReadIndex(context: r.context, from: r.from) }
        }
        // A leader that removed or demoted itself hands over once that is committed.
        if configurationIndex <= log.committed, !configuration.isVoter(id) {
            if let next = configuration.voters.max(by: { (progress[$0]?.match ?? 0) < (progress[$1]?.match ?? 0) }) {
                send(to: next, .timeoutNow)
            }
            becomeFollower(term: term, leader: nil)
            return
        }
        // Followers learn the new commit index with the next append; idle ones are told now,
        // or at the next tick.
        needsBroadcast = true
        if settings.commitNoticeAtTick { commitNoticeDue = true } else { sendCommitNotices() }
    }

    // MARK: - Reads

    private mutating func handleReadIndex(context: UInt64, from: ServerID) {
        if configuration.voters == [id] {
            answerRead(context: context, index: log.committed, to: from)
            return
        }
        guard log.term(at: log.committed) == term else {
            readsAwaitingCommit.append((context, from))
            return
        }
        if settings.leaseReads && settings.checkQuorum {
            answerRead(context: context, index: log.committed, to: from)
            return
        }
        readSeq += 1
        pendingReads.append(PendingRead(seq: readSeq, context: context, index: log.committed, from: from, acks: [id]))
        broadcastHeartbeat(context: readSeq)
    }

    private mutating func ackRead(seq: UInt64, from: ServerID) {
        guard configuration.isVoter(from), let pos = pendingReads.lastIndex(where: { $0.seq == seq }) else { return }
        // An answer to a later heartbeat also confirms every earlier read.
        for i in 0...pos { pendingReads[i].acks.insert(from) }
        guard let ready = pendingReads.lastIndex(where: { r in
            configuration.voters.filter { r.acks.contains($0) }.count >= configuration.quorum
        }) else { return }
        let released = pendingReads[0...ready]
        pendingReads.removeFirst(ready + 1)
        for r in released { answerRead(context: r.context, index: r.index, to: r.from) }
    }

    private mutating func answerRead(context: UInt64, index: LogIndex, to: ServerID) {
        if to == id {
            readStates.append(ReadState(context: context, index: index))
        } else {
            send(to: to, .readIndexResponse(context: context, index: index))
        }
    }

    // MARK: - Output

    private mutating func send(to: ServerID, term t: Term? = nil, _ body: Message.Body) {
        outbox.append(Message(from: id, to: to, term: t ?? term, body: body))
    }
}
