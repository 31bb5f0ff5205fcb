import CaravanModel
import ClusterState
import Scheduler

/// `caravan operator what-if`: the leader's real core run on a copy of the cluster's state with
/// hypothetical changes — nodes lost, drained or added, a job registered — and compared with
/// the same core run on the unchanged copy, so what the cluster would do anyway (work already
/// under way) is not reported as caused by the change.
public enum WhatIf {
    /// What to suppose.
    public struct Change: Sendable {
        public var killNodes: [String] = []
        /// `meta.KEY=VALUE` or `attr.KEY=VALUE`: every node matching one is killed too.
        public var killNodesWhere: [String] = []
        public var drainNodes: [String] = []
        public var addNodes = 0
        /// The node the added ones copy (capacity, tags, attributes, drivers).
        public var addNodesLike: String?
        public var job: Job?
        public init() {}
    }

    public struct Instance: Sendable, Equatable {
        public var namespace: String
        public var job: String
        public var name: String
        /// Where it runs before the change (nil: nowhere).
        public var from: String?
        /// Where it runs after (nil: nowhere).
        public var to: String?
    }

    public struct Failure: Sendable, Equatable {
        public var namespace: String
        public var job: String
        public var group: String
        public var reason: String
    }

    public struct Outcome: Sendable, Equatable {
        public var killed: [String] = []
        public var drained: [String] = []
        public var added: [String] = []
        /// Instances that would run on another node.
        public var moved: [Instance] = []
        /// Instances that would run where none ran.
        public var placed: [Instance] = []
        /// Instances that would no longer run anywhere.
        public var stopped: [Instance] = []
        /// Groups that would not fit, and why (new or changed by the change).
        public var unplaced: [Failure] = []
    }

    public struct Problem: Error, Sendable, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// Enough to ask about growing a cluster a lot; past it, one question could hold a core for
    /// many seconds (every system job is placed on every added node).
    public static let maxAddedNodes = 1_000

    /// Runs the change against `state` (the cluster as it is) at `now` (Unix ms).
    public static func run(_ state: ClusterState, _ change: Change, now: Int64) async throws(Problem) -> Outcome {
        var out = Outcome()
        for id in change.killNodes + change.drainNodes + [change.addNodesLike].compactMap({ $0 }) where state.nodes[id] == nil {
            throw Problem("no node \(id) (see `caravan node status`)")
        }
        guard (0...maxAddedNodes).contains(change.addNodes) else { throw Problem("add-nodes: \(change.addNodes) must be 0 to \(maxAddedNodes)") }
        if change.addNodes > 0 && change.addNodesLike == nil { throw Problem("add-nodes needs a node to copy (--like ID)") }
        var killed = Set(change.killNodes)
        for expr in change.killNodesWhere {
            let matching = try nodes(state, where: expr)
            guard !matching.isEmpty else { throw Problem("no node has \(expr)") }
            killed.formUnion(matching)
        }
        if let job = change.job, let why = state.driverRefusal(job) { throw Problem(why) }

        let scenario = StateCopy(state)
        out.killed = killed.sorted()
        for id in out.killed { scenario.apply(.nodeStatus(id: id, status: .down)) }
        out.drained = change.drainNodes.filter { !killed.contains($0) }.sorted()
        for id in out.drained { scenario.apply(.nodeDrain(id: id, draining: true)) }
        if let like = change.addNodesLike.flatMap({ state.nodes[$0] }), change.addNodes > 0 {
            for i in 1...change.addNodes {
                var n = like
                n.id = "\(like.id)-what-if-\(i)"
                n.attributes["unique.hostname"] = n.id
                n.status = .ready
                n.draining = false
                n.eligibility = .eligible
                scenario.apply(.upsertNode(n))
                out.added.append(n.id)
            }
        }
        if let job = change.job, !scenario.apply(.register(job)) {
            throw Problem(scenario.refusals.last ?? "the job was refused")
        }

        let baseline = StateCopy(state)
        await settle(baseline, from: state, now: now)
        await settle(scenario, from: state, now: now)

        let before = placement(baseline.state), after = placement(scenario.state)
        // Only what differs is sorted (most instances stay where they are).
        for (key, node) in after.filter({ before[$0.key] != $0.value }).sorted(by: { $0.key < $1.key }) {
            let i = Instance(namespace: key.namespace, job: key.job, name: key.name, from: before[key], to: node)
            if before[key] != nil { out.moved.append(i) } else { out.placed.append(i) }
        }
        for (key, node) in before.filter({ after[$0.key] == nil }).sorted(by: { $0.key < $1.key }) {
            out.stopped.append(Instance(namespace: key.namespace, job: key.job, name: key.name, from: node, to: nil))
        }
        let failedBefore = failures(baseline.state)
        out.unplaced = failures(scenario.state).filter { !failedBefore.contains($0) }
        return out
    }

