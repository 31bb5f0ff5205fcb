import Primitives

/// The compact binary wire format of gossip packets and stream messages.
///
/// Field names never travel: each message is a type byte followed by its fields in a fixed
/// order, integers as LEB128 varints, strings and byte strings length-prefixed. Decoding is
/// total: any byte string gives a value or `nil`, never a trap.
public enum Codec {
    public static let version: UInt8 = 1
    /// Longest member name or host accepted on the wire.
    public static let maxNameLength = 255
    /// Largest metadata accepted on the wire (the agent's own bound is lower).
    public static let maxMetadataLength = 4096
    /// Most records one stream message may carry.
    public static let maxRecords = 100_000

    enum MessageType: UInt8 {
        case ping = 1, pingReq, ack, nack, alive, suspect, dead, left
    }

    enum StreamType: UInt8 {
        case join = 0x10, fullState, digest, difference, push
    }

    // MARK: packets

    /// Encodes messages into one packet payload (before sealing).
    public static func encodePacket(_ messages: [Message]) -> [UInt8] {
        var w = ByteWriter()
        w.byte(version)
        for m in messages { encode(m, into: &w) }
        return w.bytes
    }

    /// Decodes a packet payload; nil if any part of it is malformed.
    public static func decodePacket(_ bytes: [UInt8]) -> [Message]? {
        var r = ByteReader(bytes)
        guard r.byte() == version else { return nil }
        var out: [Message] = []
        while !r.atEnd {
            guard let m = decodeMessage(&r) else { return nil }
            out.append(m)
        }
        return out
    }

    /// Bytes a message adds to a packet.
    public static func size(of m: Message) -> Int {
        switch m {
        case .ping(let seq, let target): 1 + varintSize(UInt64(seq)) + stringSize(target)
        case .pingReq(let seq, let target, let a): 1 + varintSize(UInt64(seq)) + stringSize(target) + addressSize(a)
        case .ack(let seq), .nack(let seq): 1 + varintSize(UInt64(seq))
        case .alive(let n, let a, let inc, let meta):
            1 + stringSize(n) + addressSize(a) + varintSize(inc.value) + varintSize(UInt64(meta.count)) + meta.count
        case .suspect(let n, let inc, let from, _): 1 + stringSize(n) + varintSize(inc.value) + stringSize(from) + 1
        case .dead(let n, let inc, let from): 1 + stringSize(n) + varintSize(inc.value) + stringSize(from)
        case .left(let n, let inc): 1 + stringSize(n) + varintSize(inc.value)
        }
    }

    static func encode(_ m: Message, into w: inout ByteWriter) {
        switch m {
        case .ping(let seq, let target):
            w.byte(MessageType.ping.rawValue); w.varint(UInt64(seq)); w.string(target)
        case .pingReq(let seq, let target, let a):
            w.byte(MessageType.pingReq.rawValue); w.varint(UInt64(seq)); w.string(target); w.address(a)
        case .ack(let seq):
            w.byte(MessageType.ack.rawValue); w.varint(UInt64(seq))
        case .nack(let seq):
            w.byte(MessageType.nack.rawValue); w.varint(UInt64(seq))
        case .alive(let n, let a, let inc, let meta):
            w.byte(MessageType.alive.rawValue); w.string(n); w.address(a); w.varint(inc.value); w.blob(meta)
        case .suspect(let n, let inc, let from, let refused):
            w.byte(MessageType.suspect.rawValue); w.string(n); w.varint(inc.value); w.string(from)
            w.byte(refused ? 1 : 0)
        case .dead(let n, let inc, let from):
            w.byte(MessageType.dead.rawValue); w.string(n); w.varint(inc.value); w.string(from)
        case .left(let n, let inc):
            w.byte(MessageType.left.rawValue); w.string(n); w.varint(inc.value)
        }
    }

    static func decodeMessage(_ r: inout ByteReader) -> Message? {
        guard let t = r.byte().flatMap(MessageType.init(rawValue:)) else { return nil }
        switch t {
        case .ping:
            guard let seq = r.seq(), let target = r.string() else { return nil }
            return .ping(seq: seq, target: target)
        case .pingReq:
            guard let seq = r.seq(), let target = r.string(), let a = r.address() else { return nil }
            return .pingReq(seq: seq, target: target, address: a)
        case .ack:
            return r.seq().map { .ack(seq: $0) }
        case .nack:
            return r.seq().map { .nack(seq: $0) }
        case .alive:
            guard let n = r.string(), let a = r.address(), let inc = r.varint(),
                  let meta = r.blob(max: maxMetadataLength) else { return nil }
            return .alive(name: n, address: a, incarnation: Incarnation(inc), metadata: meta)
        case .suspect:
            guard let n = r.string(), let inc = r.varint(), let from = r.string(), let flag = r.byte(), flag <= 1 else { return nil }
            return .suspect(name: n, incarnation: Incarnation(inc), from: from, refused: flag == 1)
        case .dead:
            guard let n = r.string(), let inc = r.varint(), let from = r.string() else { return nil }
            return .dead(name: n, incarnation: Incarnation(inc), from: from)
        case .left:
            guard let n = r.string(), let inc = r.varint() else { return nil }
            return .left(name: n, incarnation: Incarnation(inc))
        }
    }

