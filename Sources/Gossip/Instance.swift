import Primitives
#if canImport(Glibc)
import Glibc  // log10, log, ceil only; the core does no IO.
#elseif canImport(Darwin)
import Darwin
#endif

/// The SWIM + Lifeguard protocol for one node, without IO.
///
/// Time is a `Duration` since an origin the shell chooses; it MUST never go backwards. The shell
/// MUST call ``onTick(now:)`` every ``Settings/tickInterval``, feed every authenticated packet to
/// ``onPacket(_:from:now:)`` and every stream to ``onStreamRequest(_:from:now:)``, and carry out
/// the returned directives in order.
public struct Instance: Sendable {
    public let name: String
    public let address: Address
    public private(set) var settings: Settings
    public private(set) var incarnation: Incarnation = .zero
    public private(set) var metadata: [UInt8]
    /// Lifeguard's local health multiplier: 0 when this node is healthy.
    public private(set) var localHealth = 0
    public private(set) var isLeaving = false
    /// When this member last re-announced itself to someone still suspecting an older
    /// incarnation of it (see `applySuspect`).
    /// When this node last said again, to each member, that it is alive (see `applySuspect`).
    private var reassertedTo: [String: Duration] = [:]
    public private(set) var stats = Stats()

    /// Every other member this node knows, by name.
    private(set) var others: [String: Member] = [:] {
        // A name added or removed changes the count: the sorted names are made again when next read.
        didSet { if others.count != sortedNames.count { namesStale = true } }
    }
    /// The others' names in order, for digests and full states (sorted once per change of who is
    /// known, not on every exchange: at thousands of members the sort was most of the cost).
    private var sortedNames: [String] = []
    private var namesStale = false
    /// Members that are alive or suspect, this node included.
    public private(set) var liveCount = 1
    private var probeOrder: [String] = []
    private var probeIndex = 0
    private var nextProbeAt: Duration = .zero
    private var probes: [UInt32: Probe] = [:]
    private var relays: [UInt32: Relay] = [:]
    private var suspicions: [String: Suspicion] = [:]
    private var broadcasts = BroadcastQueue()
    private var seq: UInt32 = 0
    private var rng: Xoshiro
    private var rtt: [String: Duration] = [:]
    private var nextGossipAt: Duration = .zero
    /// A death (declared here or newly heard) or a refused-connection suspicion is waiting to be
    /// told: it goes out at once, not at the next gossip round, so each member that learns it
    /// passes it on within milliseconds and the whole cluster knows in a few hops.
    private var urgentNews = false
    private var nextPushPullAt: Duration?
    private var pushPullInterval: Duration
    private var joining: Join?
    private var pendingMetadata: [UInt8]?
    private var lastMetadataAt: Duration?
    private var nextReapAt: Duration = .zero
    private var nextReconnectAt: Duration?

    struct Probe: Sendable {
        var target: String
        var address: Address
        var sentAt: Duration
        var timeoutAt: Duration
        var endAt: Duration
        var indirect = false
        var expectedNacks = 0
        var nacks = 0
        /// Regular probes drive the local health multiplier; probes triggered by a rumour do not.
        var regular: Bool
        var refused = false
    }

    struct Relay: Sendable {
        var originSeq: UInt32
        var origin: Address
        var nackAt: Duration
        var expireAt: Duration
        var nackSent = false
    }

    struct Suspicion: Sendable {
        var start: Duration
        var confirmers: Set<String>
        var refused: Bool
        var deadline: Duration
        /// Sequence of the last-chance probe sent when the timeout expired, if any.
        var finalProbe: UInt32?
    }

    struct Join: Sendable {
        var addresses: [Address]
        var attempt = 1
        var inFlight: Set<Address>
        var nextAttemptAt: Duration?
    }

    public init(name: String, address: Address, metadata: [UInt8] = [], settings: Settings = .lan, seed: UInt64) {
        precondition(metadata.count <= settings.maxMetadataSize,
                     "metadata of \(metadata.count) bytes exceeds the bound of \(settings.maxMetadataSize)")
        self.name = name
        self.address = address
        self.metadata = metadata
        self.settings = settings
        self.rng = Xoshiro(seed: seed)
        self.pushPullInterval = settings.initialPushPullInterval
    }

    // MARK: views

    /// Every known member, this node first, then the others by name.
    public var members: [Member] {
        [myself] + others.values.sorted { $0.name < $1.name }
    }

