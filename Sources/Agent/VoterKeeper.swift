import Gossip
import Logging
import Raft
import RaftNIO
import ServiceLifecycle

/// Makes the Raft group run itself, with nothing configured but `--bootstrap-expect`:
///
/// - **Bootstrap.** An agent with an empty log that sees at least N live agents by gossip, none
///   of them already in a group, proposes the N with the smallest names as the first voters and
///   publishes that proposal (a hash of it) in its gossip metadata. Once every proposed agent
///   publishes the same proposal, each of them writes the same bootstrap entry. Agents that
///   differ in what they see publish different hashes and wait, so two groups never form.
/// - **Keeping voters (on the leader).** A voter that gossip has reported dead for longer than
///   the grace period, or that left, is removed; while there are fewer voters than the target
///   (3, or 5 once the cluster has 5 live agents, capped by `--raft-voters`), a live agent
///   outside the group is added as a learner and promoted once it has caught up. One change
///   at a time, each committed before the next.
struct VoterKeeper: Service {
    let agent: Agent
    var interval: Duration = .milliseconds(200)

    func run() async throws {
        var state = State()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await step(&state)
            try? await Task.sleep(for: interval)
        }
    }

    struct State {
        var deadSince: [String: ContinuousClock.Instant] = [:]
        var published: (NodeMetadata.RaftStanding, UInt64, String) = (.none, 0, "agent")
    }

    /// What gossip says about one agent, with its RPC address.
    struct Peer {
        var name: String
        var rpc: String
        var alive: Bool
        var left: Bool
        var meta: NodeMetadata?
    }

    func peers() async -> [Peer] {
        await agent.gossip.members().map { m in
            let meta = NodeMetadata.decode(m.metadata)
            return Peer(name: m.name, rpc: "\(m.address.host):\(meta?.rpcPort ?? 4681)",
                        alive: m.status.isUp, left: m.status == .left, meta: meta)
        }
    }

    func step(_ state: inout State) async {
        let status = await agent.raft.status()
        let peers = await peers()
        let me = agent.config.name
        let inGroup = status.configuration.contains(ServerID(me))
        agent.raft.setMemberHints(peers.filter { $0.alive && $0.meta?.raft == .member }.map(\.rpc))

        if inGroup {
            let role = status.configuration.isVoter(ServerID(me)) ? "voter" : "learner"
            await publish(.member, state.published.1, role: role, &state)
            if status.role == .leader { await keepVoters(status, peers, &state) }
            return
        }
        guard status.lastIndex == 0 else {
            // Removed from the group (or not yet re-added): an ordinary agent.
            await publish(.none, 0, role: "agent", &state)
            return
        }
        await bootstrapIfAgreed(peers, &state)
    }

    private func bootstrapIfAgreed(_ peers: [Peer], _ state: inout State) async {
        let me = agent.config.name
        let expect = agent.config.bootstrapExpect
        // Decide only on a full view: a live agent whose metadata has not arrived yet could be
        // one of the first N by name.
        guard !peers.contains(where: { $0.alive && $0.meta == nil }) else { return }
        let live = peers.filter { $0.alive && $0.meta != nil }.sorted { $0.name < $1.name }
        let myIntent = state.published.0 == .intent ? state.published.1 : 0
        // Someone already runs a group we did not propose: wait to be added to it.
        if myIntent == 0, live.contains(where: { $0.meta?.raft == .member }) { return }
        guard live.count >= expect else {
            await publish(.none, 0, role: "agent", &state)
            return
        }
        let chosen = Array(live.prefix(expect))
        guard chosen.contains(where: { $0.name == me }) else {
            await publish(.none, 0, role: "agent", &state)
            return
        }
        let intent = Self.intent(chosen)
        await publish(.intent, intent, role: "agent", &state)
        let agreed = chosen.allSatisfy { p in
            p.name == me || (p.meta.map { ($0.raft == .intent || $0.raft == .member) && $0.raftIntent == intent } ?? false)
        }
        guard agreed else { return }
        let config = Configuration(servers: chosen.map { .init(id: ServerID($0.name), address: $0.rpc, voter: true) })
        do {
            try await agent.raft.bootstrap(config)
        } catch {
            agent.logger.warning("raft bootstrap refused", metadata: ["error": "\(error)"])
        }
    }

    /// FNV-1a over the proposed voters' names and addresses: the same set gives the same number
    /// on every agent.
    static func intent(_ chosen: [Peer]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for p in chosen {
            for b in Array((p.name + "@" + p.rpc + ";").utf8) {
                h ^= UInt64(b)
                h = h &* 0x100_0000_01b3
            }
        }
        return h == 0 ? 1 : h
    }

    private func publish(_ standing: NodeMetadata.RaftStanding, _ intent: UInt64, role: String, _ state: inout State) async {
        guard state.published != (standing, intent, role) else { return }
        state.published = (standing, intent, role)
        await agent.updateMetadata { m in
            m.raft = standing
            m.raftIntent = intent
            m.role = role
        }
    }

    // MARK: - On the leader

    private func keepVoters(_ status: RaftStatus, _ peers: [Peer], _ state: inout State) async {
        let now = ContinuousClock.now
        let byName = Dictionary(peers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let config = status.configuration
        let me = ServerID(agent.config.name)
        for s in config.servers where s.id != me {
            if byName[s.id.rawValue]?.alive == true { state.deadSince[s.id.rawValue] = nil } else if state.deadSince[s.id.rawValue] == nil {
                state.deadSince[s.id.rawValue] = now
            }
        }
        // 1. Remove a member that left, or that has been dead for longer than the grace period.
        for s in config.servers where s.id != me {
            let left = byName[s.id.rawValue]?.left ?? false
            if let since = state.deadSince[s.id.rawValue], left || now - since >= agent.config.deadServerGrace {
                agent.logger.info("removing a \(left ? "departed" : "dead") Raft member", metadata: ["server": "\(s.id)"])
                await change(.remove(s.id))
                return
            }
        }
        // 2. Promote a learner that has caught up.
        for s in config.servers where !s.voter {
            if byName[s.id.rawValue]?.alive == true, let p = status.peers.first(where: { $0.id == s.id }),
               p.match + 16 >= status.commit, p.recentlyActive {
                agent.logger.info("promoting a caught-up learner to voter", metadata: ["server": "\(s.id)"])
                await change(.addVoter(s.id, address: s.address))
                return
            }
        }
        // 3. Add a learner while there are fewer members than the target.
        let liveAgents = peers.filter { $0.alive && $0.meta != nil }
        let target = min(liveAgents.count >= 5 ? 5 : 3, agent.config.raftVoters, liveAgents.count)
        let members = config.servers.filter { state.deadSince[$0.id.rawValue] == nil }
        guard members.count < target else { return }
        if let next = liveAgents.filter({ !config.contains(ServerID($0.name)) }).sorted(by: { $0.name < $1.name }).first {
            agent.logger.info("adding a learner to reach \(target) voters", metadata: ["server": "\(next.name)"])
            agent.raft.learnAddress(ServerID(next.name), next.rpc)
            await change(.addLearner(ServerID(next.name), address: next.rpc))
        }
    }

    private func change(_ c: ConfigurationChange) async {
        do {
            try await agent.raft.change(c)
        } catch {
            agent.logger.debug("raft configuration change not made", metadata: ["change": "\(c)", "error": "\(error)"])
        }
    }
}
