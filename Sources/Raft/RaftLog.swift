/// The log as one server holds it in memory: a snapshot point, then entries.
///
/// Entries up to `stableIndex` are on disk; the rest wait for the shell to persist them (they are
/// handed out by ``RaftCore/ready()``). `committed` and `applied` only grow.
struct RaftLog: Sendable {
    private(set) var snapshot: SnapshotMetadata
    /// Entries after `snapshot.index`; `entries[i].index == snapshot.index + 1 + i`.
    private(set) var entries: [Entry]
    private(set) var stableIndex: LogIndex
    var committed: LogIndex
    var applied: LogIndex

    init(snapshot: SnapshotMetadata, entries: [Entry], committed: LogIndex) {
        self.snapshot = snapshot
        self.entries = entries.filter { $0.index > snapshot.index }
        self.stableIndex = self.entries.last?.index ?? snapshot.index
        self.committed = max(committed, snapshot.index)
        self.applied = snapshot.index
    }

    var firstIndex: LogIndex { snapshot.index + 1 }
    var lastIndex: LogIndex { snapshot.index + LogIndex(entries.count) }
    var lastTerm: Term { entries.last?.term ?? snapshot.term }

    /// The term of the entry at `index`, or nil when it is compacted away or not in the log.
    func term(at index: LogIndex) -> Term? {
        if index == snapshot.index { return snapshot.term }
        guard index > snapshot.index, index <= lastIndex else { return nil }
        return entries[Int(index - snapshot.index - 1)].term
    }

    func matches(index: LogIndex, term: Term) -> Bool { self.term(at: index) == term }

    func entry(at index: LogIndex) -> Entry? {
        guard index > snapshot.index, index <= lastIndex else { return nil }
        return entries[Int(index - snapshot.index - 1)]
    }

    /// Entries in `[from, to]`, at most `maxBytes` of them (but always at least one).
    func slice(from: LogIndex, to: LogIndex, maxBytes: Int = .max) -> ArraySlice<Entry> {
        guard from <= to, from > snapshot.index, to <= lastIndex else { return [] }
        let lo = Int(from - snapshot.index - 1), hi = Int(to - snapshot.index - 1)
        var bytes = 0, end = lo
        while end <= hi {
            bytes += entries[end].size
            if bytes > maxBytes && end > lo { break }
            end += 1
        }
        return entries[lo..<end]
    }

    /// Whether a candidate's log is at least as up to date as ours (§5.4.1).
    func isUpToDate(lastIndex: LogIndex, lastTerm: Term) -> Bool {
        lastTerm > self.lastTerm || (lastTerm == self.lastTerm && lastIndex >= self.lastIndex)
    }

    /// Appends entries from a leader that follow `prevIndex`, dropping a conflicting suffix
    /// (§5.3). Returns the index of the last new entry, or nil if `prevIndex` does not match.
    mutating func appendFromLeader(prevIndex: LogIndex, prevTerm: Term, entries new: [Entry]) -> LogIndex? {
        guard matches(index: prevIndex, term: prevTerm) else { return nil }
        let lastNew = prevIndex + LogIndex(new.count)
        for e in new where e.index > snapshot.index {
            if let t = term(at: e.index) {
                if t == e.term { continue }
                precondition(e.index > committed, "a leader tried to overwrite committed entry \(e.index)")
                truncate(after: e.index - 1)
            }
            if e.index == lastIndex + 1 { entries.append(e) }
        }
        return lastNew
    }

    /// Appends a leader's own new entry.
    mutating func append(_ e: Entry) {
        precondition(e.index == lastIndex + 1)
        entries.append(e)
    }

    private mutating func truncate(after index: LogIndex) {
        entries.removeLast(Int(lastIndex - index))
        stableIndex = min(stableIndex, index)
    }

    /// For fast backtracking: the largest index ≤ `index` whose term is ≤ `term`.
    func lastIndex(atOrBelow index: LogIndex, termAtMost term: Term) -> (LogIndex, Term) {
        var i = min(index, lastIndex)
        while i > snapshot.index, let t = self.term(at: i), t > term { i -= 1 }
        return (i, self.term(at: i) ?? snapshot.term)
    }

    var unstable: ArraySlice<Entry> { stableIndex < lastIndex ? slice(from: stableIndex + 1, to: lastIndex) : [] }

    mutating func markStable(through index: LogIndex, term: Term) {
        // Entries may have been replaced since they were handed out; only mark what still matches.
        if index > stableIndex, self.term(at: index) == term { stableIndex = index }
    }

    /// Committed entries not yet handed to the state machine, up to `maxBytes`.
    func unapplied(maxBytes: Int) -> ArraySlice<Entry> {
        let to = min(committed, stableIndex)
        guard applied < to else { return [] }
        return slice(from: applied + 1, to: to, maxBytes: maxBytes)
    }

    /// Drops entries up to `index` after the state machine saved a snapshot there.
    mutating func compact(to meta: SnapshotMetadata, keep: Int) {
        guard meta.index > snapshot.index, meta.index <= applied else { return }
        let dropTo = meta.index > LogIndex(keep) ? meta.index - LogIndex(keep) : 0
        if dropTo > snapshot.index, let t = term(at: dropTo) {
            // Read the configuration at the new base while the entries before it are still here:
            // it is all a restart from this point (or a follower sent it) will know of the group.
            let base = configuration(at: dropTo, base: snapshot.configuration)
            entries.removeFirst(Int(dropTo - snapshot.index))
            snapshot = SnapshotMetadata(index: dropTo, term: t, configuration: base)
        }
        latestSnapshot = meta
    }

    /// The newest snapshot the state machine has made (what a lagging follower is sent). Its
    /// index may be past `snapshot.index` when some entries are kept for near followers.
    var latestSnapshot: SnapshotMetadata?

    /// Replaces the whole log with a received snapshot.
    mutating func restore(_ meta: SnapshotMetadata) {
        snapshot = meta
        entries = []
        stableIndex = meta.index
        committed = meta.index
        applied = meta.index
        latestSnapshot = meta
    }

    /// The newest configuration in the log up to `index`, or `base` if there is none.
    func configuration(at index: LogIndex, base: Configuration) -> Configuration {
        var i = min(index, lastIndex)
        while i > snapshot.index {
            if let e = entry(at: i), e.kind == .configuration, let c = ConfigurationCodec.decode(e.data) { return c }
            i -= 1
        }
        return base
    }

    /// The index of the newest configuration entry, or the snapshot's index.
    var configurationIndex: LogIndex {
        var i = lastIndex
        while i > snapshot.index {
            if entries[Int(i - snapshot.index - 1)].kind == .configuration { return i }
            i -= 1
        }
        return snapshot.index
    }
}