    public func member(named n: String) -> Member? { n == name ? myself : others[n] }

    /// Each known member's status by name, this node included (no ordering work).
    public var statuses: [String: MemberStatus] {
        var v = [String: MemberStatus](minimumCapacity: others.count + 1)
        for (n, m) in others { v[n] = m.status }
        v[name] = myself.status
        return v
    }

    /// `members`, with the order of the others kept between calls.
    private mutating func membersInOrder() -> [Member] {
        if namesStale {
            sortedNames = others.keys.sorted()
            namesStale = false
        }
        var out = [myself]
        out.reserveCapacity(sortedNames.count + 1)
        for n in sortedNames { out.append(others[n]!) }
        return out
    }

    public var myself: Member {
        Member(name: name, address: address, status: isLeaving ? .left : .alive, incarnation: incarnation,
               metadata: metadata, since: .zero)
    }

    /// True while updates (such as this node's leave notice) are still queued for dissemination.
    /// Nothing is pending when there is nobody to tell.
    public var hasPendingBroadcasts: Bool { !broadcasts.isEmpty && liveCount > 1 }

    /// The number of sends for each broadcast at the current cluster size.
    var retransmitLimit: Int {
        settings.retransmitMultiplier * Int(ceil(log10(Double(liveCount + 1))))
    }

    // MARK: inputs

    /// Joins a cluster through any of the given addresses; retried with backoff until one answers.
    public mutating func join(_ addresses: [Address], now: Duration) -> [Directive] {
        let targets = addresses.filter { $0 != address }
        guard !targets.isEmpty else { return [] }
        joining = Join(addresses: targets, inFlight: Set(targets))
        return targets.map { .connect(to: $0, .join(myself.record)) }
    }

    /// Announces a graceful leave; the shell SHOULD keep ticking until ``hasPendingBroadcasts``
    /// is false (or a timeout) before it stops.
    public mutating func leave(now: Duration) -> [Directive] {
        guard !isLeaving else { return [] }
        isLeaving = true
        incarnation = incarnation.next
        let notice = Message.left(name: name, incarnation: incarnation)
        broadcasts.enqueue(notice)
        var out: [Directive] = []
        for target in randomLive(count: settings.gossipFanout * 2, excluding: []) {
            if let m = others[target] { out.append(send([notice], to: m.address)) }
        }
        return out
    }

    /// Sets this node's metadata; announced at once, or coalesced if the last change was recent.
    public mutating func updateMetadata(_ bytes: [UInt8], now: Duration) -> [Directive] {
        precondition(bytes.count <= settings.maxMetadataSize,
                     "metadata of \(bytes.count) bytes exceeds the bound of \(settings.maxMetadataSize)")
        if bytes == metadata { pendingMetadata = nil; return [] }
        pendingMetadata = bytes
        publishMetadataIfDue(now: now)
        return []
    }

    /// Changes the bytes budgeted for the seal (when encryption is switched on or off).
    public mutating func setSealOverhead(_ bytes: Int) { settings.sealOverhead = bytes }

    public mutating func onTick(now: Duration) -> [Directive] {
        var out: [Directive] = []
        tickJoin(now: now, into: &out)
        tickProbes(now: now, into: &out)
        tickRelays(now: now, into: &out)
        tickSuspicions(now: now, into: &out)
        publishMetadataIfDue(now: now)
        tickGossip(now: now, into: &out)
        tickPushPull(now: now, into: &out)
        tickReconnect(now: now, into: &out)
        tickReap(now: now, into: &out)
        sendUrgentNews(now: now, into: &out)
        return out
    }

    private mutating func sendUrgentNews(now: Duration, into out: inout [Directive]) {
        guard urgentNews else { return }
        urgentNews = false
        nextGossipAt = now
        tickGossip(now: now, into: &out)
    }

