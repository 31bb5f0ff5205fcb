import CSodium

/// The set of cluster keys: one primary key seals, every installed key can open.
///
/// An empty keyring means encryption is off: frames are sent in the plain frame format and
/// sealed frames are refused. A keyring with keys refuses plain frames, so an agent with a key
/// never accepts traffic from one without.
public struct Keyring: Sendable, Equatable {
    public private(set) var primary: SecretKey?
    /// Installed keys in install order; the primary is among them.
    public private(set) var keys: [SecretKey]

    public init() {
        primary = nil
        keys = []
    }

    public init(primary: SecretKey, others: [SecretKey] = []) {
        self.primary = primary
        self.keys = [primary]
        for k in others where !keys.contains(k) { keys.append(k) }
    }

    public var isEncrypted: Bool { primary != nil }

    /// Adds a key that can open frames; it does not seal until `use` makes it primary.
    public mutating func install(_ key: SecretKey) throws(KeyringError) {
        if keys.contains(key) { return }
        if keys.contains(where: { $0.id == key.id }) {
            throw KeyringError(.keyIDCollision, "another installed key has the identifier \(key.idString)")
        }
        keys.append(key)
        if primary == nil { primary = key }
    }

    /// Makes an installed key the one that seals.
    public mutating func use(_ key: SecretKey) throws(KeyringError) {
        guard keys.contains(key) else {
            throw KeyringError(.keyNotInstalled, "key \(key.idString) is not installed; install it first")
        }
        primary = key
    }

    /// Removes a key; the primary key cannot be removed.
    public mutating func remove(_ key: SecretKey) throws(KeyringError) {
        if primary == key {
            throw KeyringError(.removingPrimary, "key \(key.idString) is the primary key; make another key primary first")
        }
        keys.removeAll { $0 == key }
    }

    func key(withID id: UInt32) -> SecretKey? { keys.first { $0.id == id } }
}

extension Keyring {
    /// First byte of every frame.
    public static let magic: UInt8 = 0xCA
    /// Second byte: a plain frame (encryption off).
    public static let plainVersion: UInt8 = 0x00
    /// Second byte: XChaCha20-Poly1305 sealed frame, version 1.
    public static let sealedVersion: UInt8 = 0x01
    static let headerCount = 6
    static let nonceCount = 24
    static let tagCount = 16

    /// Bytes a sealed frame adds to its payload.
    public var overhead: Int { isEncrypted ? Self.headerCount + Self.nonceCount + Self.tagCount : 2 }

    /// The id of the key a sealed frame was sealed with (nil for anything else).
    public static func keyID(ofSealed frame: [UInt8]) -> UInt32? {
        guard frame.count >= headerCount, frame[0] == magic, frame[1] == sealedVersion else { return nil }
        return frame.withUnsafeBufferPointer(keyID(in:))
    }

    /// The key id of a frame's header (bytes 2–5, big-endian; every sealed version has it there).
    static func keyID(in frame: UnsafeBufferPointer<UInt8>) -> UInt32 {
        UInt32(frame[2]) << 24 | UInt32(frame[3]) << 16 | UInt32(frame[4]) << 8 | UInt32(frame[5])
    }

    /// Writes a sealed frame's first six bytes — magic, version, key id — into `out`.
    static func writeHeader(_ version: UInt8, _ key: SecretKey, into out: inout [UInt8]) {
        out[0] = magic
        out[1] = version
        for i in 0..<4 { out[2 + i] = UInt8(truncatingIfNeeded: key.id >> (24 - 8 * UInt32(i))) }
    }

    /// Seals a payload with the primary key and a fresh random nonce; the header is authenticated.
    public func seal(_ payload: [UInt8]) -> [UInt8] {
        guard let key = primary else {
            return [Self.magic, Self.plainVersion] + payload
        }
        var out = [UInt8](repeating: 0, count: Self.headerCount + Self.nonceCount + payload.count + Self.tagCount)
        Self.writeHeader(Self.sealedVersion, key, into: &out)
        out.withUnsafeMutableBufferPointer { o in
            let nonce = o.baseAddress! + Self.headerCount
            randombytes_buf(nonce, Self.nonceCount)
            let cipher = nonce + Self.nonceCount
            var clen: UInt64 = 0
            let input = payload.isEmpty ? [0] : payload
            let rc = input.withUnsafeBufferPointer { p in
                key.bytes.withUnsafeBufferPointer { k in
                    crypto_aead_xchacha20poly1305_ietf_encrypt(
                        cipher, &clen, p.baseAddress, UInt64(payload.count),
                        o.baseAddress, UInt64(Self.headerCount), nil, nonce, k.baseAddress!)
                }
            }
            precondition(rc == 0, "xchacha20poly1305 encrypt failed: \(rc)")
        }
        return out
    }

    /// Opens a frame sealed by any installed key. Total: every byte string gives a payload or a reason.
    public func open(_ frame: [UInt8]) -> Result<[UInt8], OpenFailure> {
        frame.withUnsafeBufferPointer { open($0) }
    }

