import Primitives
import Raft

/// Exactly-once writes (the Raft dissertation's §6.3): a client tags each write with its id and
/// a sequence number (`X-Caravan-Write-ID: CLIENT/SEQ`); the state machine remembers the answers
/// to each client's recent writes, so a write retried after a timeout or a leader change is
/// applied once and the retry gets the first answer.
///
/// Part of the replicated state (every replica makes the same decisions, and snapshots carry
/// it). Bounded: the newest ``keptPerClient`` answers per client, and the ``maxClients`` clients
/// that wrote most recently; an older write retried is refused, never applied twice.
struct ClientSessions: Equatable {
    /// The command byte of a tagged write: `tag | client (string) | seq (varint) | command`.
    static let tag: UInt8 = 0xC0
    static let maxClients = 4096
    static let keptPerClient = 64
    static let maxClientBytes = 64

    struct Session: Equatable {
        var answers: [UInt64: [UInt8]] = [:]
        /// The highest sequence number whose answer was let go (0: none yet).
        var forgottenThrough: UInt64 = 0
        var lastUsed: LogIndex = 0
    }

    private(set) var sessions: [String: Session] = [:]

    enum Outcome: Equatable {
        /// Applied before: here is its answer.
        case duplicate([UInt8])
        /// Too old to know: it may have been applied, so it must not be applied again.
        case forgotten
        case new
    }

    static func wrap(client: String, seq: UInt64, _ command: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: command.count + client.utf8.count + 12)
        w.byte(tag)
        w.string(client)
        w.varint(seq)
        w.raw(command)
        return w.bytes
    }

    static func unwrap(_ bytes: [UInt8]) -> (client: String, seq: UInt64, command: [UInt8])? {
        var r = ByteReader(bytes)
        guard r.byte() == tag, let client = r.string(max: maxClientBytes), !client.isEmpty, let seq = r.varint(), seq > 0,
              let rest = r.raw(r.remaining) else { return nil }
        return (client, seq, Array(rest))
    }

    /// `CLIENT/SEQ` as the header carries it: a client id of 1–64 letters, digits, `-` or `_`,
    /// and a sequence number ≥ 1.
    static func parseHeader(_ value: String) -> (client: String, seq: UInt64)? {
        let parts = value.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...maxClientBytes).contains(parts[0].utf8.count),
              parts[0].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }),
              let seq = UInt64(parts[1]), seq > 0 else { return nil }
        return (String(parts[0]), seq)
    }

    func outcome(client: String, seq: UInt64) -> Outcome {
        guard let s = sessions[client] else { return .new }
        if let a = s.answers[seq] { return .duplicate(a) }
        return seq <= s.forgottenThrough ? .forgotten : .new
    }

    mutating func record(client: String, seq: UInt64, answer: [UInt8], index: LogIndex) {
        if sessions[client] == nil, sessions.count >= Self.maxClients {
            // The client that wrote least recently goes (ties by id, so every replica agrees).
            if let oldest = sessions.min(by: { ($0.value.lastUsed, $0.key) < ($1.value.lastUsed, $1.key) })?.key {
                sessions[oldest] = nil
            }
        }
        var s = sessions[client] ?? Session()
        s.answers[seq] = answer
        s.lastUsed = index
        while s.answers.count > Self.keptPerClient, let low = s.answers.keys.min() {
            s.answers[low] = nil
            s.forgottenThrough = max(s.forgottenThrough, low)
        }
        sessions[client] = s
    }

    // MARK: - Snapshot

    func encode() -> [UInt8] {
        var w = ByteWriter()
        w.varint(UInt64(sessions.count))
        for (client, s) in sessions.sorted(by: { $0.key < $1.key }) {
            w.string(client)
            w.varint(s.forgottenThrough)
            w.varint(s.lastUsed)
            w.varint(UInt64(s.answers.count))
            for (seq, a) in s.answers.sorted(by: { $0.key < $1.key }) {
                w.varint(seq)
                w.blob(a)
            }
        }
        return w.bytes
    }

    static func decode(_ bytes: [UInt8]) -> ClientSessions? {
        var r = ByteReader(bytes)
        guard let n = r.count(max: maxClients) else { return nil }
        var out = ClientSessions()
        for _ in 0..<n {
            guard let client = r.string(max: maxClientBytes), let forgotten = r.varint(), let used = r.varint(),
                  let k = r.count(max: keptPerClient) else { return nil }
            var s = Session(forgottenThrough: forgotten, lastUsed: used)
            for _ in 0..<k {
                guard let seq = r.varint(), let a = r.blob(max: 1 << 20) else { return nil }
                s.answers[seq] = a
            }
            out.sessions[client] = s
        }
        return r.atEnd ? out : nil
    }
}