    /// Handles one decoded, authenticated packet that arrived from `from`.
    public mutating func onPacket(_ messages: [Message], from: Address, now: Duration) -> [Directive] {
        var out: [Directive] = []
        for m in messages {
            switch m {
            case .ping(let s, let target):
                guard target == name else { stats.misdirectedPings += 1; continue }
                out.append(send([.ack(seq: s)], to: from))
            case .pingReq(let s, let target, let targetAddress):
                let mine = nextSeq()
                relays[mine] = Relay(originSeq: s, origin: from, nackAt: now + settings.probeTimeout * 0.8,
                                     expireAt: now + settings.probeInterval * 2)
                out.append(send([.ping(seq: mine, target: target)], to: targetAddress))
            case .ack(let s):
                onAck(s, now: now, into: &out)
            case .nack(let s):
                probes[s]?.nacks += 1
            case .alive(let n, let a, let inc, let meta):
                applyAlive(n, address: a, incarnation: inc, metadata: meta, now: now, into: &out)
            case .suspect(let n, let inc, let by, let refused):
                applySuspect(n, incarnation: inc, from: by, refused: refused, now: now, into: &out)
            case .dead(let n, let inc, let by):
                applyDead(n, incarnation: inc, from: by, now: now, into: &out)
            case .left(let n, let inc):
                applyLeft(n, incarnation: inc, now: now, into: &out)
            }
        }
        sendUrgentNews(now: now, into: &out)
        return out
    }

    /// Answers a stream request from a peer; `reply` is nil when none is due.
    public mutating func onStreamRequest(_ message: StreamMessage, from: Address, now: Duration)
        -> (reply: StreamMessage?, directives: [Directive])
    {
        var out: [Directive] = []
        switch message {
        case .join(let record):
            merge([record], viaStream: false, now: now, into: &out)
            return (.fullState(membersInOrder().map(\.record)), out)
        case .digest(let theirs):
            return (difference(against: theirs), out)
        case .push(let records):
            merge(records, viaStream: true, now: now, into: &out)
            return (nil, out)
        case .fullState, .difference:
            return (nil, out)
        }
    }

    /// Handles the reply to a `.connect` directive.
    public mutating func onStreamReply(_ message: StreamMessage, from: Address, now: Duration) -> [Directive] {
        var out: [Directive] = []
        switch message {
        case .fullState(let records):
            merge(records, viaStream: true, now: now, into: &out)
            if joining?.addresses.contains(from) == true {
                joining = nil
                out.append(.event(.joined(via: from, members: liveCount)))
                pushPullInterval = settings.initialPushPullInterval
                nextPushPullAt = now + pushPullInterval
            }
        case .difference(let records, let wanted):
            merge(records, viaStream: true, now: now, into: &out)
            let send = wanted.compactMap { member(named: $0)?.record }
            if !send.isEmpty { out.append(.connect(to: from, .push(send))) }
        case .join, .digest, .push:
            break
        }
        return out
    }

    /// Reports that a `.connect` could not be completed.
    public mutating func onStreamFailed(to peer: Address, now: Duration) -> [Directive] {
        guard var j = joining, j.inFlight.contains(peer) else { return [] }
        j.inFlight.remove(peer)
        var out: [Directive] = []
        if j.inFlight.isEmpty {
            let backoff = min(settings.joinRetryMax, settings.joinRetryInitial * (1 << min(j.attempt - 1, 16)))
            j.nextAttemptAt = now + backoff
            out.append(.event(.joinFailed(attempt: j.attempt, retryIn: backoff)))
        }
        joining = j
        return out
    }

    /// Reports the outcome of a `.checkReachability` directive.
    public mutating func onReachability(seq: UInt32, _ outcome: Reachability, now: Duration) -> [Directive] {
        guard var p = probes[seq] else { return [] }
        var out: [Directive] = []
        switch outcome {
        case .answered:
            probes[seq] = nil
            stats.probesSavedByTCP += 1
            spareSuspect(answering: seq, target: p.target, now: now)
        case .refused:
            p.refused = true
            probes[seq] = p
            finishFailedProbe(seq, now: now, into: &out)
        case .silent:
            break
        }
        sendUrgentNews(now: now, into: &out)
        return out
    }

    // MARK: probing

    private mutating func nextSeq() -> UInt32 {
        seq &+= 1
        return seq
    }

    private func probeTimeout(for target: String) -> Duration {
        var t = settings.probeTimeout
        if let r = rtt[target] {
            t = min(settings.probeTimeout, max(settings.minProbeTimeout, r * 4))
        }
        return t * (localHealth + 1)
    }

