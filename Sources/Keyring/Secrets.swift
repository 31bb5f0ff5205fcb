import CSodium

/// Random identifiers and hashes for secrets other than cluster keys (ACL tokens).
public enum Secrets {
    /// A random version-4 UUID in lower-case hex, from libsodium's CSPRNG (122 random bits).
    public static func uuid() -> String {
        precondition(sodiumReady, "libsodium failed to initialise")
        var b = [UInt8](repeating: 0, count: 16)
        b.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, 16) }
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        let hex = b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }
        return hex[0..<4].joined() + "-" + hex[4..<6].joined() + "-" + hex[6..<8].joined() + "-" + hex[8..<10].joined() + "-" + hex[10..<16].joined()
    }

    /// SHA-256 of the UTF-8 bytes of `secret`.
    public static func sha256(_ secret: String) -> [UInt8] {
        precondition(sodiumReady, "libsodium failed to initialise")
        let input = Array(secret.utf8)
        var out = [UInt8](repeating: 0, count: 32)
        _ = out.withUnsafeMutableBufferPointer { o in
            input.withUnsafeBufferPointer { i in crypto_hash_sha256(o.baseAddress!, i.baseAddress, UInt64(i.count)) }
        }
        return out
    }
}
