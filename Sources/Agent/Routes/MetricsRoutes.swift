import CaravanModel
import ClusterState
import Hummingbird
import Raft

/// `GET /v1/metrics`: Prometheus text — what the modules recorded through swift-metrics, then
/// what is read off this agent now (gossip counters, Raft position, tasks, cluster state size).
struct MetricsRoutes {
    let agent: Agent

    func register(on router: Router<BasicRequestContext>) {
        router.get("/v1/metrics") { _, _ in
            var out = AgentMetrics.registry.emitToBuffer()
            out.append(contentsOf: await scrape().text.utf8)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: out)))
        }
    }

    func scrape() async -> MetricsText {
        var m = MetricsText()
        let me = await agent.selfView()
        let g = me.gossip
        let members = await agent.memberViews()
        m.add("caravan_gossip_members", "gauge", "Members this agent knows, by status.",
              ["alive", "suspect", "dead", "left"].map { st in (labels: [("status", st)], value: Double(members.filter { $0.status == st }.count)) })
        m.add("caravan_gossip_local_health", "gauge", "Lifeguard local health multiplier (0 is healthy).", Double(g.localHealth))
        m.add("caravan_gossip_probes_total", "counter", "Failure-detector probes sent.", Double(g.probes))
        m.add("caravan_gossip_probes_failed_total", "counter", "Probes that got no ack, direct or indirect.", Double(g.probesFailed))
        m.add("caravan_gossip_suspicions_total", "counter", "Members this agent suspected.", Double(g.suspicionsRaised))
        m.add("caravan_gossip_refutations_total", "counter", "Suspicions of this agent it refuted.", Double(g.refutations))
        m.add("caravan_gossip_packets_total", "counter", "UDP packets, by direction.",
              [(labels: [("direction", "out")], value: Double(g.packetsSent)), (labels: [("direction", "in")], value: Double(g.packetsReceived))])
        m.add("caravan_gossip_bytes_total", "counter", "Sealed bytes over UDP and push/pull TCP, by direction and transport.",
              [(labels: [("direction", "out"), ("transport", "udp")], value: Double(g.bytesSent)),
               (labels: [("direction", "in"), ("transport", "udp")], value: Double(g.bytesReceived)),
               (labels: [("direction", "out"), ("transport", "tcp")], value: Double(g.streamBytesSent)),
               (labels: [("direction", "in"), ("transport", "tcp")], value: Double(g.streamBytesReceived))])
        m.add("caravan_gossip_dropped_total", "counter", "Input dropped (unsealable, malformed, …), by reason.",
              g.dropped.sorted { $0.key < $1.key }.map { (labels: [("reason", $0.key)], value: Double($0.value)) })

        let s = await agent.raft.status()
        let contact = await agent.raft.leaderContact()
        m.add("caravan_raft_term", "gauge", "Current Raft term.", Double(s.term))
        m.add("caravan_raft_commit_index", "gauge", "Highest log index known committed.", Double(s.commit))
        m.add("caravan_raft_applied_index", "gauge", "Highest log index applied to the state machine.", Double(s.applied))
        m.add("caravan_raft_last_index", "gauge", "Last index in this agent's log.", Double(s.lastIndex))
        m.add("caravan_raft_leader", "gauge", "1 while this agent is the Raft leader.", s.role == .leader ? 1 : 0)
        m.add("caravan_raft_known_leader", "gauge", "1 while this agent knows a leader.", contact.known ? 1 : 0)
        m.add("caravan_raft_voters", "gauge", "Voters in the Raft configuration.", Double(s.configuration.voters.count))
        m.add("caravan_raft_last_contact_seconds", "gauge", "Since this agent last heard from the leader (0 on the leader).",
              (contact.lastContact ?? .zero) / .seconds(1))

        m.add("caravan_raft_frames_dropped_total", "counter", "Raft frames dropped (did not open with the cluster key, or malformed).",
              Double(await agent.raft.framesDropped))
        m.add("caravan_raft_frames_replayed_total", "counter",
              "Raft frames refused as replayed (captured on another connection, or sent twice), each closing its connection.",
              Double(await agent.raft.framesReplayed))
        m.add("caravan_raft_connections_refused_total", "counter",
              "Incoming Raft connections closed: over the per-address or total cap, or no proof of the key in time.",
              Double(await agent.raft.connectionsRefused))
        m.add("caravan_http_streams", "gauge", "Exec sessions and log follows this agent serves now, by kind.",
              [(labels: [("kind", "exec")], value: Double(agent.execSessions.current)),
               (labels: [("kind", "follow")], value: Double(agent.logFollows.current))])

        let tasks = await agent.executor.taskCounts()
        m.add("caravan_executor_tasks", "gauge", "Tasks on this node, by state.",
              [(labels: [("state", "running")], value: Double(tasks.running)), (labels: [("state", "pending")], value: Double(tasks.pending)),
               (labels: [("state", "dead")], value: Double(tasks.dead))])

        // The cluster state as this agent's copy has it (empty outside the Raft group).
        let cs = agent.store.current
        m.add("caravan_state_jobs", "gauge", "Jobs registered (this agent's copy).", Double(cs.jobs.count))
        m.add("caravan_state_nodes", "gauge", "Nodes by status (this agent's copy).",
              Node.Status.allCases.map { st in (labels: [("status", st.rawValue)], value: Double(cs.nodes.values.filter { $0.status == st }.count)) })
        m.add("caravan_state_allocations", "gauge", "Allocations by client status (this agent's copy).",
              Allocation.ClientStatus.allCases.map { st in
                  (labels: [("status", st.rawValue)], value: Double(cs.allocations.values.filter { $0.clientStatus == st }.count))
              })
        return m
    }
}
