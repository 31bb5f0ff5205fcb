import CSodium

/// Makes sure libsodium is initialised before first use; safe to call from any thread.
let sodiumReady: Bool = sodium_init() >= 0

/// One 32-byte XChaCha20-Poly1305 key and its short public identifier.
///
/// The identifier is the first four bytes of a BLAKE2b hash of the key: it travels in every
/// sealed frame's header so a receiver picks the right key at once instead of trying each.
public struct SecretKey: Sendable, Hashable, CustomStringConvertible {
    public static let byteCount = 32
    let bytes: [UInt8]
    /// The identifier carried in frame headers; not secret.
    public let id: UInt32

    /// Decodes a base64 key, as printed by `caravan keygen`.
    public init(base64: String) throws(KeyringError) {
        let trimmed = base64.trimmedWhitespace
        guard let data = Base64.decode(trimmed) else {
            throw KeyringError(.invalidKey, "key is not valid base64")
        }
        guard data.count == Self.byteCount else {
            throw KeyringError(.invalidKey, "key must be \(Self.byteCount) bytes, got \(data.count)")
        }
        self.init(bytes: data)
    }

    init(bytes: [UInt8]) {
        precondition(bytes.count == Self.byteCount, "key must be 32 bytes, got \(bytes.count)")
        precondition(sodiumReady, "libsodium failed to initialise")
        self.bytes = bytes
        var hash = [UInt8](repeating: 0, count: 16)
        let context: [UInt8] = Array("caravan-key-id".utf8)
        _ = hash.withUnsafeMutableBufferPointer { h in
            bytes.withUnsafeBufferPointer { k in
                context.withUnsafeBufferPointer { c in
                    crypto_generichash(h.baseAddress!, 16, c.baseAddress, UInt64(c.count), k.baseAddress, k.count)
                }
            }
        }
        self.id = UInt32(hash[0]) << 24 | UInt32(hash[1]) << 16 | UInt32(hash[2]) << 8 | UInt32(hash[3])
    }

    /// A key from 32 raw bytes (a data key kept sealed elsewhere); nil for any other length.
    public init?(raw: [UInt8]) {
        guard raw.count == Self.byteCount else { return nil }
        self.init(bytes: raw)
    }

    /// The raw bytes, for sealing this key under another. Never log them.
    public var rawBytes: [UInt8] { bytes }

    /// `count` random bytes from libsodium's CSPRNG (nonces, challenges).
    public static func randomBytes(_ count: Int) -> [UInt8] {
        precondition(sodiumReady, "libsodium failed to initialise")
        var b = [UInt8](repeating: 0, count: count)
        b.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) }
        return b
    }

    /// A new random key from libsodium's CSPRNG.
    public static func generate() -> SecretKey {
        precondition(sodiumReady, "libsodium failed to initialise")
        var b = [UInt8](repeating: 0, count: byteCount)
        b.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, byteCount) }
        return SecretKey(bytes: b)
    }

    /// The key as base64, for key files and `caravan keygen`. Never log this.
    public var base64: String { Base64.encode(bytes) }

    /// Prints only the identifier, so a key cannot leak through logs or string interpolation.
    public var description: String { "key-\(idString)" }

    /// The identifier as 8 hex digits, safe to show to operators.
    public var idString: String {
        let s = String(id, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}

extension String {
    /// The text without leading and trailing white space (key files end in a newline).
    var trimmedWhitespace: String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
