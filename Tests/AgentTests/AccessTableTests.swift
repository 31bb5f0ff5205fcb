import API
import CaravanModel
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import Agent

/// Every route of `Docs/openapi.yaml` with ACLs on: no token → 403, a token with everything
/// but what the route needs → 403, a token with only that → not 403. The expectations are
/// written here, apart from the agent's own table: a documented route missing below fails.
@Suite(.serialized) struct AccessTableTests {
    enum Need: Equatable {
        case open, anyToken, management
        case ns(String)
        case scope(String, String)
        case variable(String)
    }

    static let expected: [String: Need] = [
        "GET /v1/status": .open,
        "GET /v1/status/leader": .open,
        "POST /v1/acl/bootstrap": .open,
        "GET /v1/agent/members": .scope("agent", "read"),
        "GET /v1/agent/self": .scope("agent", "read"),
        "POST /v1/agent/leave": .scope("agent", "write"),
        "GET /v1/metrics": .scope("agent", "read"),
        "GET /v1/agent/keyring": .scope("keyring", "read"),
        "POST /v1/agent/keyring/{operation}": .scope("keyring", "write"),
        "GET /v1/operator/keyring": .scope("keyring", "read"),
        "POST /v1/operator/keyring/{operation}": .scope("keyring", "write"),
        "GET /v1/operator/raft/configuration": .scope("operator", "read"),
        "POST /v1/operator/raft/transfer-leader": .scope("operator", "write"),
        "GET /v1/operator/scheduler/configuration": .scope("operator", "read"),
        "PUT /v1/operator/scheduler/configuration": .scope("operator", "write"),
        "POST /v1/operator/what-if": .scope("operator", "read"),
        "GET /v1/operator/snapshot": .management,
        "PUT /v1/operator/snapshot": .management,
        "GET /v1/nodes": .scope("node", "read"),
        "GET /v1/node/{id}": .scope("node", "read"),
        "POST /v1/node/{id}/drain": .scope("node", "write"),
        "POST /v1/node/{id}/eligibility": .scope("node", "write"),
        "POST /v1/jobs": .ns("submit-job"),
        "POST /v1/jobs/plan": .ns("submit-job"),
        "POST /v1/job/{id}": .ns("submit-job"),
        "POST /v1/job/{id}/plan": .ns("submit-job"),
        "POST /v1/job/{id}/revert": .ns("submit-job"),
        "POST /v1/job/{id}/promote": .ns("submit-job"),
        "DELETE /v1/job/{id}": .ns("submit-job"),
        "GET /v1/jobs": .ns("read-job"),
        "GET /v1/job/{id}": .ns("read-job"),
        "GET /v1/job/{id}/versions": .ns("read-job"),
        "GET /v1/job/{id}/evaluations": .ns("read-job"),
        "GET /v1/job/{id}/allocations": .ns("read-job"),
        "GET /v1/allocations": .ns("read-job"),
        "GET /v1/allocation/{id}": .ns("read-job"),
        "GET /v1/evaluations": .ns("read-job"),
        "GET /v1/evaluation/{id}": .ns("read-job"),
        "GET /v1/client/allocation/{id}/logs/{task}": .ns("read-logs"),
        "POST /v1/client/allocation/{id}/exec/{task}": .ns("alloc-exec"),
        "POST /v1/client/allocation/{id}/exec/{task}/stream": .ns("alloc-exec"),
        "GET /v1/var/{path}": .variable("read"),
        "PUT /v1/var/{path}": .variable("write"),
        "DELETE /v1/var/{path}": .variable("write"),
        "GET /v1/vars": .variable("read"),
        "GET /v1/namespaces": .ns("read-job"),
        "GET /v1/namespace/{name}": .ns("read-job"),
        "PUT /v1/namespace/{name}": .management,
        "DELETE /v1/namespace/{name}": .management,
        "GET /v1/acl/policies": .management,
        "GET /v1/acl/policy/{name}": .management,
        "PUT /v1/acl/policy/{name}": .management,
        "DELETE /v1/acl/policy/{name}": .management,
        "GET /v1/acl/tokens": .management,
        "POST /v1/acl/tokens": .management,
        "GET /v1/acl/token/self": .anyToken,
        "GET /v1/acl/token/{accessor}": .management,
        "PUT /v1/acl/token/{accessor}": .management,
        "DELETE /v1/acl/token/{accessor}": .management,
    ]

