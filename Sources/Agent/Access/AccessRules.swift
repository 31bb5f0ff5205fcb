import Access
import Executor
import FoundationEssentials
import HTTPTypes
import Hummingbird
import Keyring
import Synchronization

/// Every route's access rule, in one table: what a caller needs to call it once ACLs are on.
/// The router refuses to start with a route that has no rule here (``missing(_:)``), so a new
/// route cannot be added unguarded; ``AccessMiddleware`` applies the table to every request.
enum AccessRules {
    /// A rule: the method, the route pattern (as registered), and the requirement, which may
    /// depend on the request (`?namespace=`, a variable path).
    struct Rule: Sendable {
        var method: String
        var pattern: [Substring]
        var requirement: @Sendable (Request) throws -> Requirement
        /// The handler is quick (one object, a status) and runs on its connection's event loop;
        /// others run on Swift's shared pool (``AccessMiddleware``, ``quick``).
        var onLoop = false
    }

    /// Routes whose handlers answer about one object or the group's status: they run on the
    /// connection's event loop (`OnItsEventLoop`), with no thread hand-over. Every other handler —
    /// lists, plans, what-if, snapshots, logs, exec — runs on Swift's shared pool, so a slow one
    /// holds up neither the other connections on its loop nor the loop that accepts connections.
    static let quick: Set<String> = [
        "GET /v1/status", "GET /v1/status/leader", "GET /v1/var/**", "PUT /v1/var/**", "DELETE /v1/var/**",
        "GET /v1/job/:id", "GET /v1/allocation/:id", "GET /v1/node/:id", "GET /v1/evaluation/:id", "GET /v1/acl/token/self",
    ]

    static func namespace(_ request: Request) -> String { request.uri.queryParameters.get("namespace") ?? "default" }

    static func ns(_ c: NamespaceCapability) -> @Sendable (Request) throws -> Requirement {
        { .namespace(namespace($0), c) }
    }

    static func scope(_ s: Scope, _ l: Level) -> @Sendable (Request) throws -> Requirement { { _ in .scope(s, l) } }

    /// The variable path of `/v1/var/{path}` exactly as the route reads it: the segments after
    /// `v1/var`, empty ones dropped (the router drops them: `/v1/var/app//secret` is
    /// `app/secret`), then percent-decoded.
    static func variable(_ l: Level) -> @Sendable (Request) throws -> Requirement {
        { r in
            let raw = r.uri.path.split(separator: "/").dropFirst(2).joined(separator: "/")
            return .variable(VariableRoutes.percentDecoded(raw) ?? raw, l)
        }
    }

    /// Routes about one object whose namespace the handler reads from the object itself (a job
    /// file, an allocation or evaluation by id): the middleware asks for the capability in some
    /// namespace, the handler for it in the object's (``Caller/check(namespace:hiding:)``).
    static func nsObject(_ c: NamespaceCapability) -> @Sendable (Request) throws -> Requirement {
        { r in .namespace(r.uri.queryParameters.get("namespace") ?? "*", c) }
    }

