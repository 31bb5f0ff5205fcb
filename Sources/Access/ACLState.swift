import Primitives

/// The replicated ACL system: whether it has been bootstrapped, its policies and its tokens.
/// Changed only by ``ACLCommand``s applied in log order; encoded whole in snapshots and (in
/// part) in answers to queries, so agents outside the Raft group resolve tokens too.
public struct ACLState: Sendable, Equatable {
    /// Set by the first `bootstrap`: from then on every agent denies what no token allows.
    public private(set) var bootstrapped = false
    public private(set) var policies: [String: Policy] = [:]
    /// By accessor.
    public private(set) var tokens: [String: Token] = [:]
    /// Secret hash → accessor.
    private var bySecret: [[UInt8]: String] = [:]

    public static let maxPolicies = 1_000
    public static let maxTokens = 100_000
    public static let maxPoliciesPerToken = 64
    /// The policy that applies to calls without a token once ACLs are on.
    public static let anonymousPolicy = "anonymous"

    public init() {}

    public func token(secretHash: [UInt8]) -> Token? { bySecret[secretHash].flatMap { tokens[$0] } }

    /// The identity of a caller presenting the secret with this hash (nil: none presented), at
    /// `now` (Unix ms). Nil when the token is unknown or expired.
    public func identity(secretHash: [UInt8]?, now: Int64) -> Identity? {
        guard bootstrapped else { return .unrestricted }
        guard let secretHash else {
            return Identity(who: .anonymous, policies: policies[Self.anonymousPolicy].map { [$0] } ?? [])
        }
        guard let t = token(secretHash: secretHash), !t.isExpired(at: now) else { return nil }
        switch t.kind {
        case .management: return Identity(who: .management(accessor: t.accessor), policies: [])
        case .client: return Identity(who: .client(accessor: t.accessor), policies: t.policies.compactMap { policies[$0] })
        }
    }

    /// The part of the state a caller with this secret hash needs: the flag, the token and its
    /// policies (and the anonymous policy), as a smaller state.
    public func subset(secretHash: [UInt8]?) -> ACLState {
        var s = ACLState()
        s.bootstrapped = bootstrapped
        if let a = policies[Self.anonymousPolicy] { s.policies[a.name] = a }
        if let h = secretHash, let t = token(secretHash: h) {
            s.tokens[t.accessor] = t
            s.bySecret[h] = t.accessor
            for p in t.policies { if let policy = policies[p] { s.policies[p] = policy } }
        }
        return s
    }

    // MARK: - Commands

    public enum Outcome: Sendable, Equatable {
        case applied
        case rejected(code: String, message: String)
    }

    public mutating func apply(_ command: ACLCommand, index: UInt64) -> Outcome {
        if case .bootstrap = command {} else if !bootstrapped {
            // Nothing made before the bootstrap could outlive it as a back door.
            return .rejected(code: "acl_not_bootstrapped", message: "ACLs are not bootstrapped: run `caravan acl bootstrap` first")
        }
        switch command {
        case .bootstrap(var t):
            guard !bootstrapped else { return .rejected(code: "already_bootstrapped", message: "ACLs were bootstrapped already; use a management token to make more tokens") }
            bootstrapped = true
            t.kind = .management
            return insert(t, index: index)
        case .upsertPolicy(var p):
            if let old = policies[p.name] { p.createIndex = old.createIndex } else {
                guard policies.count < Self.maxPolicies else { return .rejected(code: "limit_reached", message: "the cluster holds \(Self.maxPolicies) ACL policies, the limit") }
                p.createIndex = index
            }
            p.modifyIndex = index
            policies[p.name] = p
            return .applied
        case .deletePolicy(let name):
            guard policies.removeValue(forKey: name) != nil else { return .rejected(code: "policy_not_found", message: "no ACL policy \(name)") }
            return .applied
        case .upsertToken(let t):
            return insert(t, index: index)
        case .deleteToken(let accessor):
            guard let t = tokens.removeValue(forKey: accessor) else { return .rejected(code: "token_not_found", message: "no ACL token \(accessor)") }
            bySecret[t.secretHash] = nil
            return .applied
        }
    }

