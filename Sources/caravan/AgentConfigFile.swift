import CaravanModel
import FoundationEssentials

/// `caravan agent --config FILE`: the agent's settings in YAML (or JSON), the same names as the
/// flags in lowerCamelCase. A flag given on the command line wins over the file.
///
/// ```yaml
/// name: web-1
/// bind: 10.0.0.11
/// join: [10.0.0.10, 10.0.0.12]
/// dataDir: /var/lib/caravan
/// tags: {zone: a}
/// ```
struct AgentConfigFile {
    static let keys = ["name", "bind", "advertise", "join", "dataDir", "encrypt", "keyringFile", "tags", "insecureRegistries", "registryCAs", "registryClientCerts",
                       "gossipProfile", "ports", "bootstrapExpect", "raftVoters", "raftDeadGrace", "raftElectionMs", "raftSnapshotEvery", "maxQueryWait", "logLevel",
                       "enableRawExec", "acl", "tls", "maxKillTimeout", "taskUsers"]

    var values: [String: DocumentNode] = [:]
    let path: String

    /// Reads and checks the file's shape; every problem names the file, the line and the key.
    static func load(_ path: String) throws -> AgentConfigFile {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw CLIError.usage("--config: cannot read \(path)")
        }
        let root: DocumentNode
        do { root = try YAMLSubsetParser.parse(text) } catch { throw CLIError.usage("\(path):\(error.line): \(error.message)") }
        guard case .mapping(let entries, _) = root else { throw CLIError.usage("\(path):\(root.line): expected a mapping of agent settings") }
        var file = AgentConfigFile(path: path)
        for e in entries {
            guard keys.contains(e.key) else {
                throw CLIError.usage("\(path):\(e.line): \(e.key): unknown setting (known: \(keys.joined(separator: ", ")))")
            }
            file.values[e.key] = e.value
        }
        if case .mapping(let ports, _)? = file.values["ports"] {
            for p in ports where !["http", "rpc", "gossip"].contains(p.key) {
                throw CLIError.usage("\(path):\(p.line): ports.\(p.key): unknown port (http, rpc, gossip)")
            }
        }
        return file
    }

    func fail(_ key: String, _ node: DocumentNode, _ message: String) -> CLIError {
        CLIError.usage("\(path):\(node.line): \(key): \(message)")
    }

    func string(_ key: String) throws -> String? {
        guard let n = values[key] else { return nil }
        guard case .scalar(let s, _, _) = n else { throw fail(key, n, "expected a value, found \(n.kindName)") }
        return s
    }

    func int(_ key: String) throws -> Int? {
        guard let s = try string(key) else { return nil }
        guard let v = Int(s) else { throw fail(key, values[key]!, "\"\(s)\" is not a whole number") }
        return v
    }

    func bool(_ key: String) throws -> Bool? {
        guard let s = try string(key) else { return nil }
        switch s {
        case "true": return true
        case "false": return false
        default: throw fail(key, values[key]!, "\"\(s)\" is not true or false")
        }
    }

    func double(_ key: String) throws -> Double? {
        guard let s = try string(key) else { return nil }
        guard let v = Double(s) else { throw fail(key, values[key]!, "\"\(s)\" is not a number") }
        return v
    }

    /// A list of values (a single value counts as a list of one).
    func strings(_ key: String) throws -> [String]? {
        guard let n = values[key] else { return nil }
        switch n {
        case .scalar(let s, _, _): return [s]
        case .sequence(let items, _):
            return try items.map { item in
                guard case .scalar(let s, _, _) = item else { throw fail(key, item, "expected a list of values") }
                return s
            }
        default: throw fail(key, n, "expected a list of values, found \(n.kindName)")
        }
    }

    /// A mapping of names to values (`tags`, `ports`).
    func map(_ key: String) throws -> [String: String]? {
        guard let n = values[key] else { return nil }
        guard case .mapping(let entries, _) = n else { throw fail(key, n, "expected a mapping, found \(n.kindName)") }
        var out: [String: String] = [:]
        for e in entries {
            guard case .scalar(let s, _, _) = e.value else { throw fail("\(key).\(e.key)", e.value, "expected a value") }
            out[e.key] = s
        }
        return out
    }
}