    static let table: [Rule] = {
        var rules: [(String, String, @Sendable (Request) throws -> Requirement)] = [
            ("GET", "/v1/status", { _ in .open }),
            ("GET", "/v1/status/leader", { _ in .open }),
            ("GET", "/v1/agent/members", scope(.agent, .read)),
            ("GET", "/v1/agent/self", scope(.agent, .read)),
            ("POST", "/v1/agent/leave", scope(.agent, .write)),
            ("GET", "/v1/metrics", scope(.agent, .read)),
            ("GET", "/v1/operator/raft/configuration", scope(.operator, .read)),
            ("POST", "/v1/operator/raft/transfer-leader", scope(.operator, .write)),
            ("GET", "/v1/operator/scheduler/configuration", scope(.operator, .read)),
            ("PUT", "/v1/operator/scheduler/configuration", scope(.operator, .write)),
            ("POST", "/v1/operator/what-if", scope(.operator, .read)),
            ("GET", "/v1/operator/snapshot", { _ in .management }),
            ("PUT", "/v1/operator/snapshot", { _ in .management }),
            ("GET", "/v1/nodes", scope(.node, .read)),
            ("GET", "/v1/node/:id", scope(.node, .read)),
            ("POST", "/v1/node/:id/drain", scope(.node, .write)),
            ("POST", "/v1/node/:id/eligibility", scope(.node, .write)),
            ("POST", "/v1/jobs", nsObject(.submitJob)),
            ("POST", "/v1/jobs/plan", nsObject(.submitJob)),
            ("POST", "/v1/job/:id", nsObject(.submitJob)),
            ("POST", "/v1/job/:id/plan", nsObject(.submitJob)),
            ("POST", "/v1/job/:id/revert", ns(.submitJob)),
            ("POST", "/v1/job/:id/promote", ns(.submitJob)),
            ("DELETE", "/v1/job/:id", ns(.submitJob)),
            ("GET", "/v1/jobs", ns(.readJob)),
            ("GET", "/v1/job/:id", ns(.readJob)),
            ("GET", "/v1/job/:id/versions", ns(.readJob)),
            ("GET", "/v1/job/:id/evaluations", ns(.readJob)),
            ("GET", "/v1/job/:id/allocations", ns(.readJob)),
            ("GET", "/v1/allocations", ns(.readJob)),
            ("GET", "/v1/allocation/:id", nsObject(.readJob)),
            ("GET", "/v1/evaluations", ns(.readJob)),
            ("GET", "/v1/evaluation/:id", nsObject(.readJob)),
            ("GET", "/v1/client/allocation/:id/logs/:task", nsObject(.readLogs)),
            ("POST", "/v1/client/allocation/:id/exec/:task", nsObject(.allocExec)),
            ("POST", "/v1/client/allocation/:id/exec/:task/stream", nsObject(.allocExec)),
            ("GET", "/v1/var/**", variable(.read)),
            ("PUT", "/v1/var/**", variable(.write)),
            ("DELETE", "/v1/var/**", variable(.write)),
            ("GET", "/v1/vars", { r in .variable(r.uri.queryParameters.get("prefix") ?? "", .read) }),
            ("GET", "/v1/namespaces", { _ in .namespace("*", .readJob) }),
            ("GET", "/v1/namespace/:name", { r in .namespace(String(r.uri.path.split(separator: "/").last ?? ""), .readJob) }),
            ("PUT", "/v1/namespace/:name", { _ in .management }),
            ("DELETE", "/v1/namespace/:name", { _ in .management }),
            ("POST", "/v1/acl/bootstrap", { _ in .open }),
            ("GET", "/v1/acl/policies", { _ in .management }),
            ("GET", "/v1/acl/policy/:name", { _ in .management }),
            ("PUT", "/v1/acl/policy/:name", { _ in .management }),
            ("DELETE", "/v1/acl/policy/:name", { _ in .management }),
            ("GET", "/v1/acl/tokens", { _ in .management }),
            ("POST", "/v1/acl/tokens", { _ in .management }),
            ("GET", "/v1/acl/token/self", { _ in .anyToken }),
            ("GET", "/v1/acl/token/:accessor", { _ in .management }),
            ("PUT", "/v1/acl/token/:accessor", { _ in .management }),
            ("DELETE", "/v1/acl/token/:accessor", { _ in .management }),
        ]
        for prefix in ["/v1/agent/keyring", "/v1/operator/keyring"] {
            rules.append(("GET", prefix, scope(.keyring, .read)))
            rules.append(("POST", prefix + "/:operation", scope(.keyring, .write)))
        }
        // Captures as the router describes them: `{id}`.
        return rules.map { r in
            Rule(method: r.0, pattern: r.1.split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : $0 }, requirement: r.2,
                 onLoop: quick.contains("\(r.0) \(r.1)"))
        }
    }()

    /// The rule for a request: among the patterns that match, the one with the most literal
    /// segments (as the router picks routes). Nil when no route matches.
    static func rule(method: String, path: String) -> Rule? {
        guard let rules = byMethod[method] else { return nil }
        let parts = path.split(separator: "/")
        var best: (literal: Int, rule: Rule)?
        for (literal, r) in rules where literal > (best?.literal ?? -1) && RouteMethods.matches(r.pattern, parts) {
            best = (literal, r)
        }
        return best?.rule
    }

    /// The table by method, each rule with its number of literal segments (worked out once: this
    /// is looked up for every request).
    private static let byMethod: [String: [(literal: Int, rule: Rule)]] = Dictionary(grouping: table, by: \.method).mapValues { rules in
        rules.map { r in (RouteMethods.literalSegments(r.pattern), r) }
    }

    static var tokenHeader: HTTPField.Name { HTTPField.Name("X-Caravan-Token")! }

    static func denied(_ need: Requirement) -> APIError {
        APIError(.forbidden, "permission_denied", "permission denied: this call needs \(need)")
    }

    static func revoked(_ need: Requirement) -> APIError {
        APIError(.forbidden, "permission_denied", "permission denied: the token no longer allows \(need)")
    }

    /// Registered routes without a rule (the router must not start with any).
    static func missing(_ routes: [(path: String, method: String)]) -> [String] {
        routes.filter { route in
            !table.contains { $0.method == route.method && $0.pattern == route.path.split(separator: "/") }
        }.map { "\($0.method) \($0.path)" }
    }
}

