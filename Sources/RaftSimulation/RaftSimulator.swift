import CaravanTesting
import Primitives
import Raft

/// N Raft cores on a simulated network with simulated disks, driven in virtual time.
///
/// Each server runs the shell's loop exactly: persist, send, apply, advance. A crash throws away
/// the in-memory core and keeps the disk; a restart builds a new core from it. The state machine
/// is a key-value register map, so client histories can be checked for linearizability. Every
/// safety property is checked as the run goes (``violations``).
public struct RaftSimulator: Sendable {
    public struct Disk: Sendable {
        public var hardState = HardState()
        public var snapshot: Snapshot?
        public var entries: [Entry] = []
    }

    public struct Server: Sendable {
        public var core: RaftCore?
        public var disk = Disk()
        public var kv: [String: String] = [:]
        var lastCommit: LogIndex = 0
        var applied: LogIndex = 0
        var waitingReads: [(op: Int, index: LogIndex, key: String)] = []
        var pendingWrites: [LogIndex: (op: Int, term: Term)] = [:]
        var pendingReads: [UInt64: (op: Int, key: String)] = [:]
    }

    /// One client operation for the linearizability checker.
    public struct Operation: Sendable {
        public enum Kind: Sendable, Equatable { case write(String, String), read(String) }
        public var kind: Kind
        public var call: Duration
        /// Nil while pending; `.infinity`-like (nil at the end) means the outcome is unknown.
        public var ret: Duration?
        public var readValue: String?
        /// The operation definitely did not happen (refused, or its entry was overwritten).
        public var failed = false

        public init(kind: Kind, call: Duration, ret: Duration? = nil, readValue: String? = nil, failed: Bool = false) {
            self.kind = kind
            self.call = call
            self.ret = ret
            self.readValue = readValue
            self.failed = failed
        }
    }

    public var network: SimulatedNetwork<ServerID, Message>
    public private(set) var servers: [ServerID: Server] = [:]
    public let ids: [ServerID]
    public private(set) var now: Duration = .zero
    public let tick: Duration
    public var settings: RaftSettings
    /// Entries a server keeps in memory before it snapshots its state machine.
    public var snapshotEvery: LogIndex = 200
    public private(set) var history: [Operation] = []
    public private(set) var violations: [String] = []
    /// Leader of each term seen so far.
    public private(set) var leaders: [Term: ServerID] = [:]
    /// The one sequence every server must apply: index → (term, data).
    private var appliedLog: [LogIndex: Entry] = [:]
    private var ticks = EventQueue<ServerID>()
    private var random: SeededRandom
    private var readContext: UInt64 = 0

    public init(servers n: Int, seed: UInt64, settings: RaftSettings = RaftSettings(heartbeatTicks: 5, electionTicks: 50),
                tick: Duration = .milliseconds(2), faults: SimulatedNetwork<ServerID, Message>.Faults = .init()) {
        self.random = SeededRandom(seed: seed)
        self.network = SimulatedNetwork(seed: random.derive(), faults: faults)
        self.tick = tick
        self.settings = settings
        self.ids = (1...n).map { ServerID("s\($0)") }
        let config = Configuration(servers: ids.map { .init(id: $0, address: "sim:\($0)", voter: true) })
        for id in ids {
            var s = Server()
            s.disk.entries = [RaftCore.bootstrapEntry(config)]
            s.disk.hardState = HardState(term: 1)
            s.core = RaftCore(id: id, settings: settings, seed: random.derive(), hardState: s.disk.hardState, entries: s.disk.entries)
            servers[id] = s
            // Stagger the tick phases so servers do not tick in lockstep.
            ticks.push(id, at: tick * Double.random(in: 0..<1, using: &random))
        }
    }

    /// Adds a server that is not in the configuration (for membership tests).
    public mutating func addSpare(_ id: ServerID) -> ServerID {
        var s = Server()
        s.core = RaftCore(id: id, settings: settings, seed: random.derive())
        servers[id] = s
        ticks.push(id, at: now + tick)
        return id
    }

    // MARK: - Time

    /// Runs every delivery and tick due up to `now + duration`, checking invariants throughout.
    public mutating func run(for duration: Duration, until stop: ((RaftSimulator) -> Bool)? = nil) {
        let end = now + duration
        while true {
            let nextTick = ticks.peekTime ?? end
            let nextMsg = network.nextDeliveryTime ?? end
            let t = min(nextTick, nextMsg)
            if t > end { break }
            now = t
            if nextMsg <= nextTick, let d = network.nextDelivery(upTo: now) {
                if servers[d.to]?.core != nil {
                    servers[d.to]!.core!.step(d.message)
                    drain(d.to)
                }
            } else if nextTick <= nextMsg, let id = ticks.pop() {
                if servers[id]?.core != nil {
                    servers[id]!.core!.tick()
                    drain(id)
                }
                ticks.push(id, at: now + tick)
            } else if t == end {
                break
            }
            if let stop, stop(self) { return }
        }
        now = end
    }

