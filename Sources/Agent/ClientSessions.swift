import Primitives
import Raft

/// Exactly-once writes (the Raft dissertation's §6.3): a client tags each write with its id and
/// a sequence number (`X-Caravan-Write-ID: CLIENT/SEQ`); the state machine remembers the answers
/// to each client's recent writes, so a write retried after a timeout or a leader change is
/// applied once and the retry gets the first answer.
///
/// A client id starts with the client's creation time in Unix milliseconds (`MS-RANDOM`). The
/// agent that receives a write stamps it with its own clock; the state machine's clock is the
/// largest stamp applied so far, so every replica agrees on it. A session unused for
/// ``expiry`` is dropped, and so is the least recently used one when ``maxClients`` are kept;
/// either way the newest creation time of a dropped session becomes the watermark, and a write
/// from a client the state machine does not know whose creation time is at or below it is
/// refused (`session_expired`) — never applied a second time. A client retrying within its own
/// retry window (seconds) never meets that.
struct ClientSessions: Equatable {
    /// The command byte of a tagged write: `tag | client | seq | stamp (Unix ms) | command`.
    static let tag: UInt8 = 0xC0
    static let maxClients = 8192
    static let keptPerClient = 64
    static let maxClientBytes = 64
    /// Answers longer than this (long refusal texts) are kept cut.
    static let maxAnswerBytes = 160
    static let expiry: Int64 = 10 * 60 * 1000
    /// How far ahead of the state machine's clock a client's creation time may be.
    static let maxClockLead: Int64 = 60 * 1000
    /// The first byte of an answer that refuses a tagged write before it reaches the state
    /// machine: `refusal | code | message`.
    static let refusal: UInt8 = 2

    struct Session: Equatable {
        var answers: [UInt64: [UInt8]] = [:]
        /// The highest sequence number whose answer was let go (0: none yet).
        var forgottenThrough: UInt64 = 0
        var created: Int64 = 0
        var lastUsed: Int64 = 0
    }

    private(set) var sessions: [String: Session] = [:]
    /// The state machine's clock: the largest stamp applied (Unix ms).
    private(set) var now: Int64 = 0
    /// Clients created at or before this may have had a session that was dropped.
    private(set) var expiredThrough: Int64 = 0
    private var nextSweep: Int64 = 0

    enum Outcome: Equatable {
        /// Applied before: here is its answer.
        case duplicate([UInt8])
        /// Not applied, and not to be: (code, message).
        case refused(String, String)
        case new
    }

