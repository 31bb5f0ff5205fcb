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
        router.get("/v1/agent/keyring") { _, _ in
            try await keyring(.list)
        }
        router.post("/v1/agent/keyring/:operation") { request, context in
            var request = request
            let op = context.parameters.get("operation") ?? ""
            guard ["install", "use", "remove"].contains(op) else {
                throw APIError(.notFound, "not_found", "unknown keyring operation \"\(op)\" (install, use, remove)")
            }
            let body = try await request.decodeJSON(KeyringRequest.self)
            let key: SecretKey
            do {
                key = try SecretKey(base64: body.key)
            } catch {
                throw APIError(.badRequest, "invalid_key", (error as? KeyringError)?.message ?? "invalid key")
            }
            switch op {
            case "install": return try await keyring(.install(key))
            case "use": return try await keyring(.use(key))
            default: return try await keyring(.remove(key))
            }
        }
        router.post("/v1/agent/leave") { _, _ in
            agent.requestShutdown()
            return JSONResponse.make(["status": "leaving"])
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
            throw APIError(.badRequest, "removing_primary_key",
                           "key \(k.idString) is the primary key; make another key primary with `caravan keyring use` first")
        }
        if case .use(let k) = op, !local.keyIDs.contains(k.idString) {
            throw APIError(.badRequest, "key_not_installed", "key \(k.idString) is not installed; run `caravan keyring install` first")
        }
        let report = await agent.gossip.keyringOperation(op)
        let view = KeyringView(
            operation: report.operation, nodes: report.asked, succeeded: report.succeeded, unreachable: report.unreachable,
            keys: report.keyCounts, primaryKeys: report.primaryCounts,
            results: report.replies.map { .init(node: $0.node, error: $0.error, primaryKey: $0.primaryKeyID, keys: $0.keyIDs) })
        return JSONResponse.make(view)
    }
}