/// The caller of the request being handled, as ``AccessMiddleware`` resolved it, and the
/// requirement of its route. Handlers that find the object a call is about (a job in a body,
/// an allocation by id) check its namespace with ``check(namespace:)``; list handlers keep
/// only what the caller may see with ``visible(_:)``.
struct Caller: Sendable {
    var identity: Identity
    var requirement: Requirement
    /// What the call needs as the handler learned it (the object's own namespace), for the
    /// checks made later in a long call or a stream.
    let learned = LearnedNeed()
    /// How to resolve the caller again (a long call re-checks before it answers).
    var resolver: TokenResolver?
    var secret: String?
    var started = ContinuousClock.now

    @TaskLocal static var current = Caller(identity: .unrestricted, requirement: .open)

    /// The route's namespace capability, checked against the namespace of the object itself.
    /// With `hiding`, a caller without it gets that error (a not-found) instead: an id or prefix
    /// does not reveal that something exists in a namespace the caller may not see.
    func check(namespace: String, hiding: APIError? = nil) throws {
        guard case .namespace(_, let capability) = requirement else { return }
        let need = Requirement.namespace(namespace, capability)
        learned.set(need)
        guard identity.allows(need) else {
            if let hiding, !identity.allows(.namespace(namespace, .readJob)) { throw hiding }
            throw AccessRules.denied(need)
        }
    }

    /// Whether the caller may see an object of this namespace on the route being served.
    func visible(namespace: String) -> Bool {
        guard case .namespace(_, let capability) = requirement else { return true }
        return identity.allows(.namespace(namespace, capability))
    }

    /// The caller as it is now: resolved again when the call has taken longer than the
    /// resolver keeps answers (a blocking read filters its answer with today's rights).
    func fresh() async throws -> Caller {
        guard let resolver, ContinuousClock.now - started > TokenResolver.ttl, identity.who != .unrestricted else { return self }
        var c = self
        c.identity = try await resolver.identity(secret: secret)
        guard c.identity.allows(requirement) else { throw AccessRules.revoked(requirement) }
        return c
    }
}

/// The requirement a handler learned about its object, kept for the later checks of its call.
final class LearnedNeed: Sendable {
    private let need = Mutex<Requirement?>(nil)
    func set(_ r: Requirement) { need.withLock { $0 = r } }
    var value: Requirement? { need.withLock { $0 } }
}

/// Resolves the caller from `X-Caravan-Token` and refuses, with 403 `permission_denied`
/// naming what is missing, what the route's rule does not allow.
struct AccessMiddleware<Context: RequestContext>: RouterMiddleware {
    let resolver: TokenResolver

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // A path no route serves: the router answers 404 or 405 itself.
        guard let rule = AccessRules.rule(method: request.method.rawValue, path: request.uri.path) else {
            return try await next(request, context)
        }
        if rule.onLoop { return try await check(rule, request, context, next) }
        return try await withTaskExecutorPreference(globalConcurrentExecutor) { try await check(rule, request, context, next) }
    }

    private func check(_ rule: AccessRules.Rule, _ request: Request, _ context: Context,
                       _ next: (Request, Context) async throws -> Response) async throws -> Response {
        let need = try rule.requirement(request)
        // Open routes need no token and no ACL state (they answer while Raft has no leader).
        guard need != .open else { return try await next(request, context) }
        let secret = request.headers[AccessRules.tokenHeader]
        let identity = try await resolver.identity(secret: secret)
        guard identity.allows(need) else { throw AccessRules.denied(need) }
        let started = ContinuousClock.now
        let caller = Caller(identity: identity, requirement: need, resolver: resolver, secret: secret, started: started)
        var response = try await Caller.$current.withValue(caller) {
            try await next(request, context)
        }
        // What the handler learned (an allocation's namespace) is what later checks ask for.
        let finalNeed = caller.learned.value ?? need
        guard identity.who != .unrestricted else { return response }
        // A call that took long (a blocking read) is checked again before it answers, so a token
        // revoked meanwhile gets nothing more.
        if ContinuousClock.now - started > TokenResolver.ttl {
            guard await resolver.allows(finalNeed, secret: secret) else { throw AccessRules.revoked(finalNeed) }
        }
        // A streamed answer (a log follow, an exec session) ends at its next write once its
        // token no longer allows it (checked every ``TokenResolver/ttl``).
        if response.body.contentLength == nil {
            let body = response.body
            let resolver = self.resolver
            response.body = ResponseBody { writer in
                let revoked = Mutex(false)
                let watchdog = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: TokenResolver.ttl)
                        guard !Task.isCancelled else { return }
                        if await !resolver.allows(finalNeed, secret: secret) {
                            revoked.withLock { $0 = true }
                            return
                        }
                    }
                }
                defer { watchdog.cancel() }
                try await body.map { buffer in
                    if revoked.withLock({ $0 }) { throw AccessRules.revoked(finalNeed) }
                    return buffer
                }.write(writer)
            }
        }
        return response
    }
}