    /// The current leader with the highest term, if any.
    public var leader: ServerID? {
        ids.filter { servers[$0]?.core?.role == .leader }.max { servers[$0]!.core!.term < servers[$1]!.core!.term }
    }

    public var allIDs: [ServerID] { servers.keys.sorted() }

    public func core(_ id: ServerID) -> RaftCore? { servers[id]?.core }

    // MARK: - Faults

    public mutating func crash(_ id: ServerID) {
        guard var s = servers[id] else { return }
        s.core = nil
        s.kv = [:]
        s.pendingWrites = [:]
        s.pendingReads = [:]
        s.waitingReads = []
        s.lastCommit = 0
        s.applied = 0
        servers[id] = s
        network.crash(id)
    }

    public mutating func restart(_ id: ServerID) {
        guard var s = servers[id], s.core == nil else { return }
        s.core = RaftCore(id: id, settings: settings, seed: random.derive(), hardState: s.disk.hardState,
                          snapshot: s.disk.snapshot?.metadata, entries: s.disk.entries)
        s.kv = s.disk.snapshot.map { Self.decodeKV($0.data) } ?? [:]
        s.applied = s.disk.snapshot?.metadata.index ?? 0
        servers[id] = s
        network.restart(id)
    }

    // MARK: - Clients

    /// A client writes `key = value` through `id`; false if `id` refused at once.
    @discardableResult
    public mutating func write(_ key: String, _ value: String, via id: ServerID) -> Bool {
        let op = history.count
        history.append(Operation(kind: .write(key, value), call: now))
        guard servers[id]?.core != nil else { history[op].failed = true; return false }
        do {
            let (index, term) = try servers[id]!.core!.propose(Self.encodeWrite(key, value))
            servers[id]!.pendingWrites[index] = (op, term)
            drain(id)
            return true
        } catch {
            history[op].failed = true
            return false
        }
    }

    /// A client reads `key` linearizably through `id` (ReadIndex).
    @discardableResult
    public mutating func read(_ key: String, via id: ServerID) -> Bool {
        let op = history.count
        history.append(Operation(kind: .read(key), call: now))
        guard servers[id]?.core != nil else { history[op].failed = true; return false }
        readContext += 1
        do {
            try servers[id]!.core!.readIndex(context: readContext)
            servers[id]!.pendingReads[readContext] = (op, key)
            drain(id)
            return true
        } catch {
            history[op].failed = true
            return false
        }
    }

    public mutating func propose(_ change: ConfigurationChange, via id: ServerID) -> Bool {
        guard servers[id]?.core != nil else { return false }
        do { try servers[id]!.core!.proposeChange(change) } catch { return false }
        drain(id)
        return true
    }

    public mutating func transferLeadership(from id: ServerID, to target: ServerID?) -> Bool {
        guard servers[id]?.core != nil else { return false }
        do { try servers[id]!.core!.transferLeadership(to: target) } catch { return false }
        drain(id)
        return true
    }

    // MARK: - The shell loop

    private mutating func drain(_ id: ServerID) {
        while servers[id]!.core!.hasReady {
            let r = servers[id]!.core!.ready()
            var s = servers[id]!
            // 1. persist
            if let snap = r.snapshot {
                s.disk.snapshot = snap
                s.disk.entries.removeAll { $0.index <= snap.metadata.index }
                s.kv = Self.decodeKV(snap.data)
                s.applied = snap.metadata.index
            }
            if let first = r.entries.first {
                s.disk.entries.removeAll { $0.index >= first.index }
                s.disk.entries.append(contentsOf: r.entries)
            }
            if let hs = r.hardState { s.disk.hardState = hs }
            // 2. send
            for var m in r.messages {
                if case .snapshot(let meta) = m.body {
                    // The shell attaches the snapshot data it keeps on disk.
                    guard let snap = s.disk.snapshot, snap.metadata == meta.metadata else { continue }
                    m.body = .snapshot(snap)
                }
                network.send(m, from: id, to: m.to, now: now)
            }
            // 3. apply
            for e in r.committed { apply(e, on: id, server: &s) }
            for rs in r.readStates {
                if let p = s.pendingReads.removeValue(forKey: rs.context) {
                    s.waitingReads.append((p.op, rs.index, p.key))
                }
            }
            answerReads(&s)
            servers[id] = s
            servers[id]!.core!.advance(r)
            check(id)
            maybeSnapshot(id)
        }
    }

