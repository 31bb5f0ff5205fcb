import Primitives

/// Binary encoding of configurations (inside configuration entries and snapshots).
public enum ConfigurationCodec {
    public static func encode(_ c: Configuration) -> [UInt8] {
        var w = ByteWriter()
        encode(c, into: &w)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> Configuration? {
        var r = ByteReader(bytes)
        guard let c = decode(&r), r.atEnd else { return nil }
        return c
    }

    static func encode(_ c: Configuration, into w: inout ByteWriter) {
        w.varint(UInt64(c.servers.count))
        for s in c.servers {
            w.string(s.id.rawValue)
            w.string(s.address)
            w.byte(s.voter ? 1 : 0)
        }
    }

    static func decode(_ r: inout ByteReader) -> Configuration? {
        guard let n = r.count(max: 1024) else { return nil }
        var servers: [Configuration.Server] = []
        for _ in 0..<n {
            guard let id = r.string(), let address = r.string(), let v = r.byte(), v <= 1 else { return nil }
            servers.append(.init(id: ServerID(id), address: address, voter: v == 1))
        }
        return Configuration(servers: servers)
    }
}

/// The wire and disk format of Raft messages and entries: a type byte, then varint and
/// length-prefixed fields in a fixed order. Decoding rejects anything malformed or trailing.
public enum RaftCodec {
    public static let maxEntryBytes = 64 << 20
    public static let maxEntriesPerMessage = 1 << 20
    /// The largest index, term or commit a message may carry: far beyond any real log, and low
    /// enough that no `+ 1` or `+ count` on one can overflow (a frame with `prevIndex =
    /// UInt64.max` once trapped the agent).
    public static let maxIndex: UInt64 = 1 << 62

    /// A varint that is an index, term or commit (≤ ``maxIndex``).
    static func bounded(_ r: inout ByteReader) -> UInt64? {
        guard let v = r.varint(), v <= maxIndex else { return nil }
        return v
    }

    public static func encode(_ e: Entry, into w: inout ByteWriter) {
        w.varint(e.term); w.varint(e.index); w.byte(e.kind.rawValue); w.blob(e.data)
    }

    public static func decodeEntry(_ r: inout ByteReader) -> Entry? {
        guard let t = bounded(&r), let i = bounded(&r), let k = r.byte().flatMap(Entry.Kind.init(rawValue:)),
              let d = r.blob(max: maxEntryBytes) else { return nil }
        return Entry(term: t, index: i, kind: k, data: d)
    }

    public static func encode(_ h: HardState) -> [UInt8] {
        var w = ByteWriter()
        w.varint(h.term); w.string(h.vote?.rawValue ?? ""); w.varint(h.commit)
        return w.bytes
    }

    public static func decodeHardState(_ bytes: [UInt8]) -> HardState? {
        var r = ByteReader(bytes)
        guard let t = bounded(&r), let v = r.string(), let c = bounded(&r), r.atEnd else { return nil }
        return HardState(term: t, vote: v.isEmpty ? nil : ServerID(v), commit: c)
    }

    public static func encode(_ m: SnapshotMetadata, into w: inout ByteWriter) {
        w.varint(m.index); w.varint(m.term); ConfigurationCodec.encode(m.configuration, into: &w)
    }

    public static func decodeSnapshotMetadata(_ r: inout ByteReader) -> SnapshotMetadata? {
        guard let i = bounded(&r), let t = bounded(&r), let c = ConfigurationCodec.decode(&r) else { return nil }
        return SnapshotMetadata(index: i, term: t, configuration: c)
    }

    private enum Tag: UInt8 {
        case vote = 1, voteResponse, append, appendResponse, heartbeat, heartbeatResponse, snapshot,
             readIndex, readIndexResponse, timeoutNow
    }

