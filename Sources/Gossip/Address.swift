/// Where a member's gossip socket listens (UDP and TCP on the same port).
public struct Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`; nil when the text is not an address.
    public init?(parsing text: String, defaultPort: UInt16) {
        var host = Substring(text)
        var port = defaultPort
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let p = UInt16(rest.dropFirst()), p > 0 else { return nil }
                port = p
            }
        } else if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon {
            guard let p = UInt16(host[host.index(after: colon)...]), p > 0 else { return nil }
            port = p
            host = host[..<colon]
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == ":" || $0 == "-" }) else {
            return nil
        }
        self.host = String(host)
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public static func < (l: Address, r: Address) -> Bool { (l.host, l.port) < (r.host, r.port) }
}

/// A member's incarnation number: only the member itself raises it, to refute or to announce a change.
public struct Incarnation: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }
    public static let zero = Incarnation(0)
    public static func < (l: Incarnation, r: Incarnation) -> Bool { l.value < r.value }
    public var next: Incarnation { Incarnation(value &+ 1) }
    public var description: String { "\(value)" }
}

/// What a member is, as far as this node knows.
public enum MemberStatus: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case alive = 0
    case suspect = 1
    case dead = 2
    case left = 3

    /// Counted as up: alive, or suspected but not yet declared dead (it may refute).
    public var isUp: Bool { self == .alive || self == .suspect }

    /// Order of precedence at the same incarnation: a later state overrides an earlier one.
    var precedence: Int {
        switch self {
        case .alive: 0
        case .suspect: 1
        case .dead, .left: 2
        }
    }

    public var description: String {
        switch self {
        case .alive: "alive"
        case .suspect: "suspect"
        case .dead: "dead"
        case .left: "left"
        }
    }
}

/// One member as this node sees it.
public struct Member: Sendable, Equatable {
    public var name: String
    public var address: Address
    public var status: MemberStatus
    public var incarnation: Incarnation
    /// Opaque to the protocol: the agent puts capacity, role, version and tags here.
    public var metadata: [UInt8]
    /// When `status` last changed on this node.
    public var since: Duration

    public init(name: String, address: Address, status: MemberStatus, incarnation: Incarnation,
                metadata: [UInt8], since: Duration) {
        self.name = name
        self.address = address
        self.status = status
        self.incarnation = incarnation
        self.metadata = metadata
        self.since = since
    }

    public var record: MemberRecord {
        MemberRecord(name: name, address: address, status: status, incarnation: incarnation, metadata: metadata)
    }
}
