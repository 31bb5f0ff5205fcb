import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Gossip
import Keyring

/// Members this node has known, with their identity keys, kept in the data dir.
///
/// After a restart the agent rejoins them even without `--join`, and it can authenticate the
/// member that hands it a keyring it missed while it was down.
struct PeerDirectory: Sendable {
    struct Peer: Codable, Sendable, Equatable {
        var address: String
        var port: UInt16
        var identity: String
    }

    private(set) var peers: [String: Peer] = [:]
    var dirty = false

    static func load(path: String?) -> PeerDirectory {
        var d = PeerDirectory()
        if let path, let data = FileManager.default.contents(atPath: path),
           let peers = try? JSONDecoder().decode([String: Peer].self, from: data) {
            d.peers = peers
        }
        return d
    }

    mutating func record(name: String, address: Address, identity: [UInt8]) {
        let p = Peer(address: address.host, port: address.port, identity: Data(identity).base64EncodedString())
        if peers[name] != p {
            peers[name] = p
            dirty = true
        }
    }

    mutating func forget(_ name: String) {
        if peers.removeValue(forKey: name) != nil { dirty = true }
    }

    func identity(of name: String) -> [UInt8]? {
        peers[name].flatMap { Data(base64Encoded: $0.identity) }.map(Array.init)
    }

    var addresses: [Address] { peers.values.map { Address(host: $0.address, port: $0.port) }.sorted() }

    mutating func save(path: String?) {
        guard dirty, let path else { return }
        dirty = false
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        if let data = try? encoder.encode(peers) { try? AtomicFile.write(data, to: path, mode: 0o600) }
    }
}

/// Gossip metadata as the shell publishes it: a format byte, the node's identity key, then the
/// agent's own bytes (opaque here).
enum MetadataEnvelope {
    static func wrap(_ meta: [UInt8], identity: NodeIdentity?) -> [UInt8] {
        guard let identity else { return [0] + meta }
        return [1] + identity.publicKey + meta
    }

    static func unwrap(_ bytes: [UInt8]) -> (identity: [UInt8]?, metadata: [UInt8]) {
        guard let first = bytes.first else { return (nil, []) }
        if first == 1 && bytes.count >= 33 { return (Array(bytes[1..<33]), Array(bytes[33...])) }
        if first == 0 { return (nil, Array(bytes.dropFirst())) }
        return (nil, bytes)
    }

    static let overhead = 33
}