    @discardableResult
    private mutating func startProbe(_ target: String, regular: Bool, now: Duration, into out: inout [Directive]) -> UInt32? {
        guard let m = others[target] else { return nil }
        let s = nextSeq()
        let scale = localHealth + 1
        // The probe fails `indirectTimeout` after its direct wait ran out (not at the next
        // interval): a silent member is suspected as soon as the indirect probes had their time.
        let direct = probeTimeout(for: target)
        probes[s] = Probe(target: target, address: m.address, sentAt: now, timeoutAt: now + direct,
                          endAt: now + direct + settings.indirectTimeout * scale, regular: regular)
        stats.probes += 1
        var first: [Message] = [.ping(seq: s, target: target)]
        // Buddy system (Lifeguard IV.C): tell a suspect at once, ahead of everything else. It
        // names this node as the one who suspects: a suspect that already refuted (a higher
        // incarnation we have not heard of) says so again to us, straight away.
        if m.status == .suspect {
            first.append(.suspect(name: target, incarnation: m.incarnation, from: name, refused: false))
        }
        out.append(send(first, to: m.address))
        return s
    }

    /// A last-chance probe was answered: the member lives, so its suspicion starts over.
    private mutating func spareSuspect(answering seq: UInt32, target: String, now: Duration) {
        guard var s = suspicions[target], s.finalProbe == seq else { return }
        s.finalProbe = nil
        s.start = now
        s.deadline = now + suspicionTimeout(s)
        suspicions[target] = s
    }

    private mutating func nextProbeTarget() -> String? {
        let probing = Set(probes.values.map(\.target))
        for _ in 0..<(probeOrder.count + 1) {
            if probeIndex >= probeOrder.count {
                probeOrder = others.values.filter { $0.status == .alive || $0.status == .suspect }
                    .map(\.name).sorted()
                probeOrder.shuffle(using: &rng)
                probeIndex = 0
                if probeOrder.isEmpty { return nil }
            }
            let candidate = probeOrder[probeIndex]
            probeIndex += 1
            if let m = others[candidate], m.status == .alive || m.status == .suspect, !probing.contains(candidate) {
                return candidate
            }
        }
        return nil
    }

    private mutating func tickProbes(now: Duration, into out: inout [Directive]) {
        for s in probes.isEmpty ? [] : probes.keys.sorted() {
            guard let p = probes[s] else { continue }
            if now >= p.endAt {
                finishFailedProbe(s, now: now, into: &out)
            } else if !p.indirect && now >= p.timeoutAt {
                probes[s]!.indirect = true
                // The indirect probes and the TCP ping get their whole window from now.
                probes[s]!.endAt = max(p.endAt, now + settings.indirectTimeout * (localHealth + 1))
                // SWIM §3.1: ask k others to probe on our behalf; Lifeguard IV.A: they nack if they fail.
                let helpers = randomLive(count: settings.indirectChecks, excluding: [p.target], aliveOnly: true)
                probes[s]!.expectedNacks = helpers.count
                stats.indirectProbes += 1
                for h in helpers {
                    if let hm = others[h] {
                        out.append(send([.pingReq(seq: s, target: p.target, address: p.address)], to: hm.address))
                    }
                }
                out.append(.checkReachability(of: p.target, at: p.address, seq: s))
            }
        }
        guard !isLeaving, now >= nextProbeAt else { return }
        nextProbeAt = now + settings.probeInterval * (localHealth + 1)
        if let target = nextProbeTarget() {
            startProbe(target, regular: true, now: now, into: &out)
        }
    }

    private mutating func onAck(_ s: UInt32, now: Duration, into out: inout [Directive]) {
        if let p = probes.removeValue(forKey: s) {
            if !p.indirect {
                let sample = now - p.sentAt
                rtt[p.target] = rtt[p.target].map { ($0 * 7 + sample) / 8 } ?? sample
            }
            if p.regular { localHealth = max(0, localHealth - 1) }
            spareSuspect(answering: s, target: p.target, now: now)
        } else if let r = relays.removeValue(forKey: s) {
            out.append(send([.ack(seq: r.originSeq)], to: r.origin))
        } else {
            stats.stalePings += 1
        }
    }

    private mutating func finishFailedProbe(_ s: UInt32, now: Duration, into out: inout [Directive]) {
        guard let p = probes.removeValue(forKey: s) else { return }
        stats.probesFailed += 1
        if p.regular && !p.refused {
            // Lifeguard IV.A: missing nacks mean our own links or scheduling are the problem.
            if p.expectedNacks == 0 || p.nacks < p.expectedNacks {
                localHealth = min(settings.maxLocalHealth, localHealth + 1)
            }
        }
        guard let m = others[p.target], m.status == .alive || m.status == .suspect else { return }
        applySuspect(p.target, incarnation: m.incarnation, from: name, refused: p.refused, now: now, into: &out)
    }