    private mutating func insert(_ token: Token, index: UInt64) -> Outcome {
        var t = token
        if let old = tokens[t.accessor] {
            // An update keeps the secret and the kind; it changes name, policies and expiry.
            t.secretHash = old.secretHash
            t.kind = old.kind
            t.createTime = old.createTime
            t.createIndex = old.createIndex
        } else {
            guard tokens.count < Self.maxTokens else { return .rejected(code: "limit_reached", message: "the cluster holds \(Self.maxTokens) ACL tokens, the limit") }
            guard bySecret[t.secretHash] == nil else { return .rejected(code: "token_exists", message: "a token with that secret exists") }
            t.createIndex = index
        }
        t.modifyIndex = index
        tokens[t.accessor] = t
        bySecret[t.secretHash] = t.accessor
        return .applied
    }

    // MARK: - Encoding

    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.byte(1)  // format
        w.byte(bootstrapped ? 1 : 0)
        w.varint(UInt64(policies.count))
        for p in policies.values.sorted(by: { $0.name < $1.name }) { Codec.policy(p, &w) }
        w.varint(UInt64(tokens.count))
        for t in tokens.values.sorted(by: { $0.accessor < $1.accessor }) { Codec.token(t, &w) }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> ACLState? {
        var r = ByteReader(bytes)
        guard r.byte() == 1, let flag = r.byte(), flag <= 1, let np = r.count(max: maxPolicies) else { return nil }
        var s = ACLState()
        s.bootstrapped = flag == 1
        for _ in 0..<np {
            guard let p = Codec.policy(&r), s.policies[p.name] == nil else { return nil }
            s.policies[p.name] = p
        }
        guard let nt = r.count(max: maxTokens) else { return nil }
        for _ in 0..<nt {
            guard let t = Codec.token(&r), s.tokens[t.accessor] == nil, s.bySecret[t.secretHash] == nil else { return nil }
            s.tokens[t.accessor] = t
            s.bySecret[t.secretHash] = t.accessor
        }
        return r.atEnd ? s : nil
    }
}

/// A change to the ACL state, as the Raft log carries it.
public enum ACLCommand: Sendable, Equatable {
    case bootstrap(Token)
    case upsertPolicy(Policy)
    case deletePolicy(String)
    case upsertToken(Token)
    case deleteToken(String)

    /// The first byte of every ACL command and query.
    public static let tag: UInt8 = 0x40

    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.byte(Self.tag)
        switch self {
        case .bootstrap(let t): w.byte(1); Codec.token(t, &w)
        case .upsertPolicy(let p): w.byte(2); Codec.policy(p, &w)
        case .deletePolicy(let n): w.byte(3); w.string(n, max: 128)
        case .upsertToken(let t): w.byte(4); Codec.token(t, &w)
        case .deleteToken(let a): w.byte(5); w.string(a, max: 64)
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> ACLCommand? {
        var r = ByteReader(bytes)
        guard r.byte() == tag, let op = r.byte() else { return nil }
        let c: ACLCommand?
        switch op {
        case 1: c = Codec.token(&r).map { .bootstrap($0) }
        case 2: c = Codec.policy(&r).map { .upsertPolicy($0) }
        case 3: c = r.string(max: 128).map { .deletePolicy($0) }
        case 4: c = Codec.token(&r).map { .upsertToken($0) }
        case 5: c = r.string(max: 64).map { .deleteToken($0) }
        default: c = nil
        }
        return r.atEnd ? c : nil
    }
}

/// Reads of the ACL state through Raft (answered from any member's copy).
public enum ACLQuery: Sendable, Equatable {
    /// The subset a caller with this secret hash needs (nil hash: an anonymous caller).
    case resolve(secretHash: [UInt8]?)
    /// The whole state.
    case all

    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.byte(ACLCommand.tag)
        switch self {
        case .resolve(let h):
            w.byte(1)
            w.blob(h ?? [])
        case .all: w.byte(2)
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> ACLQuery? {
        var r = ByteReader(bytes)
        guard r.byte() == ACLCommand.tag, let op = r.byte() else { return nil }
        switch op {
        case 1:
            guard let h = r.blob(max: 32), h.isEmpty || h.count == 32, r.atEnd else { return nil }
            return .resolve(secretHash: h.isEmpty ? nil : h)
        case 2: return r.atEnd ? .all : nil
        default: return nil
        }
    }

    public func answer(_ state: ACLState) -> [UInt8] {
        switch self {
        case .resolve(let h): state.subset(secretHash: h).encode()
        case .all: state.encode()
        }
    }
}

enum Codec {
    static func policy(_ p: Policy, _ w: inout ByteWriter) {
        w.string(p.name, max: 128)
        w.string(p.description, max: 16_384)
        w.varint(p.createIndex)
        w.varint(p.modifyIndex)
        w.varint(UInt64(p.namespaces.count))
        for (k, rule) in p.namespaces.sorted(by: { $0.key < $1.key }) {
            w.string(k, max: 256)
            w.byte(rule.deny ? 1 : 0)
            w.varint(UInt64(rule.capabilities.count))
            for c in rule.capabilities.sorted() { w.string(c.rawValue) }
        }
        w.varint(UInt64(p.scopes.count))
        for (s, l) in p.scopes.sorted(by: { $0.key < $1.key }) {
            w.string(s.rawValue)
            w.byte(l.rawValue)
        }
        w.varint(UInt64(p.variables.count))
        for (prefix, l) in p.variables.sorted(by: { $0.key < $1.key }) {
            w.string(prefix, max: 512)
            w.byte(l.rawValue)
        }
    }

