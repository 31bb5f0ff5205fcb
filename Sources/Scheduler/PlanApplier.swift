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
    /// are refused too (all of that namespace's placements in the plan). `allocations`: every
    /// allocation in the cluster.
    public static func verify(_ plan: Plan, nodes: [Node], allocations: [Allocation], quotas: [String: Quota] = [:]) -> Verdict {
        verify(plan, cluster: ClusterUse(nodes: nodes, allocations: allocations), quotas: quotas)
    }

    /// The same against the cluster's use as the state keeps it: the cost grows with the plan,
    /// not with the cluster. The plan's stops are of live allocations (what the scheduler
    /// stops), so each frees what it holds.
    public static func verify(_ plan: Plan, cluster: ClusterUse, quotas: [String: Quota] = [:]) -> Verdict {
        // Only the nodes placed on are checked: only their use is read.
        let placedOn = Set(plan.placements.map(\.nodeID))
        var freed: [String: ClusterUse.NodeUse] = [:]
        var freedPorts: [String: [Int: Int]] = [:]
        var freedQuota: [String: Quota.Usage] = [:]
        for a in plan.stops where a.holdsResources {
            freedQuota[a.namespace, default: .init()].add(cpu: a.cpuMillicores, memory: a.memoryMiB)
            guard placedOn.contains(a.nodeID) else { continue }
            freed[a.nodeID, default: .init()].cpuMillicores += a.cpuMillicores
            freed[a.nodeID, default: .init()].memoryMiB += a.memoryMiB
            freed[a.nodeID, default: .init()].diskMiB += a.diskMiB
            for p in a.ports.values { freedPorts[a.nodeID, default: [:]][p, default: 0] += 1 }
        }
        var rejected = Set<String>()
        for (nodeID, placements) in Dictionary(grouping: plan.placements, by: \.nodeID) {
            guard let s = cluster.slot[nodeID], cluster.nodes[s].isSchedulable else { rejected.insert(nodeID); continue }
            let node = cluster.nodes[s]
            let u = cluster.use[s], f = freed[nodeID] ?? .init()
            var c = u.cpuMillicores - f.cpuMillicores, m = u.memoryMiB - f.memoryMiB, d = u.diskMiB - f.diskMiB
            var held = cluster.ports[s] ?? [:]
            for (p, n) in freedPorts[nodeID] ?? [:] { held[p] = (held[p] ?? 0) - n > 0 ? (held[p] ?? 0) - n : nil }
            var p = Set(held.keys)
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
            for a in accepted.placements {
                guard let q = quotas[a.namespace] else { continue }
                if used[a.namespace] == nil {
                    var u = cluster.usage(of: a.namespace)
                    let f = freedQuota[a.namespace] ?? .init()
                    u.cpuMillicores -= f.cpuMillicores; u.memoryMiB -= f.memoryMiB; u.instances -= f.instances
                    used[a.namespace] = u
                }
                if q.refusal(a.namespace, used: used[a.namespace]!, cpu: a.cpuMillicores, memory: a.memoryMiB) != nil { overQuota.insert(a.namespace) }
                used[a.namespace]!.add(cpu: a.cpuMillicores, memory: a.memoryMiB)
            }
            accepted.placements.removeAll { overQuota.contains($0.namespace) }
        }
        return Verdict(accepted: accepted, rejectedNodes: rejected.sorted(), rejectedNamespaces: overQuota.sorted())
    }
}