    private mutating func tickRelays(now: Duration, into out: inout [Directive]) {
        for s in relays.isEmpty ? [] : relays.keys.sorted() {
            guard let r = relays[s] else { continue }
            if now >= r.expireAt {
                relays[s] = nil
            } else if !r.nackSent && now >= r.nackAt {
                relays[s]!.nackSent = true
                out.append(send([.nack(seq: r.originSeq)], to: r.origin))
            }
        }
    }

    // MARK: suspicion (Lifeguard IV.B)

    private func suspicionTimeout(_ s: Suspicion) -> Duration {
        let n = Double(max(liveCount, 1))
        let scale = max(1.0, log10(n))
        let floor = max(settings.minSuspicionTimeout, settings.probeInterval * (settings.suspicionMultiplier * scale))
        let ceiling = floor * settings.suspicionMaxMultiplier
        let k = min(settings.suspicionConfirmations, max(0, liveCount - 2))
        var timeout = floor
        if k >= 1 {
            let c = Double(min(max(s.confirmers.count - 1, 0), k))
            let shrink = log(c + 1) / log(Double(k) + 1)
            timeout = max(floor, ceiling - (ceiling - floor) * shrink)
        }
        if s.refused { timeout = min(timeout, settings.refusedSuspicionTimeout) }
        return timeout
    }

    private mutating func tickSuspicions(now: Duration, into out: inout [Directive]) {
        for n in suspicions.isEmpty ? [] : suspicions.keys.sorted() {
            guard var s = suspicions[n], now >= s.deadline, var m = others[n], m.status == .suspect else { continue }
            // Before declaring a silent member dead, probe it one last time (UDP, indirect and
            // TCP): a member that paused and whose refutation we missed answers and is spared.
            if !s.refused && s.finalProbe == nil {
                let seq = startProbe(n, regular: false, now: now, into: &out)
                s.finalProbe = seq
                s.deadline = now + (settings.probeTimeout + settings.indirectTimeout) * (localHealth + 1) + settings.tickInterval
                // The probe stays open until the verdict: an answer any time before it spares the member.
                if let seq { probes[seq]?.endAt = s.deadline }
                suspicions[n] = s
                continue
            }
            suspicions[n] = nil
            setStatus(&m, .dead, now: now)
            others[n] = m
            stats.deathsDeclared += 1
            urgentNews = true
            broadcasts.enqueue(.dead(name: n, incarnation: m.incarnation, from: name))
            out.append(.event(.memberDied(m, by: name)))
        }
    }

    // MARK: applying rumours

    private mutating func refute(_ rumour: MemberStatus, over inc: Incarnation, into out: inout [Directive]) {
        incarnation = max(incarnation, inc).next
        stats.refutations += 1
        if rumour == .suspect { localHealth = min(settings.maxLocalHealth, localHealth + 1) }
        let alive = Message.alive(name: name, address: address, incarnation: incarnation, metadata: metadata)
        broadcasts.enqueue(alive)
        // A refutation races suspicion timers all over the cluster (and this node may just have
        // woken from a pause): besides gossiping it, tell up to `refutationFanout` members at once.
        for target in randomLive(count: settings.refutationFanout, excluding: []) {
            if let m = others[target] {
                stats.packetsSent += 1
                stats.messagesSent += 1
                out.append(.send([alive], to: m.address))
            }
        }
        out.append(.event(.refuted(rumour: rumour, incarnation: incarnation)))
    }

    private mutating func setStatus(_ m: inout Member, _ status: MemberStatus, now: Duration) {
        let wasLive = m.status == .alive || m.status == .suspect
        let isLive = status == .alive || status == .suspect
        if wasLive && !isLive { liveCount -= 1 }
        if !wasLive && isLive { liveCount += 1 }
        if m.status != status { m.since = now }
        m.status = status
    }