    static func policy(_ r: inout ByteReader) -> Policy? {
        guard let name = r.string(max: 128), Policy.isValidName(name), let description = r.string(max: 16_384),
              let ci = r.varint(), let mi = r.varint(), let nn = r.count(max: 256) else { return nil }
        var p = Policy(name: name, description: description)
        p.createIndex = ci
        p.modifyIndex = mi
        for _ in 0..<nn {
            guard let key = r.string(max: 256), Policy.isValidNamespaceKey(key), let deny = r.byte(), deny <= 1,
                  let nc = r.count(max: NamespaceCapability.allCases.count) else { return nil }
            var rule = NamespaceRule(deny: deny == 1)
            for _ in 0..<nc {
                guard let c = r.string().flatMap(NamespaceCapability.init(rawValue:)) else { return nil }
                rule.capabilities.insert(c)
            }
            p.namespaces[key] = rule
        }
        guard let ns = r.count(max: Scope.allCases.count) else { return nil }
        for _ in 0..<ns {
            guard let s = r.string().flatMap(Scope.init(rawValue:)), let l = r.byte().flatMap(Level.init(rawValue:)) else { return nil }
            p.scopes[s] = l
        }
        guard let nv = r.count(max: 256) else { return nil }
        for _ in 0..<nv {
            guard let prefix = r.string(max: 512), Policy.isValidVariablePrefix(prefix),
                  let l = r.byte().flatMap(Level.init(rawValue:)) else { return nil }
            p.variables[prefix] = l
        }
        return p
    }

    static func token(_ t: Token, _ w: inout ByteWriter) {
        w.string(t.accessor, max: 64)
        w.blob(t.secretHash)
        w.string(t.name, max: 1024)
        w.byte(t.kind.rawValue)
        w.varint(UInt64(t.policies.count))
        for p in t.policies { w.string(p, max: 128) }
        w.varint(UInt64(bitPattern: t.createTime))
        w.byte(t.expiryTime == nil ? 0 : 1)
        if let e = t.expiryTime { w.varint(UInt64(bitPattern: e)) }
        w.varint(t.createIndex)
        w.varint(t.modifyIndex)
    }

    static func token(_ r: inout ByteReader) -> Token? {
        guard let accessor = r.string(max: 64), !accessor.isEmpty, let hash = r.blob(max: 32), hash.count == 32,
              let name = r.string(max: 1024), let kind = r.byte().flatMap(Token.Kind.init(rawValue:)),
              let np = r.count(max: ACLState.maxPoliciesPerToken) else { return nil }
        var policies: [String] = []
        for _ in 0..<np {
            guard let p = r.string(max: 128), Policy.isValidName(p) else { return nil }
            policies.append(p)
        }
        guard let created = r.varint(), let hasExpiry = r.byte(), hasExpiry <= 1 else { return nil }
        var expiry: Int64?
        if hasExpiry == 1 {
            guard let e = r.varint() else { return nil }
            expiry = Int64(bitPattern: e)
        }
        guard let ci = r.varint(), let mi = r.varint() else { return nil }
        var t = Token(accessor: accessor, secretHash: hash, name: name, kind: kind, policies: policies,
                      createTime: Int64(bitPattern: created), expiryTime: expiry)
        t.createIndex = ci
        t.modifyIndex = mi
        return t
    }
}