    public static func encode(_ m: Message) -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.string(m.from.rawValue); w.string(m.to.rawValue); w.varint(m.term)
        switch m.body {
        case .vote(let li, let lt, let pre, let transfer):
            w.byte(Tag.vote.rawValue); w.varint(li); w.varint(lt); w.byte((pre ? 1 : 0) | (transfer ? 2 : 0))
        case .voteResponse(let granted, let pre):
            w.byte(Tag.voteResponse.rawValue); w.byte((granted ? 1 : 0) | (pre ? 2 : 0))
        case .append(let pi, let pt, let entries, let commit):
            w.byte(Tag.append.rawValue); w.varint(pi); w.varint(pt); w.varint(commit)
            w.varint(UInt64(entries.count))
            for e in entries { encode(e, into: &w) }
        case .appendResponse(let success, let index, let hi, let ht):
            w.byte(Tag.appendResponse.rawValue); w.byte(success ? 1 : 0); w.varint(index); w.varint(hi); w.varint(ht)
        case .heartbeat(let commit, let context):
            w.byte(Tag.heartbeat.rawValue); w.varint(commit); w.varint(context)
        case .heartbeatResponse(let context):
            w.byte(Tag.heartbeatResponse.rawValue); w.varint(context)
        case .snapshot(let s):
            w.byte(Tag.snapshot.rawValue); encode(s.metadata, into: &w); w.blob(s.data)
        case .readIndex(let context):
            w.byte(Tag.readIndex.rawValue); w.varint(context)
        case .readIndexResponse(let context, let index):
            w.byte(Tag.readIndexResponse.rawValue); w.varint(context); w.varint(index)
        case .timeoutNow:
            w.byte(Tag.timeoutNow.rawValue)
        }
        return w.bytes
    }

    public static func decodeMessage(_ bytes: [UInt8]) -> Message? {
        var r = ByteReader(bytes)
        guard let from = r.string(), let to = r.string(), let term = bounded(&r),
              let tag = r.byte().flatMap(Tag.init(rawValue:)) else { return nil }
        let body: Message.Body
        switch tag {
        case .vote:
            guard let li = bounded(&r), let lt = bounded(&r), let f = r.byte(), f <= 3 else { return nil }
            body = .vote(lastIndex: li, lastTerm: lt, preVote: f & 1 != 0, transfer: f & 2 != 0)
        case .voteResponse:
            guard let f = r.byte(), f <= 3 else { return nil }
            body = .voteResponse(granted: f & 1 != 0, preVote: f & 2 != 0)
        case .append:
            guard let pi = bounded(&r), let pt = bounded(&r), let commit = bounded(&r),
                  let n = r.count(max: maxEntriesPerMessage) else { return nil }
            var entries: [Entry] = []
            entries.reserveCapacity(n)
            for k in 0..<n {
                guard let e = decodeEntry(&r), e.index == pi + UInt64(k) + 1 else { return nil }
                entries.append(e)
            }
            body = .append(prevIndex: pi, prevTerm: pt, entries: entries, commit: commit)
        case .appendResponse:
            guard let s = r.byte(), s <= 1, let i = bounded(&r), let hi = bounded(&r), let ht = bounded(&r) else { return nil }
            body = .appendResponse(success: s == 1, index: i, hintIndex: hi, hintTerm: ht)
        case .heartbeat:
            guard let c = bounded(&r), let ctx = r.varint() else { return nil }
            body = .heartbeat(commit: c, context: ctx)
        case .heartbeatResponse:
            guard let ctx = r.varint() else { return nil }
            body = .heartbeatResponse(context: ctx)
        case .snapshot:
            guard let meta = decodeSnapshotMetadata(&r), let d = r.blob(max: Int(Int32.max)) else { return nil }
            body = .snapshot(Snapshot(metadata: meta, data: d))
        case .readIndex:
            guard let ctx = r.varint() else { return nil }
            body = .readIndex(context: ctx)
        case .readIndexResponse:
            guard let ctx = r.varint(), let i = bounded(&r) else { return nil }
            body = .readIndexResponse(context: ctx, index: i)
        case .timeoutNow:
            body = .timeoutNow
        }
        guard r.atEnd, !from.isEmpty, !to.isEmpty else { return nil }
        return Message(from: ServerID(from), to: ServerID(to), term: term, body: body)
    }
}