/// Turns a token secret into an ``Identity`` from the replicated ACL state; answers are kept for
/// ``ttl`` (so a revoked token stops working on every agent within that time; on the agent that
/// revoked it at once). How the state is read, and what happens when nothing answers, is
/// ``state(for:)``'s to say.
final class TokenResolver: Sendable {
    /// The ACL state for a secret hash: through the leader (`linearizable`) or any member's copy.
    typealias Fetch = @Sendable ([UInt8]?, _ linearizable: Bool) async throws -> ACLState
    private let fetch: Fetch
    private let local: @Sendable () -> ACLState
    /// `acl.enabled` in the agent's configuration: deny by default even before the bootstrap.
    let enforceBeforeBootstrap: Bool
    private let cache = Mutex<[[UInt8]: (state: ACLState, at: ContinuousClock.Instant)]>([:])
    /// Set for good once this agent has seen ACLs on (kept in ``markerPath`` across restarts).
    private let seenOn: Mutex<Bool>
    private let markerPath: String?
    static let ttl: Duration = .seconds(2)
    static let maxCached = 10_000

    /// Whether gossip shows a Raft group (some agent publishes that it is a member): then ACLs
    /// may have been bootstrapped, and an answer is needed.
    private let groupExists: @Sendable () async -> Bool

    init(enforceBeforeBootstrap: Bool, markerPath: String? = nil, local: @escaping @Sendable () -> ACLState = { ACLState() },
         groupExists: @escaping @Sendable () async -> Bool = { true }, fetch: @escaping Fetch) {
        self.enforceBeforeBootstrap = enforceBeforeBootstrap
        self.fetch = fetch
        self.local = local
        self.groupExists = groupExists
        self.markerPath = markerPath
        self.seenOn = Mutex(markerPath.map { FileManager.default.fileExists(atPath: $0) } ?? false)
    }

    private func noteOn() {
        let first = seenOn.withLock { seen in
            defer { seen = true }
            return !seen
        }
        if first, let markerPath { FileManager.default.createFile(atPath: markerPath, contents: Data("ACLs are on in this cluster\n".utf8)) }
    }

    /// The ACL state for this secret hash. Once ACLs are on (as far as this agent has seen, or
    /// its configuration says) only the leader's answer counts: a member cut off from it, or an
    /// agent no member answers, refuses (503) rather than trust a copy that may lag a
    /// revocation. Before that, any member's copy answers; when none answers and gossip shows no
    /// Raft group at all, ACLs cannot have been bootstrapped.
    private func state(for hash: [UInt8]?) async throws -> ACLState {
        let mine = local()
        if mine.bootstrapped || seenOn.withLock({ $0 }) || enforceBeforeBootstrap {
            do { return try await fetch(hash, true) } catch {
                throw APIError(.serviceUnavailable, "acl_unavailable", "cannot check the ACL token: the Raft leader does not answer (\(error))")
            }
        }
        do { return try await fetch(hash, false) } catch {
            if await groupExists() {
                throw APIError(.serviceUnavailable, "acl_unavailable", "cannot check the ACL token: no Raft member answers (\(error))")
            }
            return mine
        }
    }

    func forget() { cache.withLock { $0.removeAll() } }

    /// Whether the caller with this secret may, as of now, do what `need` names (false also
    /// when its token cannot be resolved).
    func allows(_ need: Requirement, secret: String?) async -> Bool {
        (try? await identity(secret: secret))?.allows(need) == true
    }

    func identity(secret: String?) async throws -> Identity {
        // An empty or absent header is an anonymous call.
        let hash = secret.flatMap { $0.isEmpty ? nil : Secrets.sha256($0) }
        let key = hash ?? []
        let now = ContinuousClock.now
        let state: ACLState
        if let hit = cache.withLock({ $0[key] }), now - hit.at < Self.ttl {
            state = hit.state
        } else {
            state = try await self.state(for: hash)
            if state.bootstrapped { noteOn() }
            cache.withLock { c in
                if c.count >= Self.maxCached { c.removeAll() }
                c[key] = (state, now)
            }
        }
        if !state.bootstrapped {
            // ACLs off, unless this agent was told to enforce them from the start.
            return enforceBeforeBootstrap ? Identity(who: .anonymous, policies: []) : .unrestricted
        }
        guard let identity = state.identity(secretHash: hash, now: Executor.unixMillis()) else {
            throw APIError(.forbidden, "permission_denied", "permission denied: the ACL token is unknown or expired")
        }
        return identity
    }
}
