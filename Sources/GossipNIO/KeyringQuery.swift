import Keyring

/// One keyring operation, run on every member like `serf keys`.
public enum KeyringOperation: Sendable, Equatable {
    case list
    case install(SecretKey)
    case use(SecretKey)
    case remove(SecretKey)

    var code: UInt8 {
        switch self {
        case .list: 0
        case .install: 1
        case .use: 2
        case .remove: 3
        }
    }

    var key: SecretKey? {
        switch self {
        case .list: nil
        case .install(let k), .use(let k), .remove(let k): k
        }
    }

    public var verb: String {
        switch self {
        case .list: "list"
        case .install: "install"
        case .use: "use"
        case .remove: "remove"
        }
    }

    func encode() -> [UInt8] {
        var out: [UInt8] = [StreamKind.keyringQuery.rawValue, code]
        if let k = key { out += Array(k.base64.utf8) }
        return out
    }

    static func decode(_ bytes: ArraySlice<UInt8>) -> KeyringOperation? {
        guard let code = bytes.first else { return nil }
        let rest = bytes.dropFirst()
        if code == 0 { return rest.isEmpty ? .list : nil }
        guard let text = String(validating: rest, as: UTF8.self), let key = try? SecretKey(base64: text) else { return nil }
        switch code {
        case 1: return .install(key)
        case 2: return .use(key)
        case 3: return .remove(key)
        default: return nil
        }
    }
}

/// One member's answer to a keyring operation. Keys are reported by identifier only.
public struct KeyringReply: Sendable, Equatable {
    public var node: String
    public var error: String?
    public var primaryKeyID: String?
    public var keyIDs: [String]

    public init(node: String, error: String?, primaryKeyID: String?, keyIDs: [String]) {
        self.node = node
        self.error = error
        self.primaryKeyID = primaryKeyID
        self.keyIDs = keyIDs
    }

    func encode() -> [UInt8] {
        var out: [UInt8] = [StreamKind.keyringReply.rawValue]
        func put(_ s: String) {
            let u = Array(s.utf8.prefix(1000))
            out.append(UInt8(u.count >> 8)); out.append(UInt8(u.count & 0xFF)); out += u
        }
        put(node)
        put(error ?? "")
        put(primaryKeyID ?? "")
        out.append(UInt8(min(keyIDs.count, 255)))
        for k in keyIDs.prefix(255) { put(k) }
        return out
    }

    static func decode(_ bytes: ArraySlice<UInt8>) -> KeyringReply? {
        var i = bytes.startIndex
        func get() -> String? {
            guard bytes.endIndex - i >= 2 else { return nil }
            let n = Int(bytes[i]) << 8 | Int(bytes[i + 1])
            i += 2
            guard bytes.endIndex - i >= n else { return nil }
            defer { i += n }
            return String(validating: bytes[i..<i + n], as: UTF8.self)
        }
        guard let node = get(), let error = get(), let primary = get(), i < bytes.endIndex else { return nil }
        let count = Int(bytes[i])
        i += 1
        var keys: [String] = []
        for _ in 0..<count {
            guard let k = get() else { return nil }
            keys.append(k)
        }
        guard i == bytes.endIndex else { return nil }
        return KeyringReply(node: node, error: error.isEmpty ? nil : error,
                            primaryKeyID: primary.isEmpty ? nil : primary, keyIDs: keys)
    }
}

/// The aggregate of a keyring operation over the cluster.
public struct KeyringReport: Sendable, Equatable {
    public var operation: String
    /// Members asked (alive at the time).
    public var asked: Int
    public var replies: [KeyringReply]
    /// Members that did not answer in time, by name.
    public var unreachable: [String]

    public var succeeded: Int { replies.filter { $0.error == nil }.count }
    public var failures: [KeyringReply] { replies.filter { $0.error != nil } }

    /// For `list`: how many members hold each key id.
    public var keyCounts: [String: Int] {
        var c: [String: Int] = [:]
        for r in replies where r.error == nil { for k in r.keyIDs { c[k, default: 0] += 1 } }
        return c
    }

    /// For `list`: how many members seal with each key id.
    public var primaryCounts: [String: Int] {
        var c: [String: Int] = [:]
        for r in replies where r.error == nil { if let p = r.primaryKeyID { c[p, default: 0] += 1 } }
        return c
    }
}
