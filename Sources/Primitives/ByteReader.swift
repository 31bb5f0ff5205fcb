/// Reads wire fields; every read checks bounds and returns nil past the end or on a malformed
/// field, so a decoder is a chain of `guard let`s and garbage never traps.
public struct ByteReader: Sendable {
    public static let defaultStringLength = 255

    let bytes: [UInt8]
    public private(set) var index = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var atEnd: Bool { index >= bytes.count }
    public var remaining: Int { bytes.count - index }

    public mutating func byte() -> UInt8? {
        guard index < bytes.count else { return nil }
        defer { index += 1 }
        return bytes[index]
    }

    public mutating func varint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while shift < 64 {
            guard let b = byte() else { return nil }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
        return nil
    }

    /// A count of items that follow; never more than `max`, nor more than the bytes left (each
    /// item takes at least one byte).
    public mutating func count(max: Int) -> Int? {
        guard let v = varint(), v <= UInt64(max) else { return nil }
        guard Int(v) <= bytes.count - index else { return nil }
        return Int(v)
    }

    public mutating func raw(_ n: Int) -> ArraySlice<UInt8>? {
        guard n >= 0, n <= bytes.count - index else { return nil }
        defer { index += n }
        return bytes[index..<index + n]
    }

    public mutating func string(max: Int = defaultStringLength) -> String? {
        guard let n = count(max: max), let raw = raw(n) else { return nil }
        return String(validating: raw, as: UTF8.self)
    }

    public mutating func blob(max: Int) -> [UInt8]? {
        guard let n = count(max: max), let raw = raw(n) else { return nil }
        return Array(raw)
    }

    public mutating func uint32() -> UInt32? {
        guard let r = raw(4) else { return nil }
        var v: UInt32 = 0
        for (i, b) in r.enumerated() { v |= UInt32(b) << (8 * UInt32(i)) }
        return v
    }

    public mutating func uint64() -> UInt64? {
        guard let r = raw(8) else { return nil }
        var v: UInt64 = 0
        for (i, b) in r.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        return v
    }
}
