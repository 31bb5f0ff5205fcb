import CaravanModel

/// The leader's last check before a plan is committed (Nomad's plan applier): plans are
/// computed on a snapshot that may be stale and several may race, so each node's part is
/// re-checked against the latest state and only what still fits is accepted. A node whose
/// placements no longer fit is rejected whole; its instances are re-evaluated.
public enum PlanApplier {
    public struct Verdict: Sendable, Equatable {
        public var accepted: Plan
        /// Nodes whose placements were refused (over capacity, port clash, not schedulable).
        public var rejectedNodes: [String]
        /// Namespaces whose placements were refused (over quota).
        public var rejectedNamespaces: [String] = []
    }

    /// With `quotas` (namespace → quota), placements that would take a namespace past its quota
    /// are refused too (all of that namespace's placements in the plan).
    public static func verify(_ plan: Plan, nodes: [Node], allocations: [Allocation], quotas: [String: Quota] = [:]) -> Verdict {
        let byID = Dictionary(uniqueKeysWithValues: nodes.map { ($0.id, $0) })
        let stopping = Set(plan.stops.map(\.id))
        var cpu: [String: Int] = [:], mem: [String: Int] = [:], disk: [String: Int] = [:]
        var ports: [String: Set<Int>] = [:]
        // Only the nodes placed on are checked: only their use is added up.
        let placedOn = Set(plan.placements.map(\.nodeID))
        for a in allocations where placedOn.contains(a.nodeID) && a.isLive && !stopping.contains(a.id) {
            cpu[a.nodeID, default: 0] += a.cpuMillicores
            mem[a.nodeID, default: 0] += a.memoryMiB
            disk[a.nodeID, default: 0] += a.diskMiB
            if !a.ports.isEmpty { ports[a.nodeID, default: []].formUnion(a.ports.values) }
        }
        var rejected = Set<String>()
        for (nodeID, placements) in Dictionary(grouping: plan.placements, by: \.nodeID) {
            guard let node = byID[nodeID], node.isSchedulable else { rejected.insert(nodeID); continue }
            var c = cpu[nodeID] ?? 0, m = mem[nodeID] ?? 0, d = disk[nodeID] ?? 0
            var p = ports[nodeID] ?? []
            var ok = true
            for a in placements {
                c += a.cpuMillicores; m += a.memoryMiB; d += a.diskMiB
                for port in a.ports.values where !p.insert(port).inserted { ok = false }
            }
            if !ok || c > node.cpuMillicores || m > node.memoryMiB || d > node.diskMiB { rejected.insert(nodeID) }
        }
        var accepted = plan
        accepted.placements = plan.placements.filter { !rejected.contains($0.nodeID) }
        var overQuota = Set<String>()
        if !quotas.isEmpty {
            var used: [String: Quota.Usage] = [:]
            for a in allocations where a.holdsResources && !stopping.contains(a.id) && quotas[a.namespace] != nil {
                used[a.namespace, default: .init()].add(cpu: a.cpuMillicores, memory: a.memoryMiB)
            }
            for a in accepted.placements {
                guard let q = quotas[a.namespace] else { continue }
                let u = used[a.namespace, default: .init()]
                if q.refusal(a.namespace, used: u, cpu: a.cpuMillicores, memory: a.memoryMiB) != nil { overQuota.insert(a.namespace) }
                used[a.namespace, default: .init()].add(cpu: a.cpuMillicores, memory: a.memoryMiB)
            }
            accepted.placements.removeAll { overQuota.contains($0.namespace) }
        }
        return Verdict(accepted: accepted, rejectedNodes: rejected.sorted(), rejectedNamespaces: overQuota.sorted())
    }
}
