import CaravanTesting
import PropertyBased
import Testing
@testable import Raft

/// The Raft wire and disk format: everything round-trips, garbage is refused without a trap.
@Suite struct CodecTests {
    struct Maker {
        var r: SeededRandom
        init(_ seed: UInt64) { r = SeededRandom(seed: seed) }
        mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &r) }
        mutating func u64() -> UInt64 { UInt64.random(in: 0...UInt64.max >> UInt64(int(0...63)), using: &r) }
        /// An index, term or commit: the codec's whole domain (up to ``RaftCodec/maxIndex``).
        mutating func idx() -> UInt64 { UInt64.random(in: 0...RaftCodec.maxIndex >> UInt64(int(0...61)), using: &r) }
        mutating func bool() -> Bool { int(0...1) == 1 }
        mutating func id() -> ServerID { ServerID("s\(int(0...999))") }
        mutating func bytes() -> [UInt8] { (0..<int(0...40)).map { _ in UInt8(int(0...255)) } }
        mutating func config() -> Configuration {
            Configuration(servers: (0..<int(0...5)).map { i in .init(id: ServerID("s\(i)"), address: "127.0.0.\(i):4681", voter: bool()) })
        }
        mutating func body() -> Message.Body {
            switch int(0...9) {
            case 0: return .vote(lastIndex: idx(), lastTerm: idx(), preVote: bool(), transfer: bool())
            case 1: return .voteResponse(granted: bool(), preVote: bool())
            case 2:
                let prev = UInt64(int(0...1_000_000))
                let kinds: [Entry.Kind] = [.command, .empty, .configuration]
                let entries = (0..<int(0...5)).map { k in
                    Entry(term: idx(), index: prev + UInt64(k) + 1, kind: kinds[int(0...2)], data: bytes())
                }
                return .append(prevIndex: prev, prevTerm: idx(), entries: entries, commit: idx())
            case 3: return .appendResponse(success: bool(), index: idx(), hintIndex: idx(), hintTerm: idx())
            case 4: return .heartbeat(commit: idx(), context: u64())
            case 5: return .heartbeatResponse(context: u64())
            case 6: return .snapshot(Snapshot(metadata: SnapshotMetadata(index: idx(), term: idx(), configuration: config()), data: bytes()))
            case 7: return .readIndex(context: u64())
            case 8: return .readIndexResponse(context: u64(), index: idx())
            default: return .timeoutNow
            }
        }
    }

    @Test func messagesRoundTrip() async {
        await propertyCheck(count: 2000, input: Gen.uint64()) { seed in
            var mk = Maker(seed)
            let m = Message(from: mk.id(), to: mk.id(), term: mk.idx(), body: mk.body())
            #expect(RaftCodec.decodeMessage(RaftCodec.encode(m)) == m)
        }
    }

    @Test func hardStateAndConfigurationRoundTrip() async {
        await propertyCheck(count: 500, input: Gen.uint64()) { seed in
            var mk = Maker(seed)
            let h = HardState(term: mk.idx(), vote: mk.bool() ? mk.id() : nil, commit: mk.idx())
            #expect(RaftCodec.decodeHardState(RaftCodec.encode(h)) == h)
            let c = mk.config()
            #expect(ConfigurationCodec.decode(ConfigurationCodec.encode(c)) == c)
        }
    }

    @Test func decodersAreTotalOnArbitraryBytes() async {
        await propertyCheck(count: 5000, input: Gen.uint8().array(of: 0...120)) { raw in
            _ = RaftCodec.decodeMessage(raw)
            _ = RaftCodec.decodeHardState(raw)
            _ = ConfigurationCodec.decode(raw)
        }
    }

    @Test func truncatedOrExtendedMessagesAreRefused() {
        let m = Message(from: "a", to: "b", term: 7, body: .append(prevIndex: 4, prevTerm: 3,
                        entries: [Entry(term: 7, index: 5, data: [1, 2, 3])], commit: 4))
        let full = RaftCodec.encode(m)
        for cut in 0..<full.count { #expect(RaftCodec.decodeMessage(Array(full.prefix(cut))) == nil) }
        #expect(RaftCodec.decodeMessage(full + [0]) == nil)
    }

    @Test func entriesOutOfSequenceInAnAppendAreRefused() {
        let m = Message(from: "a", to: "b", term: 7, body: .append(prevIndex: 4, prevTerm: 3,
                        entries: [Entry(term: 7, index: 9, data: [])], commit: 4))
        #expect(RaftCodec.decodeMessage(RaftCodec.encode(m)) == nil)
    }

    /// Indexes and terms off the wire are bounded: a frame with `prevIndex = UInt64.max` (which
    /// once trapped the agent on `prevIndex + 1`) is refused, and so is every huge field; a core
    /// fed the largest values the codec allows does not trap either.
    @Test func hugeIndexesAreRefusedAndTheLargestAllowedDoNotTrap() {
        let huge = UInt64.max
        let bad: [Message.Body] = [
            .append(prevIndex: huge, prevTerm: 1, entries: [Entry(term: 1, index: 0, data: [])], commit: 0),
            .append(prevIndex: 1, prevTerm: huge, entries: [], commit: 0), .append(prevIndex: 1, prevTerm: 1, entries: [], commit: huge),
            .vote(lastIndex: huge, lastTerm: 1, preVote: false, transfer: false), .appendResponse(success: true, index: huge, hintIndex: 0, hintTerm: 0),
            .heartbeat(commit: huge, context: 1), .readIndexResponse(context: 1, index: huge),
        ]
        for body in bad {
            #expect(RaftCodec.decodeMessage(RaftCodec.encode(Message(from: "a", to: "n1", term: 1, body: body))) == nil, "\(body)")
        }
        #expect(RaftCodec.decodeMessage(RaftCodec.encode(Message(from: "a", to: "n1", term: huge, body: .heartbeat(commit: 0, context: 0)))) == nil)
        // The largest allowed, stepped into a core as any peer could send them.
        let max = RaftCodec.maxIndex
        var c = CoreTests.cluster(3)
        CoreTests.elect(&c, "n1")
        for body in [Message.Body.append(prevIndex: max, prevTerm: max, entries: [Entry(term: max, index: max + 1, data: [])], commit: max),
                     .appendResponse(success: true, index: max, hintIndex: max, hintTerm: max), .appendResponse(success: false, index: max, hintIndex: max, hintTerm: max),
                     .heartbeat(commit: max, context: max), .vote(lastIndex: max, lastTerm: max, preVote: true, transfer: false),
                     .readIndexResponse(context: 1, index: max)] {
            let m = Message(from: "n2", to: "n1", term: 2, body: body)
            guard let decoded = RaftCodec.decodeMessage(RaftCodec.encode(m)) else { continue }
            c["n1"]!.step(decoded)
            CoreTests.settle(&c)
        }
    }
}
