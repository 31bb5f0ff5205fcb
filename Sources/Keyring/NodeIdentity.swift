import CSodium
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// A node's long-term X25519 key pair, kept in its data dir and independent of the cluster keys.
///
/// Its public half travels in the node's gossip metadata. A member that missed a key rotation
/// proves who it is with it: the cluster answers with the current keyring sealed to this public
/// key, which only the holder of the secret half can open — a holder of a removed cluster key
/// learns nothing.
public struct NodeIdentity: Sendable, Equatable {
    public static let publicKeyCount = 32
    public let publicKey: [UInt8]
    let secretKey: [UInt8]

    public static func generate() -> NodeIdentity {
        precondition(sodiumReady, "libsodium failed to initialise")
        var pk = [UInt8](repeating: 0, count: 32), sk = [UInt8](repeating: 0, count: 32)
        _ = pk.withUnsafeMutableBufferPointer { p in sk.withUnsafeMutableBufferPointer { s in crypto_box_keypair(p.baseAddress!, s.baseAddress!) } }
        return NodeIdentity(publicKey: pk, secretKey: sk)
    }

    /// Loads the identity at `path`, creating it (mode 0600) on first use.
    public static func loadOrCreate(path: String) throws(KeyringError) -> NodeIdentity {
        if let data = FileManager.default.contents(atPath: path) {
            let text = String(decoding: data, as: UTF8.self).trimmedWhitespace
            guard let sk = Base64.decode(text), sk.count == 32 else {
                throw KeyringError(.unreadableFile, "node identity file \(path) is not a base64 32-byte key")
            }
            var pk = [UInt8](repeating: 0, count: 32)
            _ = pk.withUnsafeMutableBufferPointer { p in sk.withUnsafeBufferPointer { s in crypto_scalarmult_base(p.baseAddress!, s.baseAddress!) } }
            return NodeIdentity(publicKey: pk, secretKey: sk)
        }
        let id = generate()
        do {
            try AtomicFile.write(Data((Base64.encode(id.secretKey) + "\n").utf8), to: path, mode: 0o600)
        } catch {
            throw KeyringError(.unreadableFile, "cannot write node identity file \(path): \(KeyringFile.reason(error))")
        }
        return id
    }

    /// Seals a payload so only the holder of `publicKey`'s secret half can open it.
    public static func seal(_ payload: [UInt8], to publicKey: [UInt8]) -> [UInt8]? {
        guard publicKey.count == 32 else { return nil }
        var out = [UInt8](repeating: 0, count: payload.count + crypto_box_sealbytes())
        let input = payload.isEmpty ? [0] : payload
        let rc = out.withUnsafeMutableBufferPointer { o in
            input.withUnsafeBufferPointer { p in
                publicKey.withUnsafeBufferPointer { k in
                    crypto_box_seal(o.baseAddress!, p.baseAddress!, UInt64(payload.count), k.baseAddress!)
                }
            }
        }
        return rc == 0 ? out : nil
    }

    /// Opens what ``seal(_:to:)`` sealed to this identity; nil when it was not for us or is forged.
    public func open(_ sealed: [UInt8]) -> [UInt8]? {
        let overhead = crypto_box_sealbytes()
        guard sealed.count >= overhead else { return nil }
        var out = [UInt8](repeating: 0, count: max(1, sealed.count - overhead))
        let rc = out.withUnsafeMutableBufferPointer { o in
            sealed.withUnsafeBufferPointer { c in
                publicKey.withUnsafeBufferPointer { pk in
                    secretKey.withUnsafeBufferPointer { sk in
                        crypto_box_seal_open(o.baseAddress!, c.baseAddress!, UInt64(sealed.count), pk.baseAddress!, sk.baseAddress!)
                    }
                }
            }
        }
        guard rc == 0 else { return nil }
        return Array(out.prefix(sealed.count - overhead))
    }
}

extension Keyring {
    /// The keyring as bytes (primary first), for handing to a member that missed a rotation.
    public func exported() -> [UInt8] {
        guard let p = primary else { return [] }
        return ([p] + keys.filter { $0 != p }).flatMap(\.bytes)
    }

    /// Reads what ``exported()`` wrote; nil if malformed.
    public static func imported(_ bytes: [UInt8]) -> Keyring? {
        guard !bytes.isEmpty, bytes.count % SecretKey.byteCount == 0, bytes.count <= 64 * SecretKey.byteCount else { return nil }
        let keys = stride(from: 0, to: bytes.count, by: SecretKey.byteCount).map {
            SecretKey(bytes: Array(bytes[$0..<$0 + SecretKey.byteCount]))
        }
        var ring = Keyring(primary: keys[0])
        for k in keys.dropFirst() { try? ring.install(k) }
        return ring
    }
}

extension NodeIdentity {
    /// Encrypts and authenticates a payload from this identity to a peer (crypto_box, random nonce).
    public func box(_ payload: [UInt8], to peer: [UInt8]) -> [UInt8]? {
        guard peer.count == 32 else { return nil }
        var out = [UInt8](repeating: 0, count: 24 + payload.count + crypto_box_macbytes())
        let input = payload.isEmpty ? [0] : payload
        let rc = out.withUnsafeMutableBufferPointer { o in
            randombytes_buf(o.baseAddress!, 24)
            return input.withUnsafeBufferPointer { p in
                peer.withUnsafeBufferPointer { pk in
                    secretKey.withUnsafeBufferPointer { sk in
                        crypto_box_easy(o.baseAddress! + 24, p.baseAddress!, UInt64(payload.count), o.baseAddress!,
                                        pk.baseAddress!, sk.baseAddress!)
                    }
                }
            }
        }
        return rc == 0 ? out : nil
    }

    /// Opens what `peer` boxed for this identity; nil if it was not, or was altered.
    public func unbox(_ boxed: [UInt8], from peer: [UInt8]) -> [UInt8]? {
        let mac = crypto_box_macbytes()
        guard peer.count == 32, boxed.count >= 24 + mac else { return nil }
        let clen = boxed.count - 24
        var out = [UInt8](repeating: 0, count: max(1, clen - mac))
        let rc = out.withUnsafeMutableBufferPointer { o in
            boxed.withUnsafeBufferPointer { b in
                peer.withUnsafeBufferPointer { pk in
                    secretKey.withUnsafeBufferPointer { sk in
                        crypto_box_open_easy(o.baseAddress!, b.baseAddress! + 24, UInt64(clen), b.baseAddress!,
                                             pk.baseAddress!, sk.baseAddress!)
                    }
                }
            }
        }
        guard rc == 0 else { return nil }
        return Array(out.prefix(clen - mac))
    }
}
