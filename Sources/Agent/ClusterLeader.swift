import CaravanModel
import Executor
import ClusterState
import FoundationEssentials
import LeaderCore
import Logging
import Metrics
import Raft
import ServiceLifecycle
import Synchronization

/// The agent's shell around `LeaderCore`: while this agent leads, a pass after every change to
/// the cluster state (not after variable writes or ACL changes) and at least every `interval`,
/// proposing through Raft, with gossip's view of the members, the wall clock, random ids and
/// this machine's time-zone database; what a pass did becomes metrics.
struct ClusterLeader: Service, LeaderShell {
    let agent: Agent
    var interval: Duration = .milliseconds(200)
    /// What the current pass is about: its refusals and the state it started from.
    let pass = Pass()

    final class Pass: Sendable {
        /// Commands the state refused during the pass.
        let refused = Mutex(0)
        /// The state's restore count when the pass began.
        let restores = Mutex(0)
        func takeRefused() -> Int { refused.withLock { n in defer { n = 0 }; return n } }
    }

    static let environment = LeaderCore.Environment(now: { Executor.unixMillis() }, newID: { AllocationID.make() },
                                                    zone: { ClusterLeader.zoneRules($0) })

    func run() async throws {
        var core = LeaderCore()
        var seen: UInt64 = 0
        var restores = agent.store.restores
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            if agent.store.restores != restores {
                // The whole state was replaced: what the core learned of the old one is void,
                // and so is what a pass made from it (`propose` drops it).
                (core, restores) = (LeaderCore(), agent.store.restores)
            }
            pass.restores.withLock { $0 = restores }
            if await agent.raft.status().role == .leader {
                var changed = agent.store.clusterChangeIndex
                let report = await core.pass(self, members: await members(), Self.environment)
                Self.record(report)
                // Again as soon as the cluster state changes (a job registered, an allocation
                // stopped — a variable write or an ACL change does not wake it), or after
                // `interval` for what gossip and the clock bring — but never at once after a pass
                // the state refused something of: what else that pass committed would wake a
                // pass that proposes the refused command again.
                if pass.takeRefused() > 0 {
                    try? await Task.sleep(for: interval)
                    seen = await agent.raft.status().applied
                    changed = agent.store.clusterChangeIndex
                }
                let store = agent.store
                let (before, waited) = (seen, ContinuousClock.now)
                seen = await agent.raft.waitApplied(after: seen, changedAfter: changed, change: { store.clusterChangeIndex }, wait: interval)
                // Back at once with nothing applied: Raft has stopped (the agent is shutting down)
                // — wait out the interval rather than pass again and again.
                if seen == before && ContinuousClock.now - waited < interval / 2 { try? await Task.sleep(for: interval) }
            } else {
                core = LeaderCore()
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Gossip's members, each with the node its metadata describes.
    func members() async -> [LeaderCore.Member] {
        await agent.gossip.members().map { m in
            var node: Node?
            if let meta = NodeMetadata.decode(m.metadata) {
                var n = Node(id: m.name, address: m.address.host, cpuMillicores: meta.capacity.cpuMillicores,
                             memoryMiB: meta.capacity.memoryMiB, diskMiB: meta.capacity.diskMiB)
                n.meta = meta.tags
                n.attributes = meta.attributes.merging(["kernel.name": "linux", "unique.hostname": m.name]) { old, _ in old }
                for d in meta.drivers { n.attributes["driver.\(d)"] = "1" }
                n.drivers = meta.drivers
                node = n
            }
            return LeaderCore.Member(name: m.name, alive: m.status.isUp, node: node, status: "\(m.status)")
        }
    }

    static func record(_ r: LeaderCore.Report) {
        if r.evaluations > 0 { Counter(label: "caravan_scheduler_evaluations_total").increment(by: r.evaluations) }
        if r.planRejections > 0 { Counter(label: "caravan_scheduler_plan_rejections_total").increment(by: r.planRejections) }
        if r.placements > 0 { Counter(label: "caravan_scheduler_placements_total").increment(by: r.placements) }
        if r.evaluationsGivenUp > 0 { Counter(label: "caravan_scheduler_evaluations_failed_total").increment(by: r.evaluationsGivenUp) }
        for (reason, n) in r.failedPlacements {
            Counter(label: "caravan_scheduler_failed_placements_total", dimensions: [("reason", reason)]).increment(by: n)
        }
        Gauge(label: "caravan_scheduler_broker_ready").record(r.broker.ready)
        Gauge(label: "caravan_scheduler_broker_blocked").record(r.broker.blocked)
        Gauge(label: "caravan_scheduler_broker_waiting").record(r.broker.waiting + r.broker.delayed)
    }

    // MARK: - LeaderShell

    func currentState() async -> ClusterState { agent.store.current }

    /// Plans are decided 64 ahead and proposed together: Raft puts what arrives during one
    /// append into the next, so a burst of evaluations costs a few fsyncs, not one each.
    var pipelineDepth: Int { 64 }

    func proposeAll(_ commands: [(Command, String)]) async -> [Bool] { await proposeTogether(commands) }

    func propose(_ c: Command, _ what: String) async -> Bool {
        guard pass.restores.withLock({ $0 }) == agent.store.restores else { return false }
        do {
            let answer = try await agent.raft.apply(c.encode(), timeout: .seconds(5))
            if answer.first != 0 {
                pass.refused.withLock { $0 += 1 }
                agent.logger.warning("cluster state refused a command", metadata: ["what": "\(what)", "why": "\(String(decoding: answer.dropFirst(), as: UTF8.self))"])
                return false
            }
            return true
        } catch {
            agent.logger.debug("could not commit", metadata: ["what": "\(what)", "error": "\(error)"])
            return false
        }
    }

    func note(_ level: LeaderCore.Level, _ message: String, _ metadata: [String: String]) {
        let m = metadata.mapValues { Logger.MetadataValue.string($0) }
        switch level {
        case .debug: agent.logger.debug("\(message)", metadata: m)
        case .info: agent.logger.info("\(message)", metadata: m)
        case .warning: agent.logger.warning("\(message)", metadata: m)
        }
    }

    /// The rules of a named time zone from this machine's tz database (`tzdata`), read once.
    /// `firstLook` is true when the database was read for this call.
    static func zoneRules(_ name: String) -> (rules: ZoneRules?, firstLook: Bool) {
        guard ZoneRules.isZoneName(name) else { return (nil, false) }
        return zoneCache.withLock { cache in
            if let known = cache[name] { return (known, false) }
            let rules = FileManager.default.contents(atPath: "/usr/share/zoneinfo/" + name).flatMap { ZoneRules.parse(tzif: Array($0)) }
            cache[name] = rules
            return (rules, true)
        }
    }

    private static let zoneCache = Mutex<[String: ZoneRules?]>([:])
}
