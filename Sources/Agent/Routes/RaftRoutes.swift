import API
import CaravanModel
import ClusterState
import Executor
import LeaderCore
import Hummingbird
import Raft
import RaftNIO

/// `/v1/status`, `/v1/status/leader`, `/v1/operator/raft/...`: the Raft group.
struct RaftRoutes {
    let agent: Agent

    func register(on router: Router<BasicRequestContext>) {
        router.get("/v1/status") { _, _ in
            let s = await agent.raft.status()
            let me = ServerID(agent.config.name)
            let membership = s.configuration.isVoter(me) ? "voter" : s.configuration.contains(me) ? "learner" : "none"
            var leader = s.leader, configuration = s.configuration, term = s.term
            if membership == "none", let v = try? await agent.raft.groupView(timeout: .seconds(2)) {
                // Not in the group: ask it who leads.
                leader = v.leader
                configuration = v.configuration
                term = v.term
            }
            return JSONResponse.make(StatusView(
                node: agent.config.name, leader: leader?.rawValue,
                leaderAddress: leader.flatMap { configuration.server($0)?.address }, term: term,
                role: membership == "none" ? "none" : s.role.rawValue, membership: membership,
                commitIndex: s.commit, appliedIndex: s.applied, lastIndex: s.lastIndex))
        }
        router.get("/v1/status/leader") { _, _ in
            let v: (leader: ServerID?, configuration: Configuration)
            do { v = try await agent.raft.leaderAndConfiguration() } catch { throw APIError(raft: error) }
            return JSONResponse.make(LeaderView(leader: v.leader?.rawValue,
                                                address: v.leader.flatMap { v.configuration.server($0)?.address }))
        }
        router.get("/v1/operator/raft/configuration") { _, _ in
            let v = try await groupView()
            return JSONResponse.make(RaftConfigurationView(
                term: v.term, commitIndex: v.commit,
                servers: v.configuration.servers.map {
                    RaftPeerView(id: $0.id.rawValue, address: $0.address, voter: $0.voter, leader: $0.id == v.leader,
                                 matchIndex: v.matches[$0.id] ?? 0)
                }))
        }
        router.get("/v1/operator/scheduler/configuration") { request, _ in
            try await agent.read(ClusterQuery(kind: .schedulerConfig), request).response
        }
        router.put("/v1/operator/scheduler/configuration") { request, _ in
            var request = request
            let body = try await request.decodeJSON(SchedulerConfigRequest.self)
            guard ClusterState.algorithms.contains(body.algorithm) else {
                throw APIError(.badRequest, "invalid_body", "algorithm must be one of \(ClusterState.algorithms.joined(separator: ", ")), not \(body.algorithm)")
            }
            let index = try await JobRoutes(agent: agent).commit(.schedulerConfig(algorithm: body.algorithm), request)
            return JSONResponse.make(SchedulerConfigView(algorithm: body.algorithm, modifyIndex: index))
        }
        router.get("/v1/operator/snapshot") { _, _ in
            // Linearizable: the state as of every write acknowledged before this call.
            let bytes: [UInt8]
            do { bytes = try await agent.raft.read([ClusterStore.snapshotQuery], timeout: .seconds(30)) } catch { throw APIError(raft: error) }
            var headers = HTTPFields()
            headers[.contentType] = "application/octet-stream"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        router.put("/v1/operator/snapshot") { request, _ in
            try agent.restores.acquire()
            defer { agent.restores.release() }
            let file: [UInt8]
            do { file = Array(buffer: try await request.body.collect(upTo: ClusterStore.maxRestoreBytes)) } catch {
                throw APIError(.contentTooLarge, "request_too_large", "a snapshot file to restore is at most \(ClusterStore.maxRestoreBytes) bytes")
            }
            guard file.starts(with: ClusterStore.snapshotMagic) else { throw APIError(.badRequest, "invalid_snapshot", ClusterStore.notASnapshotFile) }
            var parts: ClusterStore.Parts
            do { parts = try ClusterStore.parts(Array(file.dropFirst(ClusterStore.snapshotMagic.count))) } catch {
                throw APIError(.badRequest, "invalid_snapshot", "the snapshot file is damaged: \(error)")
            }
            if let why = ClusterStore.refusal(parts) { throw APIError(.badRequest, "invalid_snapshot", why) }
            if !parts.acl.bootstrapped, try await ACLRoutes(agent: agent).state().bootstrapped {
                throw APIError(.conflict, "acl_not_in_snapshot", ClusterStore.aclRefusal)
            }
            do { parts.variables = try await agent.cipher.adopt(parts.variables, agent.raft) } catch let e as VariableCipher.Failure {
                throw APIError(.badRequest, "invalid_snapshot", e.description)
            } catch { throw APIError(raft: error) }
            let members = Set(await agent.gossip.members().filter(\.status.isUp).map(\.name))
            let command = ClusterStore.restore(parts, members: members)
            guard command.count <= RaftNode.maxCommandBytes else {
                throw APIError(.contentTooLarge, "request_too_large", "the restore is \(command.count) bytes, over the \(RaftNode.maxCommandBytes)-byte limit of one log entry")
            }
            let index = try await JobRoutes(agent: agent).commitRaw(command, request)
            let nodes = parts.state.nodes.keys.sorted()
            return JSONResponse.make(SnapshotRestoreView(index: index, jobs: parts.state.jobs.count, allocations: parts.state.allocations.count,
                                                         variables: parts.variables.items.count, nodesKept: nodes.filter(members.contains),
                                                         nodesDown: nodes.filter { !members.contains($0) && parts.state.nodes[$0]?.status != .down }))
        }
        router.post("/v1/operator/what-if") { request, _ in
            var request = request
            let body = try await request.decodeJSON(WhatIfRequest.self)
            var change = WhatIf.Change()
            for (list, field) in [(body.killNodes, "killNodes"), (body.killNodesWhere, "killNodesWhere"), (body.drainNodes, "drainNodes")] {
                guard (list?.count ?? 0) <= 10_000 else { throw APIError(.badRequest, "invalid_body", "\(field): at most 10000 entries") }
            }
            change.killNodes = body.killNodes ?? []
            change.killNodesWhere = body.killNodesWhere ?? []
            change.drainNodes = body.drainNodes ?? []
            change.addNodes = body.addNodes ?? 0
            change.addNodesLike = body.addNodesLike
            if let text = body.job {
                do throws(JobFileError) { change.job = try JobFile.parse(text, file: "job") } catch {
                    throw APIError(.badRequest, "invalid_job", error.problems.map(\.description).joined(separator: "\n"))
                }
            }
            try agent.whatIfs.acquire()
            defer { agent.whatIfs.release() }
            let state = try await linearizableState()
            let o: WhatIf.Outcome
            do throws(WhatIf.Problem) { o = try await WhatIf.run(state, change, now: Executor.unixMillis()) } catch {
                throw APIError(.badRequest, "invalid_what_if", error.description)
            }
            return JSONResponse.make(WhatIfView(o, index: state.lastIndex))
        }
        router.post("/v1/operator/raft/transfer-leader") { request, _ in
            let target = request.uri.queryParameters.get("id").flatMap { $0.isEmpty ? nil : ServerID($0) }
            if let target {
                let v = try await groupView()
                guard v.configuration.isVoter(target) else {
                    throw APIError(.notFound, "not_a_voter", "\(target) is not a voter; see `caravan operator raft peers`")
                }
            }
            do { try await agent.raft.requestLeadershipTransfer(to: target) } catch let e as RaftError where e.code == .rejected {
                // Nobody to hand over to: the group's state, not the request, is the problem.
                throw APIError(.conflict, "rejected", e.message)
            } catch { throw APIError(raft: error) }
            // Report where leadership went once the group has settled on it (an election may be
            // under way for a moment; that is not an error).
            let deadline = ContinuousClock.now + .seconds(5)
            var v = try? await agent.raft.groupView(timeout: .seconds(1))
            while ContinuousClock.now < deadline, v?.leader == nil || (target != nil && v?.leader != target) {
                try await Task.sleep(for: .milliseconds(20))
                v = (try? await agent.raft.groupView(timeout: .seconds(1))) ?? v
            }
            return JSONResponse.make(LeaderView(leader: v?.leader?.rawValue, address: v?.leader.flatMap { v?.configuration.server($0)?.address }))
        }
    }

    func groupView() async throws -> GroupView {
        do { return try await agent.raft.groupView() } catch { throw APIError(raft: error) }
    }

    /// The cluster state with every write acknowledged before the call: this agent's copy once
    /// it has applied what the leader had (a ReadIndex read), or — on an agent that keeps no
    /// copy, or one too far behind — the leader's whole state.
    func linearizableState() async throws -> ClusterState {
        do {
            let (applied, _) = try await agent.raft.read(VariableStore.dataKeyQuery, after: 0, wait: .zero)
            if agent.store.current.lastIndex > 0, await agent.raft.waitApplied(after: max(applied, 1) - 1, wait: .seconds(2)) >= applied {
                return agent.store.current
            }
            let bytes = try await agent.raft.read([ClusterStore.snapshotQuery], timeout: .seconds(30))
            return try ClusterStore.state(fromSnapshotFile: bytes)
        } catch let e as ClusterState.RestoreError {
            throw APIError(.badGateway, "bad_answer", "the leader's state did not read: \(e)")
        } catch { throw APIError(raft: error) }
    }
}

extension APIError {
    /// Maps a failed Raft operation to a status and stable code.
    init(raft error: any Error) {
        if let e = error as? RaftError {
            switch e.code {
            case .noLeader, .leadershipLost, .shuttingDown: self.init(.serviceUnavailable, e.code.rawValue, e.message)
            case .timeout: self.init(.gatewayTimeout, "timeout", e.message)
            case .rejected: self.init(.badRequest, "rejected", e.message)
            case .remote: self.init(.badGateway, "remote_error", e.message)
            }
        } else if let e = error as? RaftTransport.RemoteFailure {
            // The leader could not be reached, or failed with something other than a RaftError.
            self.init(.badGateway, "leader_unreachable", e.description)
        } else {
            self.init(.internalServerError, "internal", "\(error)")
        }
    }
}

extension WhatIfView {
    /// The API's form of a what-if's outcome (the route and the CLI's offline answer alike).
    public init(_ o: WhatIf.Outcome, index: UInt64) {
        func view(_ i: WhatIf.Instance) -> Instance { .init(namespace: i.namespace, job: i.job, name: i.name, from: i.from, to: i.to) }
        self.init(killed: o.killed, drained: o.drained, added: o.added, moved: o.moved.map(view), placed: o.placed.map(view),
                  stopped: o.stopped.map(view), unplaced: o.unplaced.map { .init(namespace: $0.namespace, job: $0.job, group: $0.group, reason: $0.reason) },
                  index: index)
    }
}