    // MARK: stream messages

    public static func encodeStream(_ m: StreamMessage) -> [UInt8] {
        var w = ByteWriter()
        w.byte(version)
        switch m {
        case .join(let rec):
            w.byte(StreamType.join.rawValue); w.record(rec)
        case .fullState(let recs):
            w.byte(StreamType.fullState.rawValue); w.records(recs)
        case .digest(let entries):
            w.byte(StreamType.digest.rawValue); w.varint(UInt64(entries.count))
            for e in entries { w.string(e.name); w.byte(e.status.rawValue); w.varint(e.incarnation.value) }
        case .difference(let recs, let wanted):
            w.byte(StreamType.difference.rawValue); w.records(recs)
            w.varint(UInt64(wanted.count)); for n in wanted { w.string(n) }
        case .push(let recs):
            w.byte(StreamType.push.rawValue); w.records(recs)
        }
        return w.bytes
    }

    public static func decodeStream(_ bytes: [UInt8]) -> StreamMessage? {
        var r = ByteReader(bytes)
        guard r.byte() == version, let t = r.byte().flatMap(StreamType.init(rawValue:)) else { return nil }
        let m: StreamMessage?
        switch t {
        case .join:
            m = r.record().map { .join($0) }
        case .fullState:
            m = r.records().map { .fullState($0) }
        case .digest:
            guard let count = r.count(max: maxRecords) else { return nil }
            var entries: [DigestEntry] = []
            for _ in 0..<count {
                guard let n = r.string(), let s = r.byte().flatMap(MemberStatus.init(rawValue:)),
                      let inc = r.varint() else { return nil }
                entries.append(DigestEntry(name: n, status: s, incarnation: Incarnation(inc)))
            }
            m = .digest(entries)
        case .difference:
            guard let recs = r.records(), let count = r.count(max: maxRecords) else { return nil }
            var wanted: [String] = []
            for _ in 0..<count {
                guard let n = r.string() else { return nil }
                wanted.append(n)
            }
            m = .difference(records: recs, wanted: wanted)
        case .push:
            m = r.records().map { .push($0) }
        }
        return r.atEnd ? m : nil
    }

    // MARK: sizes

    static func varintSize(_ v: UInt64) -> Int { ByteWriter.varintSize(v) }

    static func stringSize(_ s: String) -> Int {
        let n = s.utf8.count
        return varintSize(UInt64(n)) + n
    }

    static func addressSize(_ a: Address) -> Int { stringSize(a.host) + 2 }
}

extension ByteWriter {
    mutating func address(_ a: Address) {
        string(a.host)
        byte(UInt8(a.port >> 8))
        byte(UInt8(a.port & 0xFF))
    }

    mutating func record(_ r: MemberRecord) {
        string(r.name); address(r.address); byte(r.status.rawValue); varint(r.incarnation.value); blob(r.metadata)
    }

    mutating func records(_ rs: [MemberRecord]) {
        varint(UInt64(rs.count))
        for r in rs { record(r) }
    }
}

extension ByteReader {
    mutating func seq() -> UInt32? {
        guard let v = varint(), v <= UInt64(UInt32.max) else { return nil }
        return UInt32(v)
    }

    mutating func address() -> Address? {
        guard let host = string(), let hi = byte(), let lo = byte() else { return nil }
        return Address(host: host, port: UInt16(hi) << 8 | UInt16(lo))
    }

    mutating func record() -> MemberRecord? {
        guard let n = string(), let a = address(), let s = byte().flatMap(MemberStatus.init(rawValue:)),
              let inc = varint(), let meta = blob(max: Codec.maxMetadataLength) else { return nil }
        return MemberRecord(name: n, address: a, status: s, incarnation: Incarnation(inc), metadata: meta)
    }

    mutating func records() -> [MemberRecord]? {
        guard let count = count(max: Codec.maxRecords) else { return nil }
        var out: [MemberRecord] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            guard let r = record() else { return nil }
            out.append(r)
        }
        return out
    }
}