    /// `announceNew` is false for members learned from a state exchange: the peer that told us
    /// already knows them, and re-gossiping a whole view after every join would flood the cluster.
    private mutating func applyAlive(_ n: String, address a: Address, incarnation inc: Incarnation, metadata meta: [UInt8],
                                     now: Duration, announceNew: Bool = true, into out: inout [Directive]) {
        if n == name {
            guard !isLeaving else { return }
            if a != address {
                out.append(.event(.nameConflict(name: n, known: address, claimed: a)))
                if inc >= incarnation { refute(.alive, over: inc, into: &out) }
            } else if inc > incarnation {
                refute(.alive, over: inc, into: &out)
            }
            return
        }
        guard var m = others[n] else {
            var m = Member(name: n, address: a, status: .dead, incarnation: inc, metadata: meta, since: now)
            setStatus(&m, .alive, now: now)
            others[n] = m
            probeOrder.insert(n, at: Int.random(in: 0...probeOrder.count, using: &rng))
            if announceNew { broadcasts.enqueue(.alive(name: n, address: a, incarnation: inc, metadata: meta)) }
            out.append(.event(.memberJoined(m)))
            return
        }
        let gone = m.status == .dead || m.status == .left
        if m.address != a {
            guard gone else {
                out.append(.event(.nameConflict(name: n, known: m.address, claimed: a)))
                return
            }
        } else if inc <= m.incarnation {
            return
        }
        let old = m.status
        let metaChanged = m.metadata != meta
        m.address = a
        m.incarnation = inc
        m.metadata = meta
        setStatus(&m, .alive, now: now)
        others[n] = m
        suspicions[n] = nil
        if gone { probeOrder.insert(n, at: Int.random(in: 0...probeOrder.count, using: &rng)) }
        broadcasts.enqueue(.alive(name: n, address: a, incarnation: inc, metadata: meta),
                           lowPriority: old == .alive)
        switch old {
        case .suspect: out.append(.event(.memberRecovered(m)))
        case .dead, .left: out.append(.event(.memberJoined(m)))
        case .alive: if metaChanged { out.append(.event(.memberUpdated(m))) }
        }
    }

    private mutating func applySuspect(_ n: String, incarnation inc: Incarnation, from by: String, refused: Bool,
                                       now: Duration, into out: inout [Directive]) {
        if n == name {
            guard !isLeaving else { return }
            if inc >= incarnation {
                refute(.suspect, over: inc, into: &out)
            } else if now - (reassertedTo[by] ?? .seconds(-1_000_000)) >= settings.probeInterval {
                // Someone still suspects an older incarnation of this member: the refutation never
                // reached it (lost, or its broadcasts ran out while the network was cut). Say it
                // again to that member, without a new incarnation — once per interval each.
                if reassertedTo.count >= 4096 { reassertedTo.removeAll() }
                reassertedTo[by] = now
                let alive = Message.alive(name: name, address: address, incarnation: incarnation, metadata: metadata)
                broadcasts.enqueue(alive)
                if let m = others[by] {
                    stats.packetsSent += 1
                    stats.messagesSent += 1
                    out.append(.send([alive], to: m.address))
                }
            }
            return
        }
        guard var m = others[n], inc >= m.incarnation else { return }
        switch m.status {
        case .dead, .left:
            return
        case .alive:
            m.incarnation = inc
            setStatus(&m, .suspect, now: now)
            others[n] = m
            var s = Suspicion(start: now, confirmers: [by], refused: refused, deadline: now)
            s.deadline = now + suspicionTimeout(s)
            suspicions[n] = s
            if refused { urgentNews = true }
            stats.suspicionsRaised += by == name ? 1 : 0
            broadcasts.enqueue(.suspect(name: n, incarnation: inc, from: by, refused: refused))
            out.append(.event(.memberSuspected(m, by: by)))
            // Hearing a suspicion, check the member ourselves at once; failure adds a confirmation.
            if by != name && !probes.values.contains(where: { $0.target == n }) {
                startProbe(n, regular: false, now: now, into: &out)
            }
        case .suspect:
            if inc > m.incarnation {
                m.incarnation = inc
                others[n] = m
            }
            guard var s = suspicions[n] else { return }
            let newConfirmer = !s.confirmers.contains(by)
            let newlyRefused = refused && !s.refused
            guard newConfirmer || newlyRefused else { return }
            s.confirmers.insert(by)
            if newlyRefused { urgentNews = true }
            s.refused = s.refused || refused
            s.deadline = s.start + suspicionTimeout(s)
            suspicions[n] = s
            broadcasts.enqueue(.suspect(name: n, incarnation: m.incarnation, from: by, refused: s.refused))
        }
    }

