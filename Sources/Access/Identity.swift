/// An ACL token as the replicated state keeps it: the secret only as its SHA-256.
public struct Token: Sendable, Equatable {
    public enum Kind: UInt8, Sendable { case client = 0, management = 1 }

    /// Public identifier, safe to log and show.
    public var accessor: String
    /// SHA-256 of the secret (32 bytes); the secret itself is shown once and never stored.
    public var secretHash: [UInt8]
    public var name: String
    public var kind: Kind
    public var policies: [String]
    /// Unix milliseconds.
    public var createTime: Int64
    /// Unix milliseconds after which the token is refused; nil: never.
    public var expiryTime: Int64?
    public var createIndex: UInt64 = 0
    public var modifyIndex: UInt64 = 0

    public init(accessor: String, secretHash: [UInt8], name: String, kind: Kind, policies: [String], createTime: Int64,
                expiryTime: Int64? = nil) {
        self.accessor = accessor
        self.secretHash = secretHash
        self.name = name
        self.kind = kind
        self.policies = policies
        self.createTime = createTime
        self.expiryTime = expiryTime
    }

    public func isExpired(at now: Int64) -> Bool { expiryTime.map { now >= $0 } ?? false }
}

/// What a call needs. Every route of the API names one (``Requirement`` values are the whole
/// vocabulary of access checks).
public enum Requirement: Sendable, Equatable, CustomStringConvertible {
    /// Anyone, even with ACLs on (status, the bootstrap call itself).
    case open
    /// Any valid token (reading one's own token).
    case anyToken
    case namespace(String, NamespaceCapability)
    case scope(Scope, Level)
    case variable(String, Level)
    /// A management token (ACL policies and tokens themselves).
    case management

    public var description: String {
        switch self {
        case .open: "nothing"
        case .anyToken: "a token"
        case .namespace(let ns, let c): ns == "*" ? "\(c.rawValue) on some namespace" : "\(c.rawValue) on namespace \(ns)"
        case .scope(let s, let l): "\(s.rawValue):\(l)"
        case .variable(let p, let l): "variables:\(l) on \(p.isEmpty ? "every path" : p)"
        case .management: "a management token"
        }
    }
}

/// Who is calling, as far as access goes: resolved once per request from its token.
public struct Identity: Sendable {
    public enum Who: Sendable, Equatable {
        /// ACLs are off: every call is allowed.
        case unrestricted
        case management(accessor: String)
        case client(accessor: String)
        case anonymous
    }

    public var who: Who
    /// The policies that apply (those of the token, or the `anonymous` policy).
    public var policies: [Policy]

    public init(who: Who, policies: [Policy]) {
        self.who = who
        self.policies = policies
    }

    public static let unrestricted = Identity(who: .unrestricted, policies: [])

    public var isManagement: Bool {
        switch who {
        case .unrestricted, .management: true
        default: false
        }
    }

    public var accessor: String? {
        switch who {
        case .management(let a), .client(let a): a
        default: nil
        }
    }

    /// Whether this caller may do what `requirement` names.
    public func allows(_ requirement: Requirement) -> Bool {
        if isManagement { return true }
        switch requirement {
        case .open: return true
        case .anyToken: return accessor != nil
        case .management: return false
        case .namespace("*", let capability):
            // Every namespace (a list): allowed when some namespace grants it; the list then
            // holds only what the caller may see.
            return policies.contains { p in p.namespaces.values.contains { !$0.deny && $0.capabilities.contains(capability) } }
        case .namespace(let ns, let capability):
            var granted = false
            for p in policies {
                guard let rule = p.rule(forNamespace: ns) else { continue }
                if rule.deny { return false }
                if rule.capabilities.contains(capability) { granted = true }
            }
            return granted
        case .scope(let scope, let wanted):
            return combined(policies.map { $0.scopes[scope] ?? .none }).allows(wanted)
        case .variable(let path, let wanted):
            return variableLevel(path).allows(wanted)
        }
    }

    /// The caller's level on a variable path, all policies together (deny wins).
    public func variableLevel(_ path: String) -> Level {
        if isManagement { return .write }
        return combined(policies.map { $0.level(forVariable: path) })
    }

    func combined(_ levels: [Level]) -> Level {
        levels.contains(.deny) ? .deny : levels.max() ?? .none
    }
}
