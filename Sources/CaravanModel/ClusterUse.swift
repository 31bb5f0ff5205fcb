/// What the cluster's allocations hold, node by node and namespace by namespace, with the
/// nodes in a fixed order (a node's *slot*): what the scheduler and the plan applier read
/// instead of walking every allocation. The replicated state keeps one up to date as commands
/// apply (``add(_:sign:)`` for each allocation that changes), so reading it for an evaluation
/// costs nothing however many allocations the cluster holds; ``init(nodes:allocations:)``
/// builds one from lists (tests, small inputs).
public struct ClusterUse: Sendable, Equatable {
    /// What live allocations reserve on one node.
    public struct NodeUse: Sendable, Equatable {
        public var cpuMillicores = 0
        public var memoryMiB = 0
        public var diskMiB = 0
        public init() {}
    }

    /// Every node, by slot. Slots are never reused: a node keeps its slot for the life of the state.
    public private(set) var nodes: [Node] = []
    /// Node id → slot.
    public private(set) var slot: [String: Int] = [:]
    /// Each slot's scheduling class: nodes with the same class (``Node/SchedulingClass``) pass or
    /// fail the same node-only checks, so those are decided once per class.
    public private(set) var classOf: [Int] = []
    private var classes: [Node.SchedulingClass: Int] = [:]
    /// What live allocations reserve on each slot.
    public private(set) var use: [NodeUse] = []
    /// What each slot's node offers (its CPU, memory and disk), read where the node itself
    /// would be copied for three numbers.
    public private(set) var capacity: [NodeUse] = []
    /// For each block of 64 slots, the most CPU, memory and disk any one of its nodes has free
    /// (each on its own): a block whose most is short of an ask holds no node that fits it, so a
    /// walk over a large, filling cluster passes it in one step.
    public private(set) var blockFree: [NodeUse] = []
    public static let blockShift = 6
    /// Ports live allocations hold, by slot (only slots that hold any): port → allocations.
    public private(set) var ports: [Int: [Int: Int]] = [:]
    /// What allocations that hold resources (``Allocation/holdsResources``) take from each
    /// namespace, for its quota.
    public private(set) var namespaces: [String: Quota.Usage] = [:]

    public init() {}

    /// Built from lists: every node, then every allocation added.
    public init(nodes: [Node], allocations: [Allocation]) {
        for n in nodes { upsert(n, holding: []) }
        for a in allocations { add(a) }
    }

    /// How many scheduling classes the nodes fall into.
    public var classCount: Int { classes.count }

    /// Records a node, new or changed; a new one gets the next slot and starts with what
    /// `holding` (the allocations already filed under its id) reserve.
    public mutating func upsert(_ node: Node, holding: some Sequence<Allocation>) {
        let key = node.schedulingClass
        let c: Int
        if let known = classes[key] { c = known } else {
            c = classes.count
            classes[key] = c
        }
        defer { if classes.count > 2 * nodes.count + 16 { renumberClasses() } }
        var offers = NodeUse()
        (offers.cpuMillicores, offers.memoryMiB, offers.diskMiB) = (node.cpuMillicores, node.memoryMiB, node.diskMiB)
        if let s = slot[node.id] {
            nodes[s] = node
            classOf[s] = c
            capacity[s] = offers
            refreshBlock(of: s)
            return
        }
        let s = nodes.count
        slot[node.id] = s
        nodes.append(node)
        classOf.append(c)
        use.append(NodeUse())
        capacity.append(offers)
        if s >> Self.blockShift == blockFree.count { blockFree.append(NodeUse()) }
        for a in holding where a.isLive { addToNode(a, s, 1, refreshing: false) }
        refreshBlock(of: s)
    }

    /// Classes no node is in any more (a node whose attributes changed left its old one) are
    /// dropped and the rest numbered again, so node updates cannot grow the table without bound.
    private mutating func renumberClasses() {
        classes = [:]
        for s in nodes.indices {
            let key = nodes[s].schedulingClass
            if let known = classes[key] { classOf[s] = known } else {
                classOf[s] = classes.count
                classes[key] = classes.count
            }
        }
    }

