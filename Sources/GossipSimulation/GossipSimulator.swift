import CaravanTesting
import Gossip

/// N gossip cores on a simulated network in virtual time.
///
/// Every UDP packet is encoded and decoded with the real codec (so the codec is exercised and
/// bytes are counted), may be lost, delayed or reordered, and never crosses a partition. Streams
/// (TCP) are reliable but fail across partitions and to crashed nodes. A crashed node's TCP port
/// answers "connection refused" when `crashesRefuse` (a process that died on a live host) and
/// stays silent otherwise (a host that vanished).
public struct GossipSimulator: Sendable {
    public enum Wire: Sendable {
        case packet([UInt8])
    }

    public enum StreamEvent: Sendable {
        case request(StreamMessage, from: Address, to: Address)
        case reply(StreamMessage, from: Address, to: Address)
        case failed(requester: Address, peer: Address)
        case reachability(requester: Address, seq: UInt32, outcome: Reachability)
    }

    public var settings: Settings
    public var net: SimulatedNetwork<Address, Wire>
    public var streams = EventQueue<StreamEvent>()
    public var nodes: [Address: Instance] = [:]
    public var order: [Address] = []
    public var now: Duration = .zero
    public var crashesRefuse = true
    /// Whether TCP pings are answered (false models TCP suffering the same faults as UDP).
    public var tcpPing = true
    public var stalledUntil: [Address: Duration] = [:]
    public var backlog: [Address: [SimulatedNetwork<Address, Wire>.Delivery]] = [:]
    public var bytesSent: [Address: Int] = [:]
    public var events: [(at: Duration, node: String, event: Event)] = []
    public var recordEvents = true
    public var seedSource: SeededRandom

    public init(seed: UInt64, settings: Settings = .lan, faults: SimulatedNetwork<Address, Wire>.Faults = .init()) {
        self.settings = settings
        self.net = SimulatedNetwork(seed: seed, faults: faults)
        self.seedSource = SeededRandom(seed: seed ^ 0x5EED)
    }

    public static func address(_ i: Int) -> Address {
        Address(host: "10.\(i / 65536).\((i / 256) % 256).\(i % 256)", port: 4682)
    }

    public static func name(_ i: Int) -> String { "node-\(i)" }

    /// Adds a node; it joins `seeds` (if any) at once.
    @discardableResult
    public mutating func add(_ i: Int, joining seeds: [Int] = [], metadata: [UInt8] = []) -> Address {
        let a = Self.address(i)
        let inst = Instance(name: Self.name(i), address: a, metadata: metadata, settings: settings, seed: seedSource.derive())
        if nodes[a] == nil { order.append(a) }
        nodes[a] = inst
        net.restart(a)
        if !seeds.isEmpty {
            let ds = nodes[a]!.join(seeds.map(Self.address), now: now)
            carry(ds, from: a)
        }
        return a
    }

    /// Starts `n` nodes that all join node 0.
    public mutating func startCluster(_ n: Int) {
        add(0)
        for i in 1..<n { add(i, joining: [0]) }
    }

    /// Gives every node a full view at once, as if the cluster had long settled.
    public mutating func startSettled(_ n: Int) {
        for i in 0..<n { add(i) }
        let records = order.map { nodes[$0]!.myself.record }
        for a in order {
            _ = nodes[a]!.onStreamReply(.fullState(records), from: a, now: now)
            nodes[a]!.startAntiEntropy(now: now)
        }
    }

    public mutating func crash(_ i: Int) {
        let a = Self.address(i)
        net.crash(a)
        nodes[a] = nil
        order.removeAll { $0 == a }
    }

    public mutating func stall(_ i: Int, for d: Duration) { stallUntil(Self.address(i), now + d) }

    private mutating func stallUntil(_ a: Address, _ t: Duration) { stalledUntil[a] = t }

    public func isStalled(_ a: Address) -> Bool { (stalledUntil[a] ?? .zero) > now }

    // MARK: running

    public mutating func run(for d: Duration) {
        let end = now + d
        while now < end { step() }
    }

    /// Runs until the condition holds or the deadline passes; returns the virtual time it took.
    @discardableResult
    public mutating func run(until deadline: Duration, _ done: (GossipSimulator) -> Bool) -> Duration? {
        let start = now
        let end = now + deadline
        while now < end {
            if done(self) { return now - start }
            step()
        }
        return done(self) ? now - start : nil
    }

    public mutating func step() {
        let t = now + settings.tickInterval
        deliver(upTo: t)
        now = t
        for a in order where !isStalled(a) {
            if let pending = backlog.removeValue(forKey: a) {
                for d in pending { handle(d) }
            }
            guard var inst = nodes[a] else { continue }
            let ds = inst.onTick(now: now)
            nodes[a] = inst
            carry(ds, from: a)
        }
    }

