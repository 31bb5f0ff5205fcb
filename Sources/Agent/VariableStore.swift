import HashTreeCollections
import Primitives
import Raft
import RaftNIO
import Synchronization

/// The replicated key-value store behind `caravan var` (Nomad calls these Variables): the first
/// state machine Raft carries. Paths map to string values; every item remembers the log index
/// that created and last changed it.
///
/// Commands are a type byte and fields; a type byte with the high bit set may be ignored by an
/// agent that does not know it (so newer leaders can add commands without stopping older
/// followers), any other unknown type stops the apply with an error answer.
public final class VariableStore: ReplicatedStateMachine {
    public struct Item: Sendable, Equatable {
        public var value: String
        public var createIndex: LogIndex
        public var modifyIndex: LogIndex
    }

    /// Variable commands and queries live in 0x41…0x7F (0xC1…0xFF ignorable); 0x01…0x3F belong
    /// to the cluster state.
    enum Command: UInt8 { case put = 0x41, delete = 0x42, dataKey = 0x43 }
    enum Query: UInt8 { case get = 0x41, list = 0x42, dataKey = 0x43 }

    static func owns(_ firstByte: UInt8) -> Bool {
        let t = firstByte & ~ignorable
        return t >= 0x41 && t <= 0x7F
    }
    static let ignorable: UInt8 = 0x80
    public static let maxPathBytes = 512
    /// The longest value a caller may store; stored values (sealed) may be longer.
    public static let maxValueBytes = 64 << 10
    static let maxStoredValueBytes = 96 << 10
    static let maxDataKeyBytes = 1 << 10

    /// The variables, and the bytes of every path and value among them (kept together).
    private struct Contents {
        /// A persistent hash trie: a reader holding a copy (a list being built off the Raft loop)
        /// costs the next write a changed path, not a copy of every variable.
        var all: TreeDictionary<String, Item> = [:]
        var bytes = 0
    }
    private let items = Mutex(Contents())
    /// The variables' data key, sealed with the cluster keyring (``VariableCipher``); empty until
    /// the first encrypted write makes one.
    private let dataKey = Mutex<[UInt8]>([])

    /// How many variables are held and their bytes, leaving out the one at `path` (which a put
    /// would replace), and whether it exists.
    public func usage(replacing path: String) -> (count: Int, bytes: Int, exists: Bool) {
        let (count, bytes, existing) = items.withLock { ($0.all.count, $0.bytes, $0.all[path]) }
        return (count, bytes - Self.size(path, existing), existing != nil)
    }

    private static func size(_ path: String, _ item: Item?) -> Int { item.map { path.utf8.count + $0.value.utf8.count } ?? 0 }

    public init() {}

    // MARK: - Encoding (used by the routes)

    public static func put(_ path: String, _ value: String) -> [UInt8] {
        var w = ByteWriter()
        w.byte(Command.put.rawValue); w.string(path, max: maxPathBytes); w.string(value, max: maxStoredValueBytes)
        return w.bytes
    }

    /// Sets the sealed data key: `create` only when there is none, otherwise (a re-seal under
    /// another cluster key) only when there is one.
    static func setDataKey(_ sealed: [UInt8], create: Bool) -> [UInt8] {
        var w = ByteWriter()
        w.byte(Command.dataKey.rawValue); w.byte(create ? 1 : 0); w.blob(sealed)
        return w.bytes
    }

    static let dataKeyQuery: [UInt8] = {
        var w = ByteWriter()
        w.byte(Query.dataKey.rawValue); w.string("")
        return w.bytes
    }()

    public static func delete(_ path: String) -> [UInt8] {
        var w = ByteWriter()
        w.byte(Command.delete.rawValue); w.string(path, max: maxPathBytes)
        return w.bytes
    }

    public static func get(_ path: String) -> [UInt8] {
        var w = ByteWriter()
        w.byte(Query.get.rawValue); w.string(path, max: maxPathBytes)
        return w.bytes
    }

    public static func list(prefix: String) -> [UInt8] {
        var w = ByteWriter()
        w.byte(Query.list.rawValue); w.string(prefix, max: maxPathBytes)
        return w.bytes
    }

    /// Decodes the answer of a get or list: path and item for each match.
    public static func decodeItems(_ bytes: [UInt8]) -> [(String, Item)]? {
        var r = ByteReader(bytes)
        guard let n = r.count(max: 1 << 26) else { return nil }
        var out: [(String, Item)] = []
        for _ in 0..<n {
            guard let p = r.string(max: maxPathBytes), let v = r.string(max: maxStoredValueBytes), let c = r.varint(), let m = r.varint() else { return nil }
            out.append((p, Item(value: v, createIndex: c, modifyIndex: m)))
        }
        return r.atEnd ? out : nil
    }

    /// Items, then (from encrypted variables on) the sealed data key.
    /// The variables and the sealed data key a snapshot holds.
    typealias Snapshot = (items: [(String, Item)], dataKey: [UInt8])