    static let allCapabilities = ["read-job", "submit-job", "read-logs", "alloc-exec", "alloc-lifecycle", "scale"]
    static let scopes = ["node", "agent", "operator", "keyring"]

    /// Rules granting everything except what `need` names (nil: no such token to make).
    static func allBut(_ need: Need) -> ACLPolicyRules? {
        var rules = ACLPolicyRules(namespaces: ["*": allCapabilities], node: "write", agent: "write", operator: "write", keyring: "write",
                                   variables: ["": "write"])
        switch need {
        case .open, .anyToken: return nil
        case .management: break
        case .ns(let c): rules.namespaces = ["*": allCapabilities.filter { $0 != c }]
        case .scope(let s, let level):
            let lower = level == "write" ? "read" : nil
            switch s {
            case "node": rules.node = lower
            case "agent": rules.agent = lower
            case "operator": rules.operator = lower
            default: rules.keyring = lower
            }
        case .variable(let level): rules.variables = level == "write" ? ["": "read"] : [:]
        }
        return rules
    }

    /// Rules granting only what `need` names, on the namespace and paths the calls use.
    static func only(_ need: Need) -> ACLPolicyRules {
        var rules = ACLPolicyRules()
        switch need {
        case .ns(let c): rules.namespaces = ["default": [c]]
        case .scope(let s, let level):
            switch s {
            case "node": rules.node = level
            case "agent": rules.agent = level
            case "operator": rules.operator = level
            default: rules.keyring = level
            }
        case .variable(let level): rules.variables = ["app/": level]
        default: break
        }
        return rules
    }

    /// A concrete URI for a documented path.
    static func uri(_ path: String) -> String {
        if path == "/v1/namespace/{name}" { return "/v1/namespace/default" }
        var p = path.replacingOccurrences(of: "{path}", with: "app/x").replacingOccurrences(of: "{operation}", with: "install")
            .replacingOccurrences(of: "{task}", with: "t").replacingOccurrences(of: "{name}", with: "p")
            .replacingOccurrences(of: "{accessor}", with: "nope").replacingOccurrences(of: "{id}", with: "nope")
        if p == "/v1/vars" { p += "?prefix=app/" }
        return p
    }

