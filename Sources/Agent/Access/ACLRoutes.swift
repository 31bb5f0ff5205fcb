import Access
import API
import Executor
import FoundationEssentials
import Hummingbird
import Keyring
import Primitives

/// `/v1/acl/...`: bootstrap, policies and tokens. Reads go through Raft (any member's copy is
/// the same once the write is committed); writes through the leader.
struct ACLRoutes {
    let agent: Agent

    func register(on router: Router<BasicRequestContext>) {
        router.post("/v1/acl/bootstrap") { _, _ in
            // Refused without a log entry once done (anyone may call this).
            if try await state().bootstrapped {
                throw APIError(.conflict, "already_bootstrapped", "ACLs were bootstrapped already; use a management token to make more tokens")
            }
            let secret = Secrets.uuid()
            let token = Token(accessor: Secrets.uuid(), secretHash: Secrets.sha256(secret), name: "bootstrap token", kind: .management,
                              policies: [], createTime: Executor.unixMillis())
            let index = try await commit(.bootstrap(token))
            var view = Self.view(token, secret: secret)
            view.createIndex = index
            view.modifyIndex = index
            return JSONResponse.make(view)
        }
        router.get("/v1/acl/policies") { _, _ in
            JSONResponse.make(try await state().policies.values.sorted { $0.name < $1.name }.map(Self.view))
        }
        router.get("/v1/acl/policy/:name") { _, context in
            let name = context.parameters.get("name") ?? ""
            guard let p = try await state().policies[name] else { throw APIError(.notFound, "policy_not_found", "no ACL policy \(name)") }
            return JSONResponse.make(Self.view(p))
        }
        router.put("/v1/acl/policy/:name") { request, context in
            var request = request
            let name = context.parameters.get("name") ?? ""
            let rules = try await request.decodeJSON(ACLPolicyRules.self)
            let policy = try Self.policy(name, rules)
            _ = try await commit(.upsertPolicy(policy))
            guard let stored = try await state().policies[name] else { throw APIError(.internalServerError, "apply_failed", "the policy was not stored") }
            return JSONResponse.make(Self.view(stored))
        }
        router.delete("/v1/acl/policy/:name") { _, context in
            let name = context.parameters.get("name") ?? ""
            guard Policy.isValidName(name) else { throw APIError(.notFound, "policy_not_found", "no ACL policy \(name)") }
            _ = try await commit(.deletePolicy(name))
            return JSONResponse.make(["deleted": true])
        }
        router.get("/v1/acl/tokens") { _, _ in
            let now = Executor.unixMillis()
            return JSONResponse.make(try await state().tokens.values.sorted { $0.createIndex < $1.createIndex }.map { Self.view($0, now: now) })
        }
        router.post("/v1/acl/tokens") { request, _ in
            var request = request
            let body = try await request.decodeJSON(ACLTokenRequest.self)
            let state = try await state()
            let kind: Token.Kind
            switch body.type ?? "client" {
            case "client": kind = .client
            case "management": kind = .management
            default: throw APIError(.badRequest, "invalid_body", "type must be client or management, not \"\(body.type!)\"")
            }
            let policies = try Self.checkedPolicies(body.policies ?? [], kind: kind, state)
            let name = try Self.checkedName(body.name ?? "")
            let now = Executor.unixMillis()
            let expiry = try body.ttl.map { now + (try Self.ttlMillis($0)) }
            let secret = Secrets.uuid()
            let token = Token(accessor: Secrets.uuid(), secretHash: Secrets.sha256(secret), name: name, kind: kind, policies: policies,
                              createTime: now, expiryTime: expiry)
            let index = try await commit(.upsertToken(token))
            var view = Self.view(token, secret: secret)
            view.createIndex = index
            view.modifyIndex = index
            return JSONResponse.make(view)
        }
        router.get("/v1/acl/token/self") { request, _ in
            guard let accessor = Caller.current.identity.accessor, let t = try await state().tokens[accessor] else {
                throw APIError(.notFound, "token_not_found", "this call carries no ACL token (X-Caravan-Token), or ACLs are off")
            }
            return JSONResponse.make(Self.view(t))
        }
        router.get("/v1/acl/token/:accessor") { _, context in
            let accessor = context.parameters.get("accessor") ?? ""
            guard let t = try await state().tokens[accessor] else { throw APIError(.notFound, "token_not_found", "no ACL token \(accessor)") }
            return JSONResponse.make(Self.view(t))
        }
        router.put("/v1/acl/token/:accessor") { request, context in
            var request = request
            let accessor = context.parameters.get("accessor") ?? ""
            let body = try await request.decodeJSON(ACLTokenRequest.self)
            let state = try await state()
            guard var t = state.tokens[accessor] else { throw APIError(.notFound, "token_not_found", "no ACL token \(accessor)") }
            if let type = body.type, type != (t.kind == .management ? "management" : "client") {
                throw APIError(.badRequest, "invalid_body", "a token's type cannot change; create a new token")
            }
            if let p = body.policies { t.policies = try Self.checkedPolicies(p, kind: t.kind, state) }
            if let n = body.name { t.name = try Self.checkedName(n) }
            if let ttl = body.ttl { t.expiryTime = Executor.unixMillis() + (try Self.ttlMillis(ttl)) }
            _ = try await commit(.upsertToken(t))
            guard let stored = try await self.state().tokens[accessor] else { throw APIError(.notFound, "token_not_found", "no ACL token \(accessor)") }
            return JSONResponse.make(Self.view(stored))
        }
        router.delete("/v1/acl/token/:accessor") { _, context in
            let accessor = context.parameters.get("accessor") ?? ""
            guard !accessor.isEmpty, accessor.utf8.count <= 64 else { throw APIError(.notFound, "token_not_found", "no ACL token \(accessor)") }
            _ = try await commit(.deleteToken(accessor))
            return JSONResponse.make(["deleted": true])
        }
    }