    static func decodeSnapshot(_ bytes: [UInt8]) -> Snapshot? {
        var r = ByteReader(bytes)
        guard let n = r.count(max: 1 << 26) else { return nil }
        var out: [(String, Item)] = []
        for _ in 0..<n {
            guard let p = r.string(max: maxPathBytes), let v = r.string(max: maxStoredValueBytes), let c = r.varint(), let m = r.varint() else { return nil }
            out.append((p, Item(value: v, createIndex: c, modifyIndex: m)))
        }
        if r.atEnd { return (out, []) }
        guard let key = r.blob(max: maxDataKeyBytes), r.atEnd else { return nil }
        return (out, key)
    }

    static func encodeItems(_ items: [(String, Item)]) -> [UInt8] {
        var w = ByteWriter()
        w.varint(UInt64(items.count))
        for (p, i) in items {
            w.string(p, max: maxPathBytes); w.string(i.value, max: maxStoredValueBytes); w.varint(i.createIndex); w.varint(i.modifyIndex)
        }
        return w.bytes
    }

    // MARK: - State machine

    public func apply(_ command: [UInt8], index: LogIndex) -> [UInt8] {
        var r = ByteReader(command)
        guard let type = r.byte() else { return [1] }
        switch Command(rawValue: type) {
        case .put:
            guard let p = r.string(max: Self.maxPathBytes), let v = r.string(max: Self.maxStoredValueBytes) else { return [1] }
            let item = items.withLock { c -> Item in
                let old = c.all[p]
                let new = Item(value: v, createIndex: old?.createIndex ?? index, modifyIndex: index)
                c.all[p] = new
                c.bytes += Self.size(p, new) - Self.size(p, old)
                return new
            }
            // Indexes only (the value is the writer's own): answers are kept for exactly-once
            // writes, and must stay small.
            var w = ByteWriter(capacity: 12)
            w.byte(0); w.varint(item.createIndex); w.varint(item.modifyIndex)
            return w.bytes
        case .delete:
            guard let p = r.string(max: Self.maxPathBytes) else { return [1] }
            let existed = items.withLock { c -> Bool in
                let removed = c.all.removeValue(forKey: p)
                c.bytes -= Self.size(p, removed)
                return removed != nil
            }
            return [0, existed ? 1 : 0]
        case .dataKey:
            guard let create = r.byte(), create <= 1, let sealed = r.blob(max: Self.maxDataKeyBytes), !sealed.isEmpty, r.atEnd else { return [1] }
            let applied = dataKey.withLock { k -> Bool in
                guard k.isEmpty == (create == 1) else { return false }
                k = sealed
                return true
            }
            return [0, applied ? 1 : 0]
        case nil:
            // Unknown: ignorable ones are skipped, others are refused (the same on every agent).
            return type & Self.ignorable != 0 ? [0] : [1]
        }
    }

    public func query(_ request: [UInt8]) throws -> [UInt8] { try prepareQuery(request).build() }

    /// What the answer reads is taken now (on the Raft loop: the item, the data key, or a copy of
    /// the table for a list); a list is filtered, sorted and encoded in the closure.
    /// A list may carry thousands of values: it is built on the bulk worker, so small reads
    /// (an item, a node's allocations, an ACL token) never wait behind it.
    public func prepareQuery(_ request: [UInt8]) throws -> PreparedRead {
        var r = ByteReader(request)
        guard let type = r.byte().flatMap(Query.init(rawValue:)), let p = r.string(max: Self.maxPathBytes) else {
            throw RaftError(.rejected, "malformed query")
        }
        switch type {
        case .dataKey:
            let key = dataKey.withLock { $0 }
            return PreparedRead { key }
        case .get:
            let item = items.withLock { $0.all[p] }
            return PreparedRead { Self.encodeItems(item.map { [(p, $0)] } ?? []) }
        case .list:
            let all = items.withLock { $0.all }
            return PreparedRead(bulk: true) { Self.encodeItems(all.filter { $0.key.hasPrefix(p) }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }) }
        }
    }

    public func snapshot() -> [UInt8] { captureSnapshot()() }

    /// The variables as they are now (a copy of the table); sorting and encoding happen in the closure.
    public func captureSnapshot() -> @Sendable () -> [UInt8] {
        let (all, key) = (items.withLock { $0.all }, dataKey.withLock { $0 })
        return { Self.encodeSnapshot((all.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, key)) }
    }

    static func encodeSnapshot(_ snap: Snapshot) -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.encodeItems(snap.items))
        if !snap.dataKey.isEmpty { w.blob(snap.dataKey) }
        return w.bytes
    }

    public func restore(_ snapshot: [UInt8]) throws {
        guard let decoded = Self.decodeSnapshot(snapshot) else {
            throw RaftError(.rejected, "the variables in the snapshot are damaged")
        }
        replace(with: decoded)
    }

    /// The data key as stored (sealed), empty when there is none.
    var sealedDataKey: [UInt8] { dataKey.withLock { $0 } }

    /// Every variable and the data key replaced by a snapshot's (``decodeSnapshot(_:)``).
    func replace(with decoded: Snapshot) {
        items.withLock { c in
            c.all = [:]
            for (p, i) in decoded.items { c.all[p] = i }
            c.bytes = c.all.reduce(0) { $0 + Self.size($1.key, $1.value) }
        }
        dataKey.withLock { $0 = decoded.dataKey }
    }
}