    /// Takes the most free of each resource over slot `s`'s block again.
    private mutating func refreshBlock(of s: Int) {
        let b = s >> Self.blockShift
        var most = NodeUse()
        (most.cpuMillicores, most.memoryMiB, most.diskMiB) = (Int.min, Int.min, Int.min)
        for i in (b << Self.blockShift)..<min(nodes.count, (b + 1) << Self.blockShift) {
            let c = capacity[i], u = use[i]
            most.cpuMillicores = max(most.cpuMillicores, c.cpuMillicores - u.cpuMillicores)
            most.memoryMiB = max(most.memoryMiB, c.memoryMiB - u.memoryMiB)
            most.diskMiB = max(most.diskMiB, c.diskMiB - u.diskMiB)
        }
        blockFree[b] = most
    }

    /// Counts `a` in (`sign` 1) or out (−1): on its node while it is live, in its namespace
    /// while it holds resources. Call it with the old version out and the new one in.
    public mutating func add(_ a: Allocation, sign: Int = 1) {
        if a.holdsResources { namespaces[a.namespace, default: Quota.Usage()].add(cpu: a.cpuMillicores, memory: a.memoryMiB, sign: sign) }
        if a.isLive, let s = slot[a.nodeID] { addToNode(a, s, sign) }
    }

    /// `refreshing`: take the block's most free again now (off while a new node's holdings are
    /// added, refreshed once after them).
    private mutating func addToNode(_ a: Allocation, _ s: Int, _ sign: Int, refreshing: Bool = true) {
        use[s].cpuMillicores += sign * a.cpuMillicores
        use[s].memoryMiB += sign * a.memoryMiB
        use[s].diskMiB += sign * a.diskMiB
        if refreshing { refreshBlock(of: s) }
        guard !a.ports.isEmpty else { return }
        var held = ports[s] ?? [:]
        for p in a.ports.values {
            let n = held[p, default: 0] + sign
            held[p] = n > 0 ? n : nil
        }
        ports[s] = held.isEmpty ? nil : held
    }

    /// Whether `a`, a new live allocation, can be made on its node now: the node is known and
    /// schedulable, has the CPU, memory and disk left, and none of `a`'s ports is held there.
    public func fits(_ a: Allocation) -> Bool {
        guard let s = slot[a.nodeID], nodes[s].isSchedulable else { return false }
        let u = use[s], c = capacity[s]
        guard u.cpuMillicores + a.cpuMillicores <= c.cpuMillicores, u.memoryMiB + a.memoryMiB <= c.memoryMiB,
              u.diskMiB + a.diskMiB <= c.diskMiB else { return false }
        guard let held = ports[s] else { return true }
        return !a.ports.values.contains { held[$0] != nil }
    }

    /// What the allocations that hold resources take from `namespace`.
    public func usage(of namespace: String) -> Quota.Usage { namespaces[namespace] ?? Quota.Usage() }
}

extension Node {
    /// Everything about a node that the scheduler's node-only checks read, except what makes it
    /// unique: its id, address, indexes and `unique.*` attributes. Constraints and affinities on
    /// those (`${node.unique.id}`, `${attr.unique.hostname}`) are checked node by node. Capacity
    /// is not part of it (agents report free disk, which differs on every machine): whether an
    /// instance fits is checked node by node against ``ClusterUse/capacity``.
    public struct SchedulingClass: Hashable, Sendable {
        var datacenter: String
        var nodeClass: String
        var attributes: [String: String]
        var meta: [String: String]
        var drivers: [String]
        var status: Status
        var eligibility: Eligibility
        var draining: Bool
    }

    public var schedulingClass: SchedulingClass {
        SchedulingClass(datacenter: datacenter, nodeClass: nodeClass, attributes: attributes.filter { !$0.key.hasPrefix("unique.") },
                        meta: meta, drivers: drivers, status: status, eligibility: eligibility, draining: draining)
    }
}