    private mutating func applyDead(_ n: String, incarnation inc: Incarnation, from by: String, now: Duration,
                                    into out: inout [Directive]) {
        if n == name {
            if !isLeaving { refute(.dead, over: inc, into: &out) }
            return
        }
        guard var m = others[n], m.status != .dead, m.status != .left, inc >= m.incarnation else { return }
        m.incarnation = inc
        setStatus(&m, .dead, now: now)
        others[n] = m
        suspicions[n] = nil
        urgentNews = true
        broadcasts.enqueue(.dead(name: n, incarnation: inc, from: by))
        out.append(.event(.memberDied(m, by: by)))
    }

    private mutating func applyLeft(_ n: String, incarnation inc: Incarnation, now: Duration, into out: inout [Directive]) {
        if n == name {
            if !isLeaving { refute(.left, over: inc, into: &out) }
            return
        }
        guard var m = others[n], m.status != .left, inc >= m.incarnation else { return }
        m.incarnation = inc
        setStatus(&m, .left, now: now)
        others[n] = m
        suspicions[n] = nil
        broadcasts.enqueue(.left(name: n, incarnation: inc))
        out.append(.event(.memberLeft(m)))
    }

    /// Applies records from a peer's state. Over streams a `dead` record only raises a
    /// suspicion (as memberlist does): the member gets its chance to refute.
    private mutating func merge(_ records: [MemberRecord], viaStream: Bool, now: Duration, into out: inout [Directive]) {
        for r in records {
            switch r.status {
            case .alive:
                applyAlive(r.name, address: r.address, incarnation: r.incarnation, metadata: r.metadata, now: now,
                           announceNew: !viaStream, into: &out)
            case .suspect:
                applySuspect(r.name, incarnation: r.incarnation, from: "anti-entropy", refused: false, now: now, into: &out)
            case .dead:
                if viaStream && r.name != name {
                    applySuspect(r.name, incarnation: r.incarnation, from: "anti-entropy", refused: false, now: now, into: &out)
                } else {
                    applyDead(r.name, incarnation: r.incarnation, from: "anti-entropy", now: now, into: &out)
                }
            case .left:
                applyLeft(r.name, incarnation: r.incarnation, now: now, into: &out)
            }
        }
    }

    // MARK: dissemination

    /// Builds a send directive: the given messages first, then as many queued broadcasts as fit.
    private mutating func send(_ first: [Message], to target: Address) -> Directive {
        let used = first.reduce(1) { $0 + Codec.size(of: $1) }
        let budget = settings.maxPacketSize - settings.sealOverhead - used
        var messages = first
        messages += broadcasts.take(budget: budget, limit: retransmitLimit)
        stats.packetsSent += 1
        stats.messagesSent += messages.count
        return .send(messages, to: target)
    }

    private mutating func tickGossip(now: Duration, into out: inout [Directive]) {
        guard now >= nextGossipAt else { return }
        nextGossipAt = now + settings.gossipInterval
        guard !broadcasts.isEmpty else { return }
        for target in randomLive(count: settings.gossipFanout, excluding: []) {
            guard !broadcasts.isEmpty, let m = others[target] else { break }
            out.append(send([], to: m.address))
        }
    }

    private mutating func publishMetadataIfDue(now: Duration) {
        guard let pending = pendingMetadata, !isLeaving else { return }
        if let last = lastMetadataAt, now - last < settings.metadataMinInterval { return }
        pendingMetadata = nil
        lastMetadataAt = now
        metadata = pending
        incarnation = incarnation.next
        // Capacity changes are low priority: death notices always go first.
        broadcasts.enqueue(.alive(name: name, address: address, incarnation: incarnation, metadata: metadata),
                           lowPriority: true)
    }

    /// Up to `count` distinct random members that are alive (or suspect, unless `aliveOnly`).
    private mutating func randomLive(count: Int, excluding: Set<String>, aliveOnly: Bool = false) -> [String] {
        guard count > 0, !probeOrder.isEmpty else { return [] }
        if count * 2 >= probeOrder.count {
            // Asking for most of the members: take them all, in random order.
            var all = Set(probeOrder).filter { n in
                guard !excluding.contains(n), let m = others[n] else { return false }
                return m.status == .alive || (!aliveOnly && m.status == .suspect)
            }.sorted()
            all.shuffle(using: &rng)
            return Array(all.prefix(count))
        }
        var picked: [String] = []
        var seen = Set<String>()
        var tries = 0
        while picked.count < count && tries < count * 4 + 8 {
            tries += 1
            let n = probeOrder[Int.random(in: 0..<probeOrder.count, using: &rng)]
            guard !seen.contains(n), !excluding.contains(n), let m = others[n] else { continue }
            seen.insert(n)
            if m.status == .alive || (!aliveOnly && m.status == .suspect) { picked.append(n) }
        }
        return picked
    }