    @Test func everyDocumentedRouteIsRefusedWithoutItsCapabilityAndServedWithIt() async throws {
        let agent = try await AgentRoutesTests.leader("127.0.62.12")
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        let operations = OpenAPITests.documentedOperations()
        #expect(operations.count > 45)
        let unlisted = operations.filter { Self.expected[$0] == nil }.sorted()
        #expect(unlisted.isEmpty, "documented routes without an expectation here: \(unlisted)")
        try await app.test(.router) { client in
            func call(_ op: String, token: String?) async throws -> (HTTPResponse.Status, String) {
                let parts = op.split(separator: " ", maxSplits: 1)
                var headers: HTTPFields = [.contentType: "application/json"]
                if let token { headers[HTTPField.Name("X-Caravan-Token")!] = token }
                return try await client.execute(uri: Self.uri(String(parts[1])), method: HTTPRequest.Method(String(parts[0]))!, headers: headers,
                                                body: ByteBuffer(string: "{}")) { r in (r.status, String(buffer: r.body)) }
            }
            func json<T: Codable>(_ method: HTTPRequest.Method, _ uri: String, _ body: some Encodable, token: String, as: T.Type) async throws -> T {
                try await client.execute(uri: uri, method: method, headers: [HTTPField.Name("X-Caravan-Token")!: token],
                                         body: ByteBuffer(bytes: try JSONEncoder().encode(body))) { r in
                    #expect(r.status == .ok, "\(method) \(uri): \(String(buffer: r.body))")
                    return try JSONDecoder().decode(T.self, from: Data(buffer: r.body))
                }
            }
            // Before the bootstrap every call is served (403 from nowhere).
            #expect(try await call("GET /v1/jobs", token: nil).0 == .ok)
            let root = try await client.execute(uri: "/v1/acl/bootstrap", method: .post) { r in
                #expect(r.status == .ok)
                return try JSONDecoder().decode(ACLTokenView.self, from: Data(buffer: r.body))
            }
            let management = try #require(root.secretID)
            #expect(root.type == "management")
            #expect(try await call("POST /v1/acl/bootstrap", token: nil).0 == .conflict, "bootstrap works once")
            let plain = try await json(.post, "/v1/acl/tokens", ACLTokenRequest(name: "no policies"), token: management, as: ACLTokenView.self)

            for op in operations.sorted() {
                guard let need = Self.expected[op] else { continue }
                let anonymous = try await call(op, token: nil)
                if need == .open {
                    #expect(anonymous.0 != .forbidden, "\(op) without a token: \(anonymous.1)")
                    continue
                }
                #expect(anonymous.0 == .forbidden && anonymous.1.contains("permission_denied"), "\(op) without a token: \(anonymous.0) \(anonymous.1)")
                let name = "p\(abs(op.hashValue))"
                if let rules = Self.allBut(need) {
                    _ = try await json(.put, "/v1/acl/policy/\(name)-but", rules, token: management, as: ACLPolicyView.self)
                    let t = try await json(.post, "/v1/acl/tokens", ACLTokenRequest(policies: ["\(name)-but"]), token: management, as: ACLTokenView.self)
                    let r = try await call(op, token: t.secretID)
                    #expect(r.0 == .forbidden && r.1.contains("permission denied"), "\(op) with everything but its need: \(r.0) \(r.1)")
                }
                let right: String
                switch need {
                case .management: right = management
                case .anyToken: right = plain.secretID!
                default:
                    _ = try await json(.put, "/v1/acl/policy/\(name)-only", Self.only(need), token: management, as: ACLPolicyView.self)
                    right = try await json(.post, "/v1/acl/tokens", ACLTokenRequest(policies: ["\(name)-only"]), token: management,
                                           as: ACLTokenView.self).secretID!
                }
                let r = try await call(op, token: right)
                #expect(r.0 != .forbidden, "\(op) with only its need: \(r.0) \(r.1)")
            }
            // An unknown or garbage token is refused, even on a route the anonymous policy opens.
            _ = try await json(.put, "/v1/acl/policy/anonymous", ACLPolicyRules(namespaces: ["default": ["read"]]), token: management,
                               as: ACLPolicyView.self)
            #expect(try await call("GET /v1/jobs", token: nil).0 == .ok, "the anonymous policy applies without a token")
            #expect(try await call("GET /v1/jobs", token: "not-a-token").0 == .forbidden)
            #expect(try await call("GET /v1/jobs", token: String(repeating: "\u{FFFD}", count: 2000)).0 == .forbidden)
        }
    }