    /// Commits an ACL change; the resolver forgets what it cached, so this agent enforces it at once.
    func commit(_ c: ACLCommand) async throws -> UInt64 {
        defer { agent.tokens.forget() }
        let answer = try await agent.propose(c.encode(), nil)
        var r = ByteReader(answer)
        guard r.byte() == 0, let index = r.varint() else { throw APIError(.internalServerError, "apply_failed", "the ACL change was not applied") }
        return index
    }

    /// The whole ACL state, read through the leader (linearizable).
    func state() async throws -> ACLState {
        let bytes: [UInt8]
        do { bytes = try await agent.raft.read(ACLQuery.all.encode()) } catch { throw APIError(raft: error) }
        guard let s = ACLState.decode(bytes) else { throw APIError(.badGateway, "bad_answer", "the leader sent an unreadable ACL state") }
        return s
    }

    static func checkedName(_ name: String) throws -> String {
        guard name.unicodeScalars.count <= 256, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw APIError(.badRequest, "invalid_body", "name must be at most 256 characters without control characters")
        }
        return name
    }

    static func checkedPolicies(_ names: [String], kind: Token.Kind, _ state: ACLState) throws -> [String] {
        if kind == .management && !names.isEmpty {
            throw APIError(.badRequest, "invalid_body", "a management token may do everything; it takes no policies")
        }
        guard names.count <= ACLState.maxPoliciesPerToken else {
            throw APIError(.badRequest, "invalid_body", "a token takes at most \(ACLState.maxPoliciesPerToken) policies")
        }
        for n in names where state.policies[n] == nil {
            throw APIError(.badRequest, "policy_not_found", "no ACL policy \(n) (see `caravan acl policy list`)")
        }
        return Array(Set(names)).sorted()
    }

    /// `90s`, `30m`, `24h`, `7d` or plain seconds: at most six digits (999999d, 2,700 years, is
    /// the longest); 0 makes a token that has expired already.
    static func ttlMillis(_ raw: String) throws -> Int64 {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        var digits = Substring(raw)
        var unit: Int64 = 1000
        for (suffix, ms) in units where raw.hasSuffix(suffix) {
            digits = raw.dropLast(suffix.count)
            unit = ms
            break
        }
        guard !digits.isEmpty, digits.utf8.count <= 6, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int64(digits) else {
            throw APIError(.badRequest, "invalid_body", "ttl \"\(raw)\" must be up to six digits and a unit (like 90s, 30m, 24h, 7d)")
        }
        return n * unit
    }

    /// A policy from its API form; every problem is named.
    static func policy(_ name: String, _ rules: ACLPolicyRules) throws -> Policy {
        func bad(_ message: String) -> APIError { APIError(.badRequest, "invalid_policy", "policy \(name): \(message)") }
        guard Policy.isValidName(name) else { throw bad("the name must be 1-128 letters, digits, '-', '_' or '.'") }
        var p = Policy(name: name, description: rules.description ?? "")
        guard p.description.unicodeScalars.count <= 4096 else { throw bad("description is over 4096 characters") }
        guard !p.description.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\n" && $0 != "\t") || $0.value == 0x7F }) else {
            throw bad("description holds control characters")
        }
        let namespaces = rules.namespaces ?? [:]
        guard namespaces.count <= 256 else { throw bad("at most 256 namespace rules") }
        for (key, caps) in namespaces {
            guard Policy.isValidNamespaceKey(key) else { throw bad("namespace \"\(key)\" must be a namespace name or a glob ending in '*'") }
            var rule = NamespaceRule()
            for c in caps {
                if c == "deny" { rule.deny = true; continue }
                guard let expanded = NamespaceCapability.expand(c) else {
                    throw bad("namespaces.\(key): \"\(c)\" is not one of \(NamespaceCapability.allCases.map(\.rawValue).joined(separator: ", ")), read, write, deny")
                }
                rule.capabilities.formUnion(expanded)
            }
            p.namespaces[key] = rule
        }
        for (scope, value) in [(Scope.node, rules.node), (.agent, rules.agent), (.operator, rules.operator), (.keyring, rules.keyring)] {
            guard let value else { continue }
            guard let level = Level(name: value) else { throw bad("\(scope.rawValue): \"\(value)\" is not read, write or deny") }
            p.scopes[scope] = level
        }
        let variables = rules.variables ?? [:]
        guard variables.count <= 256 else { throw bad("at most 256 variable rules") }
        for (prefix, value) in variables {
            let stem = prefix == "*" ? "" : prefix.hasSuffix("*") ? String(prefix.dropLast()) : prefix
            guard Policy.isValidVariablePrefix(stem) else { throw bad("variables: \"\(prefix)\" is not a variable path prefix") }
            guard let level = Level(name: value) else { throw bad("variables.\(prefix): \"\(value)\" is not read, write or deny") }
            p.variables[stem] = level
        }
        return p
    }

    static func view(_ p: Policy) -> ACLPolicyView {
        func name(_ l: Level?) -> String? { l.map(\.description) }
        let namespaces = p.namespaces.mapValues { rule in (rule.deny ? ["deny"] : []) + rule.capabilities.sorted().map(\.rawValue) }
        let rules = ACLPolicyRules(description: p.description.isEmpty ? nil : p.description, namespaces: namespaces.isEmpty ? nil : namespaces,
                                   node: name(p.scopes[.node]), agent: name(p.scopes[.agent]), operator: name(p.scopes[.operator]),
                                   keyring: name(p.scopes[.keyring]), variables: p.variables.isEmpty ? nil : p.variables.mapValues(\.description))
        return ACLPolicyView(name: p.name, rules: rules, createIndex: p.createIndex, modifyIndex: p.modifyIndex)
    }

    static func view(_ t: Token, secret: String? = nil, now: Int64 = Executor.unixMillis()) -> ACLTokenView {
        ACLTokenView(accessorID: t.accessor, secretID: secret, name: t.name, type: t.kind == .management ? "management" : "client",
                     policies: t.policies, createTime: t.createTime, expiryTime: t.expiryTime, expired: t.isExpired(at: now),
                     createIndex: t.createIndex, modifyIndex: t.modifyIndex)
    }
}
