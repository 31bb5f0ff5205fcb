/// A simulated datagram network for deterministic tests of protocol cores.
///
/// Messages are delivered after a random latency, may be lost, duplicated or reordered, and
/// never cross a partition or reach a crashed node. Time is virtual: the caller asks for the
/// messages due up to a given instant. Every random choice comes from the seeded source, so one
/// seed is one exact run.
public struct SimulatedNetwork<Address: Hashable & Sendable, Message: Sendable>: Sendable {
    public struct Faults: Sendable {
        /// Probability that a message is dropped.
        public var loss: Double = 0
        /// Probability that a delivered message is delivered twice.
        public var duplication: Double = 0
        /// Latency range of one message; a range wider than zero reorders messages.
        public var latency: ClosedRange<Duration> = .milliseconds(1) ... .milliseconds(1)
        public init(loss: Double = 0, duplication: Double = 0,
                    latency: ClosedRange<Duration> = .milliseconds(1) ... .milliseconds(1)) {
            self.loss = loss
            self.duplication = duplication
            self.latency = latency
        }
    }

    public struct Delivery: Sendable {
        public let at: Duration
        public let from: Address
        public let to: Address
        public let message: Message
    }

    public var faults: Faults
    public var random: SeededRandom
    private var queue = EventQueue<Delivery>()
    private var crashed: Set<Address> = []
    /// Partition group of each address; addresses in different groups cannot talk.
    private var group: [Address: Int] = [:]
    /// Per-sender extra loss (a gray failure on one node's link).
    public var senderLoss: [Address: Double] = [:]

    public private(set) var sent = 0
    public private(set) var dropped = 0
    public private(set) var delivered = 0

    public init(seed: UInt64, faults: Faults = Faults()) {
        self.random = SeededRandom(seed: seed)
        self.faults = faults
    }

    /// Queues a message sent at `now`.
    public mutating func send(_ message: Message, from: Address, to: Address, now: Duration) {
        sent += 1
        let extra = senderLoss[from] ?? 0
        if !canReach(from, to) || random.chance(faults.loss) || random.chance(extra) {
            dropped += 1
            return
        }
        let copies = random.chance(faults.duplication) ? 2 : 1
        for _ in 0..<copies {
            queue.push(Delivery(at: now + randomLatency(), from: from, to: to, message: message))
        }
    }

    /// The earliest pending delivery time, if any.
    public var nextDeliveryTime: Duration? { queue.peek?.at }

    /// Removes and returns the next message due at or before `now`; messages to crashed nodes or
    /// across a partition made after sending are dropped here.
    public mutating func nextDelivery(upTo now: Duration) -> Delivery? {
        while let d = queue.peek, d.at <= now {
            _ = queue.pop()
            if crashed.contains(d.to) || !canReach(d.from, d.to) {
                dropped += 1
                continue
            }
            delivered += 1
            return d
        }
        return nil
    }

    public func canReach(_ a: Address, _ b: Address) -> Bool {
        if crashed.contains(a) || crashed.contains(b) { return false }
        return (group[a] ?? 0) == (group[b] ?? 0)
    }

    public mutating func crash(_ a: Address) { crashed.insert(a) }
    public mutating func restart(_ a: Address) { crashed.remove(a) }
    public func isCrashed(_ a: Address) -> Bool { crashed.contains(a) }

    /// Splits the network: each listed set becomes its own side; unlisted addresses stay in side 0.
    public mutating func partition(_ sides: [Set<Address>]) {
        group = [:]
        for (i, side) in sides.enumerated() { for a in side { group[a] = i + 1 } }
    }

    public mutating func heal() { group = [:] }

    private mutating func randomLatency() -> Duration {
        let lo = faults.latency.lowerBound, hi = faults.latency.upperBound
        if lo == hi { return lo }
        let span = (hi - lo) / Duration.nanoseconds(1)
        let pick = Double.random(in: 0...1, using: &random) * span
        return lo + .nanoseconds(Int64(pick))
    }
}

/// A min-heap of timed events; ties keep insertion order so runs are deterministic.
public struct EventQueue<Element: Sendable>: Sendable {
    private struct Entry: Sendable { let at: Duration; let seq: UInt64; let element: Element }
    private var heap: [Entry] = []
    private var seq: UInt64 = 0

    public init() {}

    public var isEmpty: Bool { heap.isEmpty }
    public var count: Int { heap.count }

    public var peek: Element? { heap.first?.element }

    public mutating func push(_ element: Element) where Element: Timed { push(element, at: element.at) }

    public mutating func push(_ element: Element, at: Duration) {
        seq += 1
        heap.append(Entry(at: at, seq: seq, element: element))
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if less(heap[i], heap[p]) { heap.swapAt(i, p); i = p } else { break }
        }
    }

    public var peekTime: Duration? { heap.first?.at }

    public mutating func pop() -> Element? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && less(heap[l], heap[m]) { m = l }
            if r < heap.count && less(heap[r], heap[m]) { m = r }
            if m == i { break }
            heap.swapAt(i, m); i = m
        }
        return top.element
    }

    private func less(_ a: Entry, _ b: Entry) -> Bool { a.at < b.at || (a.at == b.at && a.seq < b.seq) }
}

/// Something that happens at a point of virtual time.
public protocol Timed { var at: Duration { get } }

extension SimulatedNetwork.Delivery: Timed {}