    private mutating func deliver(upTo t: Duration) {
        while true {
            let nt = net.nextDeliveryTime
            let st = streams.peekTime
            let next = [nt, st].compactMap { $0 }.min()
            guard let at = next, at <= t else { return }
            if let st, st == at {
                now = max(now, at)
                handleStream(streams.pop()!)
            } else if let d = net.nextDelivery(upTo: at) {
                now = max(now, at)
                if isStalled(d.to) {
                    backlog[d.to, default: []].append(d)
                } else {
                    handle(d)
                }
            }
        }
    }

    private mutating func handle(_ d: SimulatedNetwork<Address, Wire>.Delivery) {
        guard var inst = nodes[d.to] else { return }
        guard case .packet(let bytes) = d.message, let messages = Codec.decodePacket(bytes) else {
            preconditionFailure("codec failed to decode its own packet")
        }
        let ds = inst.onPacket(messages, from: d.from, now: now)
        nodes[d.to] = inst
        carry(ds, from: d.to)
    }

    private mutating func handleStream(_ e: StreamEvent) {
        switch e {
        case .request(let m, let from, let to):
            guard var inst = nodes[to], !isStalled(to) else {
                streams.push(.failed(requester: from, peer: to), at: now + .milliseconds(100))
                return
            }
            let (reply, ds) = inst.onStreamRequest(m, from: from, now: now)
            nodes[to] = inst
            carry(ds, from: to)
            if let reply { streams.push(.reply(reply, from: to, to: from), at: now + latency) }
        case .reply(let m, let from, let to):
            guard var inst = nodes[to] else { return }
            let ds = inst.onStreamReply(m, from: from, now: now)
            nodes[to] = inst
            carry(ds, from: to)
        case .failed(let requester, let peer):
            guard var inst = nodes[requester] else { return }
            let ds = inst.onStreamFailed(to: peer, now: now)
            nodes[requester] = inst
            carry(ds, from: requester)
        case .reachability(let requester, let seq, let outcome):
            guard var inst = nodes[requester] else { return }
            let ds = inst.onReachability(seq: seq, outcome, now: now)
            nodes[requester] = inst
            carry(ds, from: requester)
        }
    }

    private var latency: Duration { net.faults.latency.upperBound }

    private mutating func carry(_ ds: [Directive], from a: Address) {
        for d in ds {
            switch d {
            case .send(let messages, let to):
                let bytes = Codec.encodePacket(messages)
                precondition(bytes.count + settings.sealOverhead <= settings.maxPacketSize,
                             "packet of \(bytes.count) bytes exceeds the budget")
                bytesSent[a, default: 0] += bytes.count + settings.sealOverhead
                net.send(.packet(bytes), from: a, to: to, now: now)
            case .connect(let to, let m):
                // Streams go through the codec too.
                let decoded = Codec.decodeStream(Codec.encodeStream(m))
                precondition(decoded == m, "stream codec round trip failed")
                if net.canReach(a, to) && nodes[to] != nil {
                    streams.push(.request(m, from: a, to: to), at: now + latency)
                } else {
                    let refused = nodes[to] == nil && crashesRefuse && !net.canReach(a, to) && net.isCrashed(to)
                    streams.push(.failed(requester: a, peer: to), at: now + (refused ? .milliseconds(1) : .seconds(1)))
                }
            case .checkReachability(_, let at, let seq):
                // TCP is reliable here: a running, reachable, unstalled node echoes the ping.
                if net.isCrashed(at) && crashesRefuse {
                    streams.push(.reachability(requester: a, seq: seq, outcome: .refused), at: now + .milliseconds(1))
                } else if nodes[at] != nil && net.canReach(a, at) && !isStalled(at) && tcpPing {
                    streams.push(.reachability(requester: a, seq: seq, outcome: .answered), at: now + latency * 2)
                }
            case .event(let e):
                if recordEvents { events.append((now, nodes[a]?.name ?? "?", e)) }
            }
        }
    }

    // MARK: views

    public func view(of a: Address) -> [String: MemberStatus] {
        nodes[a]!.statuses
    }

    /// True when every running node sees exactly the running nodes as alive.
    public func converged() -> Bool {
        let live = Set(order.map { nodes[$0]!.name })
        for a in order {
            let v = view(of: a)
            let alive = Set(v.filter { $0.value == .alive }.map(\.key))
            if alive != live { return false }
        }
        return true
    }

    public func everyone(sees name: String, as status: MemberStatus) -> Bool {
        order.allSatisfy { a in nodes[a]!.name == name || nodes[a]!.member(named: name)?.status == status }
    }

    /// Names that some running node has declared dead although they are running.
    public func falselyDead() -> [String] {
        let live = Set(order.map { nodes[$0]!.name })
        var out = Set<String>()
        for a in order {
            for (n, s) in view(of: a) where s == .dead && live.contains(n) { out.insert(n) }
        }
        return out.sorted()
    }
}