    @Test func nothingACLMadeBeforeTheBootstrapOutlivesIt() async throws {
        let agent = try await AgentRoutesTests.leader("127.0.62.16")
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            for (method, uri, body) in [(HTTPRequest.Method.post, "/v1/acl/tokens", #"{"name": "backdoor", "type": "management"}"#),
                                        (.put, "/v1/acl/policy/anonymous", #"{"namespaces": {"*": ["write"]}}"#)] {
                try await client.execute(uri: uri, method: method, body: ByteBuffer(string: body)) { r in
                    #expect(r.status == .conflict && String(buffer: r.body).contains("acl_not_bootstrapped"), "\(uri): \(String(buffer: r.body))")
                }
            }
            #expect(agent.store.acl.tokens.isEmpty && agent.store.acl.policies.isEmpty)
        }
    }

    @Test func tokensAndPoliciesThroughTheAPI() async throws {
        let agent = try await AgentRoutesTests.leader("127.0.62.13")
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            func send(_ method: HTTPRequest.Method, _ uri: String, _ body: String? = nil, token: String?) async throws -> (HTTPResponse.Status, String) {
                var headers: HTTPFields = [:]
                if let token { headers[HTTPField.Name("X-Caravan-Token")!] = token }
                return try await client.execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) { r in
                    (r.status, String(buffer: r.body))
                }
            }
            let boot = try await send(.post, "/v1/acl/bootstrap", token: nil)
            let root = try JSONDecoder().decode(ACLTokenView.self, from: Data(boot.1.utf8)).secretID!
            // Bad policies are refused with what is wrong.
            for (body, message) in [(#"{"namespaces": {"default": ["fly"]}}"#, "\"fly\" is not one of"),
                                    (#"{"node": "admin"}"#, "node: \"admin\" is not read, write or deny"),
                                    (#"{"namespaces": {"bad ns": ["read"]}}"#, "must be a namespace name"),
                                    (#"{"variables": {"app/\u00e9": "read"}}"#, "is not a variable path prefix"),
                                    (#"{"namespaces": [1]}"#, "wrong type")] {
                let r = try await send(.put, "/v1/acl/policy/p", body, token: root)
                #expect(r.0 == .badRequest && r.1.replacingOccurrences(of: "\\\"", with: "\"").contains(message), "\(body): \(r.1)")
            }
            #expect(try await send(.put, "/v1/acl/policy/bad%20name", "{}", token: root).0 == .badRequest)
            let ok = try await send(.put, "/v1/acl/policy/dev", #"{"description": "d", "namespaces": {"default": ["write"]}, "variables": {"app/": "write"}}"#, token: root)
            #expect(ok.0 == .ok, "\(ok.1)")
            let policy = try JSONDecoder().decode(ACLPolicyView.self, from: Data(ok.1.utf8))
            #expect(policy.rules.namespaces?["default"]?.count == 6 && policy.rules.variables == ["app/": "write"])
            // Tokens: unknown policies, management with policies, bad ttl, then a good one.
            #expect(try await send(.post, "/v1/acl/tokens", #"{"policies": ["nope"]}"#, token: root).1.contains("policy_not_found"))
            #expect(try await send(.post, "/v1/acl/tokens", #"{"type": "management", "policies": ["dev"]}"#, token: root).0 == .badRequest)
            #expect(try await send(.post, "/v1/acl/tokens", #"{"ttl": "99999999999999999999d"}"#, token: root).0 == .badRequest)
            #expect(try await send(.post, "/v1/acl/tokens", #"{"ttl": "1000000d"}"#, token: root).0 == .badRequest)
            let gone = try await send(.post, "/v1/acl/tokens", #"{"ttl": "0s"}"#, token: root)
            let goneToken = try JSONDecoder().decode(ACLTokenView.self, from: Data(gone.1.utf8))
            #expect(goneToken.expired)
            #expect(try await send(.get, "/v1/acl/token/self", token: goneToken.secretID).1.contains("unknown or expired"))
            #expect(try await send(.post, "/v1/acl/tokens", #"{"type": "root"}"#, token: root).0 == .badRequest)
            let made = try await send(.post, "/v1/acl/tokens", #"{"name": "ci", "policies": ["dev"], "ttl": "1h"}"#, token: root)
            let token = try JSONDecoder().decode(ACLTokenView.self, from: Data(made.1.utf8))
            let secret = try #require(token.secretID)
            #expect(token.expiryTime != nil && !token.expired)
            // The secret is shown once: never in lists or reads.
            let list = try await send(.get, "/v1/acl/tokens", token: root)
            #expect(!list.1.contains(secret) && list.1.contains(token.accessorID))
            #expect(!(try await send(.get, "/v1/acl/token/\(token.accessorID)", token: root).1.contains(secret)))
            let me = try await send(.get, "/v1/acl/token/self", token: secret)
            #expect(me.0 == .ok && me.1.contains("\"ci\"") && !me.1.contains(secret))
            // The client token works where its policy says, and not on ACLs themselves.
            #expect(try await send(.put, "/v1/var/app/a", #"{"value": "1"}"#, token: secret).0 == .ok)
            #expect(try await send(.put, "/v1/var/other/a", #"{"value": "1"}"#, token: secret).0 == .forbidden)
            #expect(try await send(.get, "/v1/acl/tokens", token: secret).0 == .forbidden)
            // Lists keep only what the caller may read.
            #expect(try await send(.put, "/v1/var/zzz/b", #"{"value": "2"}"#, token: root).0 == .ok)
            #expect(try await send(.put, "/v1/acl/policy/wide", #"{"variables": {"": "read", "zzz/": "deny"}}"#, token: root).0 == .ok)
            #expect(try await send(.put, "/v1/acl/token/\(token.accessorID)", #"{"policies": ["wide"]}"#, token: root).0 == .ok)
            let vars = try await send(.get, "/v1/vars", token: secret)
            let visible = try JSONDecoder().decode([VariableView].self, from: Data(vars.1.utf8)).map(\.path)
            #expect(vars.0 == .ok && visible == ["app/a"], "\(vars.1)")
            // Empty segments do not dodge a rule: the router drops them, and so does the check.
            #expect(try await send(.put, "/v1/acl/policy/narrow", #"{"variables": {"app/": "write", "app/secret/": "deny"}}"#, token: root).0 == .ok)
            #expect(try await send(.put, "/v1/acl/token/\(token.accessorID)", #"{"policies": ["narrow"]}"#, token: root).0 == .ok)
            #expect(try await send(.put, "/v1/var/app/secret/db", #"{"value": "s"}"#, token: root).0 == .ok)
            for path in ["/v1/var/app/secret/db", "/v1/var/app//secret/db", "//v1/var/app/secret/db", "/v1//var/app/secret/db",
                         "/v1/var/app/secret//db", "/v1/var/app/%73ecret/db"] {
                let r = try await send(.get, path, token: secret)
                #expect(r.0 == .forbidden, "\(path): \(r.0) \(r.1)")
                #expect(try await send(.put, path, #"{"value": "x"}"#, token: secret).0 == .forbidden, "\(path)")
            }
            #expect(try await send(.get, "/v1/var/app//a", token: secret).0 == .ok)
            // An evaluation in a namespace the caller may not read is not found, not forbidden.
            #expect(try await send(.put, "/v1/namespace/hidden", "{}", token: root).0 == .ok)
            let reg = try await send(.post, "/v1/jobs", "id: h\nnamespace: hidden\ngroups:\n  - name: g\n    tasks:\n      - {name: t, driver: raw_exec, config: {command: /bin/true}}\n", token: root)
            let evalID = try #require(try JSONDecoder().decode(JobRegisterView.self, from: Data(reg.1.utf8)).evaluationID)
            #expect(try await send(.put, "/v1/acl/policy/dev", #"{"namespaces": {"default": ["read"]}}"#, token: root).0 == .ok)
            #expect(try await send(.put, "/v1/acl/token/\(token.accessorID)", #"{"policies": ["dev"]}"#, token: root).0 == .ok)
            #expect(try await send(.get, "/v1/evaluation/\(evalID.prefix(6))", token: secret).0 == .notFound)
            #expect(try await send(.get, "/v1/evaluation/\(evalID.prefix(6))", token: root).0 == .ok)
            // A node's view lists only the allocations of namespaces the caller may read.
            let jobs = JobRoutes(agent: agent)
            _ = try await jobs.commit(.upsertNode(Node(id: "n1", address: "127.0.0.1", cpuMillicores: 1000, memoryMiB: 1024, diskMiB: 1024)), nil)
            var seen = Allocation(id: "a-default", jobID: "d", jobVersion: 0, group: "g", name: "d.g[0]", nodeID: "n1", cpuMillicores: 1, memoryMiB: 1, diskMiB: 1)
            var unseen = seen
            unseen.id = "a-hidden"
            unseen.namespace = "hidden"
            seen.namespace = "default"
            _ = try await jobs.commit(.applyPlan(allocations: [seen, unseen], evaluations: []), nil)
            #expect(try await send(.put, "/v1/acl/policy/dev", #"{"namespaces": {"default": ["read"]}, "node": "read"}"#, token: root).0 == .ok)
            let node = try await send(.get, "/v1/node/n1", token: secret)
            #expect(node.0 == .ok && node.1.contains("a-default") && !node.1.contains("a-hidden"), "\(node.1)")
            #expect(try await send(.get, "/v1/node/n1", token: root).1.contains("a-hidden"))
            // Bootstrapping again is refused without a log entry.
            let before = agent.store.current.lastIndex
            for _ in 0..<5 { #expect(try await send(.post, "/v1/acl/bootstrap", token: nil).0 == .conflict) }
            #expect(await agent.raft.status().lastIndex == before || agent.store.current.lastIndex == before)
            // Revoked: refused at once on this agent.
            #expect(try await send(.delete, "/v1/acl/token/\(token.accessorID)", token: root).0 == .ok)
            #expect(try await send(.get, "/v1/acl/token/self", token: secret).0 == .forbidden)
            #expect(try await send(.delete, "/v1/acl/token/\(token.accessorID)", token: root).0 == .notFound)
            #expect(try await send(.delete, "/v1/acl/policy/nope", token: root).0 == .notFound)
            // The ACL state survives a snapshot and restore of the whole store.
            let snapshot = agent.store.snapshot()
            let copy = ClusterStore()
            try copy.restore(snapshot)
            #expect(copy.acl == agent.store.acl && copy.acl.bootstrapped && copy.acl.policies.keys.sorted() == ["dev", "narrow", "wide"])
        }
    }
}
