import API

/// What an agent tells the cluster about itself through gossip metadata.
///
/// Encoded compactly (varints, length-prefixed strings, no field names) so it fits the gossip
/// metadata bound of 512 bytes together with a handful of tags.
public struct NodeMetadata: Sendable, Equatable {
    public var role: String
    public var version: String
    public var capacity: CapacityView
    public var free: ResourcesView
    public var tags: [String: String]

    public init(role: String, version: String, capacity: CapacityView, free: ResourcesView, tags: [String: String]) {
        self.role = role
        self.version = version
        self.capacity = capacity
        self.free = free
        self.tags = tags
    }

    static let formatVersion: UInt8 = 1

    public func encode() -> [UInt8] {
        var out: [UInt8] = [Self.formatVersion]
        func varint(_ v: Int) {
            var v = UInt64(max(0, v))
            while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
            out.append(UInt8(v))
        }
        func string(_ s: String) {
            let u = Array(s.utf8.prefix(255))
            varint(u.count); out += u
        }
        string(role); string(version)
        varint(capacity.cpuCores); varint(capacity.cpuMHz); varint(capacity.cpuMillicores)
        varint(capacity.memoryMiB); varint(capacity.diskMiB)
        varint(free.cpuMillicores); varint(free.memoryMiB); varint(free.diskMiB)
        varint(tags.count)
        for (k, v) in tags.sorted(by: { $0.key < $1.key }) { string(k); string(v) }
        return out
    }

    /// Decodes metadata; nil for anything malformed (an older or foreign agent).
    public static func decode(_ bytes: [UInt8]) -> NodeMetadata? {
        var i = 0
        func byte() -> UInt8? { guard i < bytes.count else { return nil }; defer { i += 1 }; return bytes[i] }
        func varint() -> Int? {
            var r: UInt64 = 0, shift: UInt64 = 0
            while shift < 63 {
                guard let b = byte() else { return nil }
                r |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return r <= UInt64(Int.max) ? Int(r) : nil }
                shift += 7
            }
            return nil
        }
        func string() -> String? {
            guard let n = varint(), n <= bytes.count - i else { return nil }
            defer { i += n }
            return String(validating: bytes[i..<i + n], as: UTF8.self)
        }
        guard byte() == formatVersion, let role = string(), let version = string(),
              let cores = varint(), let mhz = varint(), let millis = varint(), let mem = varint(), let disk = varint(),
              let fcpu = varint(), let fmem = varint(), let fdisk = varint(), let count = varint(), count <= 64 else { return nil }
        var tags: [String: String] = [:]
        for _ in 0..<count {
            guard let k = string(), let v = string() else { return nil }
            tags[k] = v
        }
        guard i == bytes.count else { return nil }
        return NodeMetadata(role: role, version: version,
                            capacity: CapacityView(cpuCores: cores, cpuMHz: mhz, cpuMillicores: millis, memoryMiB: mem, diskMiB: disk),
                            free: ResourcesView(cpuMillicores: fcpu, memoryMiB: fmem, diskMiB: fdisk), tags: tags)
    }
}
