import API
import Gossip
import Primitives

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
        var w = ByteWriter()
        w.byte(Self.formatVersion)
        w.string(role)
        w.string(version)
        for v in [capacity.cpuCores, capacity.cpuMHz, capacity.cpuMillicores, capacity.memoryMiB, capacity.diskMiB,
                  free.cpuMillicores, free.memoryMiB, free.diskMiB, tags.count] {
            w.varint(UInt64(max(0, v)))
        }
        for (k, v) in tags.sorted(by: { $0.key < $1.key }) { w.string(k); w.string(v) }
        return w.bytes
    }

    /// Decodes metadata; nil for anything malformed (an older or foreign agent).
    public static func decode(_ bytes: [UInt8]) -> NodeMetadata? {
        var r = ByteReader(bytes)
        func int() -> Int? { r.varint().flatMap { $0 <= UInt64(Int.max) ? Int($0) : nil } }
        guard r.byte() == formatVersion, let role = r.string(), let version = r.string(),
              let cores = int(), let mhz = int(), let millis = int(), let mem = int(), let disk = int(),
              let fcpu = int(), let fmem = int(), let fdisk = int(), let count = r.count(max: 64) else { return nil }
        var tags: [String: String] = [:]
        for _ in 0..<count {
            guard let k = r.string(), let v = r.string() else { return nil }
            tags[k] = v
        }
        guard r.atEnd else { return nil }
        return NodeMetadata(role: role, version: version,
                            capacity: CapacityView(cpuCores: cores, cpuMHz: mhz, cpuMillicores: millis, memoryMiB: mem, diskMiB: disk),
                            free: ResourcesView(cpuMillicores: fcpu, memoryMiB: fmem, diskMiB: fdisk), tags: tags)
    }
}
