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
    public var httpPort: UInt16
    public var rpcPort: UInt16
    /// Where this agent stands in the Raft group: not in one, proposing to bootstrap one
    /// (`raftIntent` identifies the proposed set of voters), or a member.
    public var raft: RaftStanding
    public var raftIntent: UInt64
    /// Task drivers that work on this node (`raw_exec`, `exec`, `container`).
    public var drivers: [String] = []
    /// Fingerprinted host attributes for constraints (`kernel.version`, `cpu.arch`, `os.name`, …).
    public var attributes: [String: String] = [:]

    public enum RaftStanding: UInt8, Sendable { case none = 0, intent = 1, member = 2 }

    public init(role: String, version: String, capacity: CapacityView, free: ResourcesView, tags: [String: String],
                httpPort: UInt16 = 4680, rpcPort: UInt16 = 4681, raft: RaftStanding = .none, raftIntent: UInt64 = 0) {
        self.role = role
        self.version = version
        self.capacity = capacity
        self.free = free
        self.tags = tags
        self.httpPort = httpPort
        self.rpcPort = rpcPort
        self.raft = raft
        self.raftIntent = raftIntent
    }

    static let formatVersion: UInt8 = 2

    public func encode() -> [UInt8] {
        var w = ByteWriter()
        w.byte(Self.formatVersion)
        w.string(role)
        w.string(version)
        for v in [capacity.cpuCores, capacity.cpuMHz, capacity.cpuMillicores, capacity.memoryMiB, capacity.diskMiB,
                  free.cpuMillicores, free.memoryMiB, free.diskMiB] {
            w.varint(UInt64(max(0, v)))
        }
        w.varint(UInt64(httpPort)); w.varint(UInt64(rpcPort)); w.byte(raft.rawValue); w.varint(raftIntent)
        w.varint(UInt64(tags.count))
        for (k, v) in tags.sorted(by: { $0.key < $1.key }) { w.string(k); w.string(v) }
        // Later additions trail, so agents that predate them still read the rest.
        w.varint(UInt64(drivers.count)); for d in drivers { w.string(d) }
        w.varint(UInt64(attributes.count))
        for (k, v) in attributes.sorted(by: { $0.key < $1.key }) { w.string(k); w.string(v) }
        return w.bytes
    }

    /// Decodes metadata; nil for anything malformed (an older or foreign agent).
    public static func decode(_ bytes: [UInt8]) -> NodeMetadata? {
        var r = ByteReader(bytes)
        func int() -> Int? { r.varint().flatMap { $0 <= UInt64(Int.max) ? Int($0) : nil } }
        guard r.byte() == formatVersion, let role = r.string(), let version = r.string(),
              let cores = int(), let mhz = int(), let millis = int(), let mem = int(), let disk = int(),
              let fcpu = int(), let fmem = int(), let fdisk = int(),
              let http = r.varint(), http <= 65535, let rpc = r.varint(), rpc <= 65535,
              let standing = r.byte().flatMap(RaftStanding.init(rawValue:)), let intent = r.varint(),
              let count = r.count(max: 64) else { return nil }
        var tags: [String: String] = [:]
        for _ in 0..<count {
            guard let k = r.string(), let v = r.string() else { return nil }
            tags[k] = v
        }
        var m = NodeMetadata(role: role, version: version,
                             capacity: CapacityView(cpuCores: cores, cpuMHz: mhz, cpuMillicores: millis, memoryMiB: mem, diskMiB: disk),
                             free: ResourcesView(cpuMillicores: fcpu, memoryMiB: fmem, diskMiB: fdisk), tags: tags,
                             httpPort: UInt16(http), rpcPort: UInt16(rpc), raft: standing, raftIntent: intent)
        if !r.atEnd {
            guard let dn = r.count(max: 16) else { return nil }
            for _ in 0..<dn { guard let d = r.string() else { return nil }; m.drivers.append(d) }
            guard let an = r.count(max: 32) else { return nil }
            for _ in 0..<an {
                guard let k = r.string(), let v = r.string() else { return nil }
                m.attributes[k] = v
            }
        }
        guard r.atEnd else { return nil }
        return m
    }
}