    private mutating func apply(_ e: Entry, on id: ServerID, server s: inout Server) {
        if let seen = appliedLog[e.index] {
            if seen != e { violations.append("t=\(now) \(id) applied \(e.index)@\(e.term) but another server applied \(seen.index)@\(seen.term) there") }
        } else {
            appliedLog[e.index] = e
        }
        if e.index != s.applied + 1 {
            violations.append("t=\(now) \(id) applied \(e.index) after \(s.applied)")
        }
        s.applied = e.index
        if e.kind == .command, let (k, v) = Self.decodeWrite(e.data) { s.kv[k] = v }
        if let w = s.pendingWrites.removeValue(forKey: e.index) {
            if w.term == e.term { history[w.op].ret = now } else { history[w.op].failed = true }
        }
    }

    private mutating func answerReads(_ s: inout Server) {
        var rest: [(op: Int, index: LogIndex, key: String)] = []
        for w in s.waitingReads {
            if w.index <= s.applied {
                history[w.op].ret = now
                history[w.op].readValue = s.kv[w.key]
            } else {
                rest.append(w)
            }
        }
        s.waitingReads = rest
    }

    private mutating func maybeSnapshot(_ id: ServerID) {
        guard let c = servers[id]!.core else { return }
        let last = servers[id]!.disk.snapshot?.metadata.index ?? 0
        guard c.appliedIndex >= last + snapshotEvery else { return }
        let data = Self.encodeKV(servers[id]!.kv)
        if let meta = servers[id]!.core!.compact(index: c.appliedIndex, keep: 20) {
            servers[id]!.disk.snapshot = Snapshot(metadata: meta, data: data)
            let first = servers[id]!.core!.firstIndex
            servers[id]!.disk.entries.removeAll { $0.index < first }
        }
    }

    // MARK: - Invariants

    private mutating func check(_ id: ServerID) {
        guard let c = servers[id]!.core else { return }
        if c.role == .leader {
            if let other = leaders[c.term], other != id {
                violations.append("t=\(now) two leaders in term \(c.term): \(other) and \(id)")
            }
            leaders[c.term] = id
        }
        if c.commitIndex < servers[id]!.lastCommit {
            violations.append("t=\(now) \(id) commit index moved back from \(servers[id]!.lastCommit) to \(c.commitIndex)")
        }
        servers[id]!.lastCommit = c.commitIndex
        // The applied state must be what the global applied sequence gives.
    }

    /// Log matching (§5.3): if two logs have an entry with the same index and term, they are
    /// identical up to it. Checked over what each server has on disk.
    public mutating func checkLogMatching() {
        let logs = servers.values.map { s in Dictionary(s.disk.entries.map { ($0.index, $0) }, uniquingKeysWith: { $1 }) }
        for a in 0..<logs.count {
            for b in (a + 1)..<logs.count {
                let common = Set(logs[a].keys).intersection(logs[b].keys).sorted(by: >)
                var agreed = false
                for i in common {
                    let x = logs[a][i]!, y = logs[b][i]!
                    if agreed || x.term == y.term {
                        if x != y { violations.append("logs agree on a later index but differ at \(i)"); return }
                        agreed = true
                    }
                }
            }
        }
    }


    // MARK: - State machine encoding

    static func encodeWrite(_ k: String, _ v: String) -> [UInt8] {
        var w = ByteWriter()
        w.string(k); w.string(v)
        return w.bytes
    }

    static func decodeWrite(_ b: [UInt8]) -> (String, String)? {
        var r = ByteReader(b)
        guard let k = r.string(), let v = r.string() else { return nil }
        return (k, v)
    }

    static func encodeKV(_ kv: [String: String]) -> [UInt8] {
        var w = ByteWriter()
        w.varint(UInt64(kv.count))
        for (k, v) in kv.sorted(by: { $0.key < $1.key }) { w.string(k); w.string(v) }
        return w.bytes
    }

    static func decodeKV(_ b: [UInt8]) -> [String: String] {
        var r = ByteReader(b)
        var kv: [String: String] = [:]
        guard let n = r.count(max: 1 << 20) else { return kv }
        for _ in 0..<n { if let k = r.string(), let v = r.string() { kv[k] = v } }
        return kv
    }

    // MARK: - Measurements

    /// The Raft paper's experiment: 5 servers with 150–300 ms election timeouts (1 ms ticks,
    /// 50 ms heartbeats, 0.2–1 ms latency); time from the leader's crash to a new leader.
    public static func failoverTime(seed: UInt64) -> Duration? {
        var sim = RaftSimulator(servers: 5, seed: seed, settings: RaftSettings(heartbeatTicks: 50, electionTicks: 150),
                                tick: .milliseconds(1), faults: .init(latency: .microseconds(200) ... .milliseconds(1)))
        sim.run(for: .seconds(3)) { $0.leader != nil }
        guard let old = sim.leader else { return nil }
        sim.run(for: .milliseconds(Int64(seed % 50)))
        sim.crash(old)
        let start = sim.now
        sim.run(for: .seconds(3)) { s in s.leader != nil && s.leader != old }
        guard let l = sim.leader, l != old else { return nil }
        return sim.now - start
    }
}
