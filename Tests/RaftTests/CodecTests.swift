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
        mutating func bool() -> Bool { int(0...1) == 1 }
        mutating func id() -> ServerID { ServerID("s\(int(0...999))") }
        mutating func bytes() -> [UInt8] { (0..<int(0...40)).map { _ in UInt8(int(0...255)) } }
        mutating func config() -> Configuration {
            Configuration(servers: (0..<int(0...5)).map { i in .init(id: ServerID("s\(i)"), address: "127.0.0.\(i):4681", voter: bool()) })
        }
        mutating func body() -> Message.Body {
            switch int(0...9) {
            case 0: return .vote(lastIndex: u64(), lastTerm: u64(), preVote: bool(), transfer: bool())
            case 1: return .voteResponse(granted: bool(), preVote: bool())
            case 2:
                let prev = UInt64(int(0...1_000_000))
                let kinds: [Entry.Kind] = [.command, .empty, .configuration]
                let entries = (0..<int(0...5)).map { k in
                    Entry(term: u64(), index: prev + UInt64(k) + 1, kind: kinds[int(0...2)], data: bytes())
                }
                return .append(prevIndex: prev, prevTerm: u64(), entries: entries, commit: u64())
            case 3: return .appendResponse(success: bool(), index: u64(), hintIndex: u64(), hintTerm: u64())
            case 4: return .heartbeat(commit: u64(), context: u64())
            case 5: return .heartbeatResponse(context: u64())
            case 6: return .snapshot(Snapshot(metadata: SnapshotMetadata(index: u64(), term: u64(), configuration: config()), data: bytes()))
            case 7: return .readIndex(context: u64())
            case 8: return .readIndexResponse(context: u64(), index: u64())
            default: return .timeoutNow
            }
        }
    }

    @Test func messagesRoundTrip() async {
        await propertyCheck(count: 2000, input: Gen.uint64()) { seed in
            var mk = Maker(seed)
            let m = Message(from: mk.id(), to: mk.id(), term: mk.u64(), body: mk.body())
            #expect(RaftCodec.decodeMessage(RaftCodec.encode(m)) == m)
        }
    }

    @Test func hardStateAndConfigurationRoundTrip() async {
        await propertyCheck(count: 500, input: Gen.uint64()) { seed in
            var mk = Maker(seed)
            let h = HardState(term: mk.u64(), vote: mk.bool() ? mk.id() : nil, commit: mk.u64())
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
}
