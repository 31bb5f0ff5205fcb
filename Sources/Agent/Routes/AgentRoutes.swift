import API
import Gossip
import GossipNIO
import Hummingbird
import Keyring

/// `/v1/agent/...`: membership, this agent, the cluster keyring, leave.
struct AgentRoutes {
    let agent: Agent

    func register(on router: Router<BasicRequestContext>) {
        router.get("/v1/agent/members") { _, _ in
            JSONResponse.make(await agent.memberViews())
        }
        router.get("/v1/agent/self") { _, _ in
            JSONResponse.make(await agent.selfView())
        }
        // The cluster keyring, under the agent (as first built) and under the operator API.
        for prefix in ["/v1/agent/keyring", "/v1/operator/keyring"] {
            router.get(RouterPath(prefix)) { _, _ in
                try await keyring(.list)
            }
            router.post(RouterPath(prefix + "/:operation")) { request, context in
                try await keyringChange(request, operation: context.parameters.get("operation") ?? "")
            }
        }
        router.post("/v1/agent/leave") { _, _ in
            agent.requestShutdown()
            return JSONResponse.make(["status": "leaving"])
        }
    }

    /// `install`, `use` or `remove` a key on every member.
    func keyringChange(_ request: Request, operation op: String) async throws -> Response {
        var request = request
        guard ["install", "use", "remove"].contains(op) else {
            throw APIError(.notFound, "not_found", "unknown keyring operation \"\(op)\" (install, use, remove)")
        }
        let body = try await request.decodeJSON(KeyringRequest.self)
        let key: SecretKey
        do {
            key = try SecretKey(base64: body.key)
        } catch {
            throw APIError(.badRequest, "invalid_key", error.message)
        }
        switch op {
        case "install": return try await keyring(.install(key))
        case "use": return try await keyring(.use(key))
        default: return try await keyring(.remove(key))
        }
    }

    func keyring(_ op: KeyringOperation) async throws -> Response {
        guard await agent.gossip.isEncrypted else {
            throw APIError(.badRequest, "encryption_disabled",
                           "encryption is not enabled on this agent (start it with --encrypt or --keyring-file)")
        }
        // Refuse what is certain to fail before asking anyone.
        let local = await agent.gossip.localKeyring()
        if case .remove(let k) = op, local.primaryKeyID == k.idString {
            throw APIError(.conflict, "removing_primary_key",
                           "key \(k.idString) is the primary key; make another key primary with `caravan keyring use` first")
        }
        if case .use(let k) = op, !local.keyIDs.contains(k.idString) {
            throw APIError(.conflict, "key_not_installed", "key \(k.idString) is not installed; run `caravan keyring install` first")
        }
        if case .remove(let k) = op {
            // The variables' data key must not be sealed only with the key going away: seal it
            // under the primary first.
            if (try? await agent.cipher.sealingKeyID(agent.raft)) == k.id { try? await agent.cipher.reseal(agent.raft) }
            if (try? await agent.cipher.sealingKeyID(agent.raft)) == k.id {
                throw APIError(.conflict, "key_seals_variables", "key \(k.idString) still seals the variables' data key and it could not be re-sealed under the primary key; try again once the cluster has a leader")
            }
        }
        let report = await agent.gossip.keyringOperation(op)
        if case .use = op, report.succeeded > 0 {
            // The data key follows the primary, so the old key can be removed later.
            do { try await agent.cipher.reseal(agent.raft) } catch {
                agent.logger.warning("could not re-seal the variables' data key under the new primary key", metadata: ["error": "\(error)"])
            }
        }
        let view = KeyringView(
            operation: report.operation, nodes: report.asked, succeeded: report.succeeded, unreachable: report.unreachable,
            keys: report.keyCounts, primaryKeys: report.primaryCounts,
            results: report.replies.map { .init(node: $0.node, error: $0.error, primaryKey: $0.primaryKeyID, keys: $0.keyIDs) })
        return JSONResponse.make(view)
    }
}
