import Foundation
import CaravanTesting
import PropertyBased
import Testing
@testable import Gossip

@Suite struct CodecTests {
    /// Random values from a seed, so property inputs stay simple (a seed) and shrink well.
    struct Maker {
        var r: SeededRandom
        init(_ seed: UInt64) { r = SeededRandom(seed: seed) }
        mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &r) }
        mutating func name() -> String {
            let chars = Array("abcxyz019-é.")
            return String((0..<int(0...20)).map { _ in chars[int(0...chars.count - 1)] })
        }
        mutating func address() -> Address { Address(host: name() + "h", port: UInt16.random(in: 0...UInt16.max, using: &r)) }
        mutating func inc() -> Incarnation { Incarnation(int(0...3) == 0 ? UInt64.max - UInt64(int(0...9)) : UInt64(int(0...100_000))) }
        mutating func seq() -> UInt32 { UInt32.random(in: 0...UInt32.max, using: &r) }
        mutating func bytes() -> [UInt8] { (0..<int(0...64)).map { _ in UInt8.random(in: 0...255, using: &r) } }
        mutating func message() -> Message {
            switch int(0...7) {
            case 0: .ping(seq: seq(), target: name())
            case 1: .pingReq(seq: seq(), target: name(), address: address())
            case 2: .ack(seq: seq())
            case 3: .nack(seq: seq())
            case 4: .alive(name: name(), address: address(), incarnation: inc(), metadata: bytes())
            case 5: .suspect(name: name(), incarnation: inc(), from: name(), refused: int(0...1) == 1)
            case 6: .dead(name: name(), incarnation: inc(), from: name())
            default: .left(name: name(), incarnation: inc())
            }
        }
        mutating func record() -> MemberRecord {
            MemberRecord(name: name(), address: address(), status: MemberStatus(rawValue: UInt8(int(0...3)))!,
                         incarnation: inc(), metadata: bytes())
        }
    }

    @Test func packetsRoundTripAndSizesAreExact() async {
        await propertyCheck(count: 500, input: Gen.uint64()) { seed in
            var mk = Maker(seed)
            let messages = (0..<mk.int(0...8)).map { _ in mk.message() }
            let bytes = Codec.encodePacket(messages)
            #expect(Codec.decodePacket(bytes) == messages)
            #expect(bytes.count == 1 + messages.reduce(0) { $0 + Codec.size(of: $1) })
        }
    }

    @Test func streamMessagesRoundTrip() async {
        await propertyCheck(count: 300, input: Gen.uint64()) { seed in
            var mk = Maker(seed)
            let records = (0..<mk.int(0...6)).map { _ in mk.record() }
            let wanted = (0..<mk.int(0...4)).map { _ in mk.name() }
            let all: [StreamMessage] = [
                .join(records.first ?? MemberRecord(name: "a", address: Address(host: "h", port: 1), status: .alive, incarnation: .zero, metadata: [])),
                .fullState(records),
                .digest(records.map { DigestEntry(name: $0.name, status: $0.status, incarnation: $0.incarnation) }),
                .difference(records: records, wanted: wanted),
                .push(records),
            ]
            for m in all { #expect(Codec.decodeStream(Codec.encodeStream(m)) == m) }
        }
    }

    @Test func decodersAreTotalOnArbitraryBytes() async {
        await propertyCheck(count: 3000, input: Gen.uint8().array(of: 0...200)) { raw in
            var b = raw
            if b.count > 1 && b[0] & 1 == 0 { b[0] = Codec.version }
            _ = Codec.decodePacket(b)
            _ = Codec.decodeStream(b)
        }
    }

    @Test func truncatedPacketsAreRejectedNotMisread() {
        let full = Codec.encodePacket([.alive(name: "node-1", address: Address(host: "127.0.0.2", port: 4682),
                                              incarnation: Incarnation(9), metadata: [1, 2, 3])])
        for cut in 2..<full.count {
            #expect(Codec.decodePacket(Array(full.prefix(cut))) == nil)
        }
    }

    @Test func hugeLengthPrefixesAreRejected() {
        // A record count claiming more items than bytes follow.
        #expect(Codec.decodeStream([Codec.version, 0x11, 0xFF, 0xFF, 0x03]) == nil)
        // A name length past the end.
        #expect(Codec.decodePacket([Codec.version, 1, 0x01, 0x7F, 0x61]) == nil)
    }

    /// Crashers and odd inputs found while fuzzing are kept here and replayed.
    static let corpus: [[UInt8]] = [
        [], [1], [1, 0], [1, 9], [1, 5, 0x80], [1, 5, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        [1, 6, 1, 0x61, 0, 1, 0x62, 7], [1, 0x12, 0x01, 0x00, 0x09, 0x00], [1, 0x13, 0x00, 0xFF],
    ]

    /// Every file the fuzzer keeps (seeds and crashers) under Fuzz/corpus decodes without trapping.
    @Test func fuzzCorpusReplays() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus")
        var count = 0
        for target in ["packet", "stream", "sealed"] {
            let dir = root.appendingPathComponent(target)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] {
                let bytes = Array(try Data(contentsOf: dir.appendingPathComponent(name)))
                // The targets' own checks (sealed inputs are replayed unopened: no key here).
                GossipFuzzing.packet(bytes)
                GossipFuzzing.stream(bytes)
                count += 1
            }
        }
        #expect(count >= 6)
    }

    @Test(arguments: corpus) func corpusReplays(bytes: [UInt8]) {
        _ = Codec.decodePacket(bytes)
        _ = Codec.decodeStream(bytes)
    }
}
