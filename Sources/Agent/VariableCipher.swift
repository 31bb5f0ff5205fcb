import Keyring
import Primitives
import RaftNIO
import Synchronization

/// Variables encrypted at rest. Values are sealed (XChaCha20-Poly1305) under a data key before
/// they are proposed, so the Raft log and snapshots hold only ciphertext; the data key itself is
/// replicated sealed under the cluster keyring (``VariableStore`` keeps it) and opened by every
/// agent with its own copy of the keyring. Rotating the cluster key re-seals the data key under
/// the new primary (`keyring use`), so removing the old key afterwards loses nothing; the values
/// are never re-encrypted.
///
/// Without a cluster key (`--dev` alone) values are stored as they are. Values written before
/// encryption (no prefix) are read as they are.
final class VariableCipher: Sendable {
    static let prefix = "caravan:sealed:v1:"
    private let keyring: SharedKeyring
    private let dataKey = Mutex<Keyring?>(nil)

    init(keyring: SharedKeyring) { self.keyring = keyring }

    struct Failure: Error, CustomStringConvertible { let description: String }

    /// The data key, made (once, cluster-wide) if there is none yet; nil without a cluster key.
    func key(_ raft: RaftNode) async throws -> Keyring? {
        guard keyring.current.isEncrypted else { return nil }
        if let k = dataKey.withLock({ $0 }) { return k }
        var sealed = try await raft.read(VariableStore.dataKeyQuery)
        if sealed.isEmpty {
            guard let fresh = SecretKey(raw: SecretKey.randomBytes(SecretKey.byteCount)) else { throw Failure(description: "no data key") }
            _ = try await raft.apply(VariableStore.setDataKey(keyring.current.seal(fresh.rawBytes), create: true))
            // Another agent may have made one first: whichever the log kept is the key.
            sealed = try await raft.read(VariableStore.dataKeyQuery)
        }
        guard case .success(let raw) = keyring.current.open(sealed), let key = SecretKey(raw: raw) else {
            throw Failure(description: "the variables' data key does not open with this agent's keyring (key \(Keyring.keyID(ofSealed: sealed).map { String($0, radix: 16) } ?? "?")): install the cluster key it was sealed with")
        }
        let ring = Keyring(primary: key)
        dataKey.withLock { $0 = ring }
        return ring
    }

    /// A value as it is stored: sealed under the data key (or as it is, without one).
    func seal(_ value: String, _ key: Keyring?) -> String {
        guard let key else { return value }
        return Self.prefix + Base64.encode(key.seal(Array(value.utf8)))
    }

    /// A stored value as written; values stored before encryption are returned as they are.
    func open(_ stored: String, _ raft: RaftNode) async throws -> String {
        guard stored.hasPrefix(Self.prefix) else { return stored }
        guard let key = try await key(raft) else {
            throw Failure(description: "a sealed variable cannot be read without a cluster key")
        }
        guard let text = Self.unseal(stored, key) else { throw Failure(description: "a stored variable does not open with the data key") }
        return text
    }

    /// A sealed value (with its prefix) opened with `key`; nil when it does not open.
    private static func unseal(_ stored: String, _ key: Keyring) -> String? {
        guard let bytes = Base64.decode(String(stored.dropFirst(prefix.count))), case .success(let plain) = key.open(bytes) else { return nil }
        return String(validating: plain, as: UTF8.self)
    }

    /// After the cluster's primary key changed: seals the data key under it, unless it already
    /// is. Fails (and the caller keeps the old key) when this agent cannot open the data key.
    func reseal(_ raft: RaftNode) async throws {
        let ring = keyring.current
        guard let primary = ring.primary else { return }
        let sealed = try await raft.read(VariableStore.dataKeyQuery)
        guard !sealed.isEmpty, Keyring.keyID(ofSealed: sealed) != primary.id else { return }
        guard case .success(let raw) = ring.open(sealed) else {
            throw Failure(description: "the variables' data key does not open with this agent's keyring")
        }
        _ = try await raft.apply(VariableStore.setDataKey(ring.seal(raw), create: false))
    }

    /// A snapshot file's variables made this cluster's, for a restore: values sealed under the
    /// file's data key (opened with this agent's keyring) are sealed again under this cluster's,
    /// which stays; the file's data key is dropped. Plain values are sealed too when this
    /// cluster has a key. The error says which key is missing.
    func adopt(_ snap: VariableStore.Snapshot, _ raft: RaftNode) async throws -> VariableStore.Snapshot {
        let sealed = snap.items.filter { $0.1.value.hasPrefix(Self.prefix) }.count
        var from: Keyring?
        if sealed > 0 {
            guard keyring.current.isEncrypted else {
                throw Failure(description: "the snapshot holds \(sealed) sealed variables and this cluster has no cluster key to seal them again: start it with a key (`caravan keyring`)")
            }
            guard case .success(let raw) = keyring.current.open(snap.dataKey), let fileKey = SecretKey(raw: raw) else {
                let id = Keyring.keyID(ofSealed: snap.dataKey).map { String($0, radix: 16) } ?? "?"
                throw Failure(description: "the snapshot's variables are sealed under cluster key \(id), which this agent's keyring does not hold: install that key (`caravan keyring install`) before restoring, or restore on an agent that has it")
            }
            from = Keyring(primary: fileKey)
        }
        guard !snap.items.isEmpty, let to = try await key(raft) else { return (snap.items, []) }
        let items = try snap.items.map { path, item in
            var item = item
            if item.value.hasPrefix(Self.prefix) {
                guard let from, let text = Self.unseal(item.value, from) else {
                    throw Failure(description: "variable \(path) in the snapshot does not open with the snapshot's data key")
                }
                item.value = text
            }
            item.value = seal(item.value, to)
            return (path, item)
        }
        return (items, [])
    }

    /// The id of the cluster key the data key is sealed with (nil: no data key yet).
    func sealingKeyID(_ raft: RaftNode) async throws -> UInt32? {
        Keyring.keyID(ofSealed: try await raft.read(VariableStore.dataKeyQuery))
    }
}