    /// Opens a frame held in a buffer (no copy of the ciphertext).
    public func open(_ frame: UnsafeBufferPointer<UInt8>) -> Result<[UInt8], OpenFailure> {
        guard frame.count >= 2 else { return .failure(.truncated) }
        guard frame[0] == Self.magic else { return .failure(.badMagic) }
        switch frame[1] {
        case Self.plainVersion:
            return isEncrypted ? .failure(.plaintextRefused) : .success(Array(frame[2...]))
        case Self.sealedVersion:
            guard isEncrypted else { return .failure(.sealedButNoKeys) }
            guard frame.count >= Self.headerCount + Self.nonceCount + Self.tagCount else { return .failure(.truncated) }
            guard let key = key(withID: Self.keyID(in: frame)) else { return .failure(.unknownKey) }
            let base = frame.baseAddress!
            let nonce = base + Self.headerCount
            let cipher = nonce + Self.nonceCount
            let clen = frame.count - Self.headerCount - Self.nonceCount
            var out = [UInt8](repeating: 0, count: max(1, clen - Self.tagCount))
            var mlen: UInt64 = 0
            let rc = out.withUnsafeMutableBufferPointer { o in
                key.bytes.withUnsafeBufferPointer { k in
                    crypto_aead_xchacha20poly1305_ietf_decrypt(
                        o.baseAddress, &mlen, nil, cipher, UInt64(clen),
                        base, UInt64(Self.headerCount), nonce, k.baseAddress!)
                }
            }
            guard rc == 0 else { return .failure(.forged) }
            return .success(Array(out.prefix(Int(mlen))))
        default:
            return .failure(.unsupportedVersion)
        }
    }
}

// MARK: - Datagrams

extension Keyring {
    /// Second byte: a sealed datagram (ChaCha20-Poly1305, IETF), whose nonce is the sender's
    /// session and packet counter, sent in the clear and authenticated:
    /// `magic | 0x02 | key id (4) | session (8) | counter (4, big-endian) | ciphertext | tag (16)`.
    /// A counter never repeats within a session (the sender takes a new session before it
    /// would), so no nonce repeats under a key; and the same numbers are the receiver's replay
    /// check, so they travel once. 34 bytes of overhead, where a frame with a random 24-byte
    /// nonce and the replay numbers inside takes 57.
    public static let datagramVersion: UInt8 = 0x02
    public static let datagramSessionCount = 8
    static let datagramHeaderCount = 6 + datagramSessionCount + 4

    /// Bytes a sealed datagram adds to its payload.
    public static let datagramOverhead = datagramHeaderCount + tagCount

    /// What an opened datagram carried.
    public struct Datagram: Sendable {
        public var session: [UInt8]
        public var counter: UInt32
        public var payload: [UInt8]
    }

    /// Seals a datagram with the primary key (nil without one: send plain frames then).
    public func sealDatagram(_ payload: [UInt8], session: [UInt8], counter: UInt32) -> [UInt8]? {
        guard let key = primary, session.count == Self.datagramSessionCount else { return nil }
        var out = [UInt8](repeating: 0, count: Self.datagramHeaderCount + payload.count + Self.tagCount)
        Self.writeHeader(Self.datagramVersion, key, into: &out)
        for i in 0..<Self.datagramSessionCount { out[6 + i] = session[i] }
        for i in 0..<4 { out[14 + i] = UInt8(truncatingIfNeeded: counter >> (24 - 8 * UInt32(i))) }
        out.withUnsafeMutableBufferPointer { o in
            let base = o.baseAddress!
            var clen: UInt64 = 0
            let input = payload.isEmpty ? [0] : payload
            let rc = input.withUnsafeBufferPointer { p in
                key.bytes.withUnsafeBufferPointer { k in
                    // The nonce is the 12 bytes of session and counter, inside the header.
                    crypto_aead_chacha20poly1305_ietf_encrypt(
                        base + Self.datagramHeaderCount, &clen, p.baseAddress, UInt64(payload.count),
                        base, UInt64(Self.datagramHeaderCount), nil, base + 6, k.baseAddress!)
                }
            }
            precondition(rc == 0, "chacha20poly1305 encrypt failed: \(rc)")
        }
        return out
    }

    /// Opens a sealed datagram (version 0x02 only). Total, like ``open(_:)``.
    public func openDatagram(_ frame: UnsafeBufferPointer<UInt8>) -> Result<Datagram, OpenFailure> {
        guard frame.count >= 2 else { return .failure(.truncated) }
        guard frame[0] == Self.magic else { return .failure(.badMagic) }
        guard frame[1] == Self.datagramVersion else { return .failure(.unsupportedVersion) }
        guard isEncrypted else { return .failure(.sealedButNoKeys) }
        guard frame.count >= Self.datagramOverhead else { return .failure(.truncated) }
        guard let key = key(withID: Self.keyID(in: frame)) else { return .failure(.unknownKey) }
        let base = frame.baseAddress!
        let clen = frame.count - Self.datagramHeaderCount
        var out = [UInt8](repeating: 0, count: max(1, clen - Self.tagCount))
        var mlen: UInt64 = 0
        let rc = out.withUnsafeMutableBufferPointer { o in
            key.bytes.withUnsafeBufferPointer { k in
                crypto_aead_chacha20poly1305_ietf_decrypt(
                    o.baseAddress, &mlen, nil, base + Self.datagramHeaderCount, UInt64(clen),
                    base, UInt64(Self.datagramHeaderCount), base + 6, k.baseAddress!)
            }
        }
        guard rc == 0 else { return .failure(.forged) }
        let counter = UInt32(frame[14]) << 24 | UInt32(frame[15]) << 16 | UInt32(frame[16]) << 8 | UInt32(frame[17])
        return .success(Datagram(session: Array(frame[6..<14]), counter: counter, payload: Array(out.prefix(Int(mlen)))))
    }
}