    /// The nodes `meta.KEY=VALUE` or `attr.KEY=VALUE` selects.
    static func nodes(_ state: ClusterState, where expr: String) throws(Problem) -> [String] {
        let parts = expr.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 else { throw Problem("\"\(expr.prefix(80))\": write meta.KEY=VALUE or attr.KEY=VALUE") }
        let (field, value) = (parts[0], parts[1])
        if field.hasPrefix("meta.") {
            let k = String(field.dropFirst(5))
            return state.nodes.values.filter { $0.meta[k] == value }.map(\.id)
        }
        if field.hasPrefix("attr.") {
            let k = String(field.dropFirst(5))
            return state.nodes.values.filter { $0.attributes[k] == value }.map(\.id)
        }
        throw Problem("\"\(expr.prefix(80))\": write meta.KEY=VALUE or attr.KEY=VALUE")
    }

    /// The leader's passes until nothing changes, with nodes starting what they are given (and a
    /// second passing each time).
    static func settle(_ copy: StateCopy, from original: ClusterState, now: Int64) async {
        // As a leader that has seen `original`: what the change touched (and work still pending)
        // is scheduled, not every job again.
        var core = LeaderCore()
        core.feed.prime(original, now: now)
        var clock = now
        let ids = CountingIDs("what-if-")
        await core.settle(copy, clock: &clock, step: 1_000, maxPasses: 200, newID: { ids.next() }) { $0.startPending() }
    }

    struct Key: Hashable, Comparable {
        var namespace: String, job: String, name: String
        /// For system and sysbatch jobs, whose instance on every node has the same name: the node.
        var node = ""
        static func < (a: Key, b: Key) -> Bool { (a.namespace, a.job, a.name, a.node) < (b.namespace, b.job, b.name, b.node) }
    }

    /// Where each live instance that is meant to run is, by name (and node, for system jobs:
    /// theirs never move, they start or stop).
    static func placement(_ s: ClusterState) -> [Key: String] {
        var out: [Key: String] = [:]
        for a in s.allocations.values where a.desiredStatus == .run && a.isLive {
            let type = s.jobs[.init(a.namespace, a.jobID)]?.job.type
            let perNode = type == .system || type == .sysbatch
            out[Key(namespace: a.namespace, job: a.jobID, name: a.name, node: perNode ? a.nodeID : "")] = a.nodeID
        }
        return out
    }

    /// What each job's newest evaluation could not place.
    static func failures(_ s: ClusterState) -> [Failure] {
        var out: [Failure] = []
        for key in s.jobs.keys.sorted() {
            guard let e = s.evaluations(ofJob: key).filter({ $0.status == .blocked }).max(by: { $0.modifyIndex < $1.modifyIndex }) else { continue }
            for (g, why) in e.failedPlacements.sorted(by: { $0.key < $1.key }) {
                out.append(Failure(namespace: key.namespace, job: key.id, group: g, reason: why))
            }
        }
        return out
    }
}