    static func wrap(client: String, seq: UInt64, stamp: Int64, _ command: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: command.count + client.utf8.count + 20)
        w.byte(tag)
        w.string(client)
        w.varint(seq)
        w.varint(UInt64(max(0, stamp)))
        w.raw(command)
        return w.bytes
    }

    static func unwrap(_ bytes: [UInt8]) -> (client: String, seq: UInt64, stamp: Int64, command: [UInt8])? {
        var r = ByteReader(bytes)
        guard r.byte() == tag, let client = r.string(max: maxClientBytes), parseClient(client) != nil, let seq = r.varint(), seq > 0,
              let stamp = r.varint(), stamp <= UInt64(Int64.max), let rest = r.raw(r.remaining), rest.first != tag else { return nil }
        return (client, seq, Int64(stamp), Array(rest))
    }

    /// A client id's creation time: `MS-RANDOM`, MS in Unix milliseconds, RANDOM 1–48 letters,
    /// digits, `-` or `_`.
    static func parseClient(_ client: String) -> Int64? {
        guard client.utf8.count <= maxClientBytes, let dash = client.firstIndex(of: "-") else { return nil }
        let ms = client[..<dash], rest = client[client.index(after: dash)...]
        guard (1...15).contains(ms.count), ms.allSatisfy({ $0.isASCII && $0.isNumber }), let t = Int64(ms), !rest.isEmpty,
              rest.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { return nil }
        return t
    }

    /// `CLIENT/SEQ` as the header carries it.
    static func parseHeader(_ value: String) -> (client: String, seq: UInt64)? {
        let parts = value.split(separator: "/", omittingEmptySubsequences: false)
        // Digits only (UInt64 would take "+5" too), no leading zero.
        guard parts.count == 2, parseClient(String(parts[0])) != nil, parts[1].first != "0",
              parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let seq = UInt64(parts[1]), seq > 0 else { return nil }
        return (String(parts[0]), seq)
    }

    /// Moves the clock and drops expired sessions (every 10 s of stamps, so a write costs
    /// O(1) most of the time).
    mutating func advance(to stamp: Int64) {
        now = max(now, stamp)
        guard now >= nextSweep else { return }
        nextSweep = now + 10_000
        for (client, s) in sessions where s.lastUsed < now - Self.expiry {
            expiredThrough = max(expiredThrough, s.created)
            sessions[client] = nil
        }
    }

    func outcome(client: String, seq: UInt64) -> Outcome {
        guard let created = Self.parseClient(client) else { return .refused("invalid_header", "malformed client id \(client)") }
        guard let s = sessions[client] else {
            if created > now + Self.maxClockLead {
                return .refused("invalid_header", "client id \(client) was made more than a minute in the future (check this machine's clock)")
            }
            if created <= expiredThrough {
                return .refused("session_expired", "the cluster no longer remembers client \(client)'s writes (idle for 10 minutes, or pushed out by newer clients): this write may or may not have been applied; start a new client to write again")
            }
            return .new
        }
        if let a = s.answers[seq] { return .duplicate(a) }
        if seq <= s.forgottenThrough {
            return .refused("write_forgotten", "write \(client)/\(seq) is older than the answers kept for its client: it may have been applied already and is not applied again")
        }
        return .new
    }

    mutating func record(client: String, seq: UInt64, answer: [UInt8]) {
        if sessions[client] == nil, sessions.count >= Self.maxClients {
            // The least recently used session goes (ties by id, so every replica agrees); the
            // watermark keeps its late retries from being applied again.
            if let (oldest, s) = sessions.min(by: { ($0.value.lastUsed, $0.key) < ($1.value.lastUsed, $1.key) }) {
                expiredThrough = max(expiredThrough, s.created)
                sessions[oldest] = nil
            }
        }
        var s = sessions[client] ?? Session(created: Self.parseClient(client) ?? 0)
        s.answers[seq] = Array(answer.prefix(Self.maxAnswerBytes))
        s.lastUsed = now
        while s.answers.count > Self.keptPerClient, let low = s.answers.keys.min() {
            s.answers[low] = nil
            s.forgottenThrough = max(s.forgottenThrough, low)
        }
        sessions[client] = s
    }

    static func refusalAnswer(_ code: String, _ message: String) -> [UInt8] {
        var w = ByteWriter()
        w.byte(refusal)
        w.string(code)
        w.string(message, max: 4096)
        return w.bytes
    }

    static func decodeRefusal(_ answer: [UInt8]) -> (code: String, message: String)? {
        var r = ByteReader(answer)
        guard r.byte() == refusal, let code = r.string(), let message = r.string(max: 4096), r.atEnd else { return nil }
        return (code, message)
    }

    // MARK: - Snapshot

    func encode() -> [UInt8] {
        var w = ByteWriter()
        w.varint(UInt64(now)); w.varint(UInt64(expiredThrough)); w.varint(UInt64(nextSweep))
        w.varint(UInt64(sessions.count))
        for (client, s) in sessions.sorted(by: { $0.key < $1.key }) {
            w.string(client)
            w.varint(s.forgottenThrough)
            w.varint(UInt64(s.created))
            w.varint(UInt64(s.lastUsed))
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
        func time() -> Int64? { r.varint().flatMap { $0 <= UInt64(Int64.max) ? Int64($0) : nil } }
        guard let now = time(), let expired = time(), let sweep = time(), let n = r.count(max: maxClients) else { return nil }
        var out = ClientSessions()
        out.now = now
        out.expiredThrough = expired
        out.nextSweep = sweep
        for _ in 0..<n {
            guard let client = r.string(max: maxClientBytes), let forgotten = r.varint(), let created = time(), let used = time(),
                  let k = r.count(max: keptPerClient) else { return nil }
            var s = Session(forgottenThrough: forgotten, created: created, lastUsed: used)
            for _ in 0..<k {
                guard let seq = r.varint(), let a = r.blob(max: maxAnswerBytes) else { return nil }
                s.answers[seq] = a
            }
            out.sessions[client] = s
        }
        return r.atEnd ? out : nil
    }
}
