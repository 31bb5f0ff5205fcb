/// How much a rule lets a caller do with a scope or a variable path. `deny` in any of a
/// caller's policies wins over what the others grant.
public enum Level: UInt8, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case none = 0, read = 1, write = 2, deny = 3

    public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .none: "none"
        case .read: "read"
        case .write: "write"
        case .deny: "deny"
        }
    }

    public init?(name: String) {
        switch name {
        case "read": self = .read
        case "write": self = .write
        case "deny": self = .deny
        default: return nil
        }
    }

    /// Whether this level, as the outcome of a caller's rules, allows `wanted` (read or write).
    public func allows(_ wanted: Level) -> Bool { self != .deny && self >= wanted }
}

/// What a caller may do with the jobs of a namespace.
public enum NamespaceCapability: String, Sendable, CaseIterable, Comparable {
    case readJob = "read-job"
    case submitJob = "submit-job"
    case readLogs = "read-logs"
    case allocExec = "alloc-exec"
    case allocLifecycle = "alloc-lifecycle"
    case scale = "scale"

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    /// The shorthands a policy may use: `read` (read-job), `write` (every capability).
    public static func expand(_ name: String) -> [NamespaceCapability]? {
        switch name {
        case "read": [.readJob]
        case "write": allCases
        default: NamespaceCapability(rawValue: name).map { [$0] }
        }
    }
}

/// The parts of the cluster outside namespaces that a policy grants read or write on.
public enum Scope: String, Sendable, CaseIterable, Comparable {
    /// Nodes: read lists them; write drains them and changes their eligibility.
    case node
    /// This agent: read its members and self views; write makes it leave.
    case agent
    /// The Raft group and scheduler: read their configuration and metrics; write changes them.
    case `operator`
    /// The cluster keyring: read lists key ids; write installs, uses and removes keys.
    case keyring

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// A namespace rule: the capabilities it grants, or an explicit deny.
public struct NamespaceRule: Sendable, Equatable {
    public var capabilities: Set<NamespaceCapability>
    public var deny: Bool

    public init(capabilities: Set<NamespaceCapability> = [], deny: Bool = false) {
        self.capabilities = capabilities
        self.deny = deny
    }
}

/// A named set of rules. Namespace rules are keyed by a namespace name or a glob ending in `*`
/// (the most specific key that matches wins within a policy); variable rules by a path prefix
/// (the longest prefix that matches wins; `""` matches every path).
public struct Policy: Sendable, Equatable {
    public var name: String
    public var description: String
    public var namespaces: [String: NamespaceRule]
    public var scopes: [Scope: Level]
    public var variables: [String: Level]
    public var createIndex: UInt64 = 0
    public var modifyIndex: UInt64 = 0

    public init(name: String, description: String = "", namespaces: [String: NamespaceRule] = [:], scopes: [Scope: Level] = [:],
                variables: [String: Level] = [:]) {
        self.name = name
        self.description = description
        self.namespaces = namespaces
        self.scopes = scopes
        self.variables = variables
    }

    /// Names of policies and namespace keys: 1-128 letters, digits, `-`, `_`, `.` (a namespace
    /// key may end in `*`).
    public static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 128 && s.unicodeScalars.allSatisfy { $0.isASCII && (isWordByte(UInt8($0.value))) }
    }

    static func isWordByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x5F || b == 0x2E
    }

    public static func isValidNamespaceKey(_ s: String) -> Bool {
        s == "*" || isValidName(s.hasSuffix("*") ? String(s.dropLast()) : s)
    }

    /// A variable rule's prefix: up to 512 bytes of what a variable path may hold.
    public static func isValidVariablePrefix(_ s: String) -> Bool {
        s.utf8.count <= 512 && s.utf8.allSatisfy { isWordByte($0) || $0 == 0x2F }
    }

    /// This policy's rule for `namespace`: an exact key, else the longest matching glob.
    func rule(forNamespace namespace: String) -> NamespaceRule? {
        if let exact = namespaces[namespace] { return exact }
        var best: (Int, NamespaceRule)?
        for (key, rule) in namespaces where key.hasSuffix("*") {
            let stem = key.dropLast()
            if namespace.hasPrefix(stem), best == nil || stem.count > best!.0 { best = (stem.count, rule) }
        }
        return best?.1
    }

    /// This policy's level for a variable path: the rule with the longest matching prefix.
    func level(forVariable path: String) -> Level {
        var best: (Int, Level)?
        for (prefix, level) in variables where path.hasPrefix(prefix) {
            if best == nil || prefix.utf8.count > best!.0 { best = (prefix.utf8.count, level) }
        }
        return best?.1 ?? .none
    }
}