    // MARK: anti-entropy and joins

    private mutating func digest() -> [DigestEntry] {
        membersInOrder().map { DigestEntry(name: $0.name, status: $0.status, incarnation: $0.incarnation) }
    }

    private mutating func difference(against theirs: [DigestEntry]) -> StreamMessage {
        var known: [String: DigestEntry] = [:]
        for e in theirs { known[e.name] = e }
        var records: [MemberRecord] = []
        for m in membersInOrder() {
            let mine = DigestEntry(name: m.name, status: m.status, incarnation: m.incarnation)
            if let t = known[m.name] {
                if mine.isNewer(than: t) { records.append(m.record) }
            } else if m.status == .alive || m.status == .suspect || m.name == name {
                records.append(m.record)
            }
        }
        var wanted: [String] = []
        for e in theirs {
            if let m = member(named: e.name) {
                if e.isNewer(than: DigestEntry(name: m.name, status: m.status, incarnation: m.incarnation)) {
                    wanted.append(e.name)
                }
            } else if e.status == .alive || e.status == .suspect {
                wanted.append(e.name)
            }
        }
        return .difference(records: records, wanted: wanted)
    }

    private mutating func tickPushPull(now: Duration, into out: inout [Directive]) {
        guard let due = nextPushPullAt, now >= due, !isLeaving else { return }
        // memberlist scales the period with cluster size so large clusters do not flood TCP.
        var cap = settings.pushPullInterval
        if liveCount > 32 {
            cap = cap * Int(ceil(log2(Double(liveCount)) - log2(32.0)) + 1)
        }
        pushPullInterval = min(cap, pushPullInterval * 2)
        nextPushPullAt = now + pushPullInterval
        if let peer = randomLive(count: 1, excluding: [], aliveOnly: true).first, let m = others[peer] {
            out.append(.connect(to: m.address, .digest(digest())))
        }
    }

    /// Starts anti-entropy without a join (for a node whose view came from elsewhere).
    public mutating func startAntiEntropy(now: Duration) {
        if nextPushPullAt == nil { nextPushPullAt = now + settings.initialPushPullInterval }
    }

    private mutating func tickJoin(now: Duration, into out: inout [Directive]) {
        guard var j = joining, let at = j.nextAttemptAt, now >= at else { return }
        j.attempt += 1
        j.inFlight = Set(j.addresses)
        j.nextAttemptAt = nil
        joining = j
        for a in j.addresses { out.append(.connect(to: a, .join(myself.record))) }
    }

    /// True while a join has not yet been answered by any peer.
    public var isJoining: Bool { joining != nil }

    private mutating func tickReconnect(now: Duration, into out: inout [Directive]) {
        guard let due = nextReconnectAt else {
            nextReconnectAt = now + settings.reconnectInterval
            return
        }
        guard now >= due, !isLeaving else { return }
        nextReconnectAt = now + settings.reconnectInterval
        let dead = others.values.filter { $0.status == .dead }.map(\.name).sorted()
        guard !dead.isEmpty, let m = others[dead[Int.random(in: 0..<dead.count, using: &rng)]] else { return }
        out.append(.connect(to: m.address, .digest(digest())))
    }

    private mutating func tickReap(now: Duration, into out: inout [Directive]) {
        guard now >= nextReapAt else { return }
        nextReapAt = now + .seconds(1)
        // Only the members due are sorted (for a deterministic order), not every member each second.
        let due = others.compactMap { n, m in (m.status == .dead || m.status == .left) && now - m.since >= settings.reapAfter ? n : nil }
        for n in due.sorted() {
            guard let m = others[n], m.status == .dead || m.status == .left, now - m.since >= settings.reapAfter else { continue }
            others[n] = nil
            rtt[n] = nil
            probeOrder.removeAll { $0 == n }
            probeIndex = min(probeIndex, probeOrder.count)
            out.append(.event(.memberReaped(n)))
        }
    }
}
