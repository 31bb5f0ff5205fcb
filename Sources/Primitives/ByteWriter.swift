// Building blocks shared by the pure cores: the byte codec and the seeded random source.
/// Appends wire fields to a byte buffer: varints, length-prefixed strings and blobs, fixed-width
/// little-endian integers. Shared by the gossip and Raft codecs and the agent's node metadata.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func byte(_ b: UInt8) { bytes.append(b) }

    public mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// A length-prefixed UTF-8 string, cut to at most `max` bytes — at a character boundary, so
    /// what is written always reads back (a cut inside a character once made a whole record
    /// undecodable).
    public mutating func string(_ s: String, max: Int = ByteReader.defaultStringLength) {
        var u = Array(s.utf8)
        if u.count > max {
            var end = Swift.max(0, max)
            while end > 0 && u[end] & 0xC0 == 0x80 { end -= 1 }
            u.removeSubrange(end...)
        }
        varint(UInt64(u.count))
        bytes.append(contentsOf: u)
    }

    public mutating func blob(_ b: some Collection<UInt8>) {
        varint(UInt64(b.count))
        bytes.append(contentsOf: b)
    }

    public mutating func raw(_ b: some Collection<UInt8>) { bytes.append(contentsOf: b) }

    public mutating func uint32(_ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func uint64(_ v: UInt64) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public static func varintSize(_ v: UInt64) -> Int {
        var n = 1, v = v
        while v >= 0x80 { v >>= 7; n += 1 }
        return n
    }
}
