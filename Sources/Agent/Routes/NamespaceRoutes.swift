import API
import CaravanModel
import ClusterState
import FoundationEssentials
import Hummingbird

/// `/v1/namespaces` and `/v1/namespace/{name}`: namespaces, their quotas and what they use.
struct NamespaceRoutes {
    let agent: Agent
    var jobs: JobRoutes { JobRoutes(agent: agent) }

    func register(on router: Router<BasicRequestContext>) {
        router.get("/v1/namespaces") { request, _ in
            try await agent.read(ClusterQuery(kind: .namespaces), request).visible(NamespaceView.self, \.name)
        }
        router.get("/v1/namespace/:name") { request, context in
            let name = context.parameters.get("name") ?? ""
            let read = try await agent.read(ClusterQuery(kind: .namespace, id: name), request)
            guard !read.isNull else { throw APIError(.notFound, "namespace_not_found", "no namespace \(name) (see `caravan namespace list`)") }
            return read.response
        }
        router.put("/v1/namespace/:name") { request, context in
            var request = request
            let name = context.parameters.get("name") ?? ""
            guard Namespace.isValidName(name) else {
                throw APIError(.badRequest, "invalid_namespace", "namespace \"\(name)\" must be 1-128 letters, digits, '-', '_' or '.'")
            }
            let body = try await request.decodeJSON(NamespaceRequest.self)
            var ns = Namespace(name: name, description: body.description ?? "")
            guard ns.description.unicodeScalars.count <= 1024 else { throw APIError(.badRequest, "invalid_body", "description is over 1024 characters") }
            guard !ns.description.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || (0x80...0x9F).contains($0.value) }) else {
                throw APIError(.badRequest, "invalid_body", "description holds control characters")
            }
            if let q = body.quota { ns.quota = try Self.quota(q) }
            if let c = body.capabilities { ns.drivers = try Self.drivers(c) }
            let index = try await jobs.commit(.upsertNamespace(ns), request)
            let read = try await agent.read(ClusterQuery(kind: .namespace, id: name), request)
            var view = try read.decode(NamespaceView.self)
            view.modifyIndex = max(view.modifyIndex, index)
            return JSONResponse.make(view)
        }
        router.delete("/v1/namespace/:name") { request, context in
            let name = context.parameters.get("name") ?? ""
            guard name != Namespace.defaultName else { throw APIError(.conflict, "namespace_required", "namespace default cannot be deleted") }
            let answer = try await agent.propose(Command.deleteNamespace(name).encode(), request)
            guard answer.first == 0 else {
                let why = String(decoding: answer.dropFirst(), as: UTF8.self)
                if why.contains("does not exist") { throw APIError(.notFound, "namespace_not_found", why) }
                throw APIError(.conflict, "namespace_not_empty", why)
            }
            return JSONResponse.make(["deleted": true])
        }
    }

    /// A namespace's driver rule from its API form; an unknown driver is named.
    static func drivers(_ c: NamespaceCapabilities) throws -> DriverRule {
        func list(_ names: [String]?, _ field: String) throws -> [TaskSpec.Driver]? {
            guard let names else { return nil }
            guard names.count <= 16 else { throw APIError(.badRequest, "invalid_capabilities", "capabilities.\(field): at most 16 drivers") }
            var out: [TaskSpec.Driver] = []
            for n in names {
                guard let d = TaskSpec.Driver(rawValue: n) else {
                    let known = TaskSpec.Driver.allCases.map(\.rawValue).joined(separator: ", ")
                    throw APIError(.badRequest, "invalid_capabilities", "capabilities.\(field): \"\(n.prefix(64))\" is not a driver (\(known))")
                }
                if !out.contains(d) { out.append(d) }
            }
            return out
        }
        // An empty enabled list means no rule (as in Nomad), not "no driver at all".
        let enabled = try list(c.enabledTaskDrivers, "enabledTaskDrivers")
        let rule = DriverRule(enabled: enabled?.isEmpty == true ? nil : enabled,
                              disabled: try list(c.disabledTaskDrivers, "disabledTaskDrivers") ?? [])
        if let both = rule.enabled?.first(where: rule.disabled.contains) {
            throw APIError(.badRequest, "invalid_capabilities", "capabilities: \(both.rawValue) is both enabled and disabled")
        }
        return rule
    }

    /// A quota from its API form; each part checked with the units job files use.
    static func quota(_ q: QuotaSpec) throws -> Quota {
        var out = Quota()
        if let c = q.cpu {
            guard let m = Units.millicores(c) else { throw APIError(.badRequest, "invalid_quota", "quota.cpu: \"\(c)\" is not a CPU amount such as 2000m or 2") }
            out.cpuMillicores = m
        }
        if let m = q.memory {
            guard let v = Units.mebibytes(m) else { throw APIError(.badRequest, "invalid_quota", "quota.memory: \"\(m)\" is not a size such as 512Mi or 2Gi") }
            out.memoryMiB = v
        }
        if let i = q.instances {
            guard (0...1_000_000).contains(i) else { throw APIError(.badRequest, "invalid_quota", "quota.instances: \(i) must be 0 to 1000000") }
            out.instances = i
        }
        return out
    }
}
