import Testing
import RaftSimulation

/// The checker itself must tell good histories from bad, or the simulation proves nothing.
@Suite struct LinearizabilityCheckerTests {
    typealias Op = LinearizabilityChecker.Op
    static func ms(_ n: Int) -> Duration { .milliseconds(n) }

    @Test func sequentialWritesAndReadsAreLinearizable() {
        let h = [Op(kind: .write("a"), call: Self.ms(0), ret: Self.ms(1)),
                 Op(kind: .read("a"), call: Self.ms(2), ret: Self.ms(3)),
                 Op(kind: .write("b"), call: Self.ms(4), ret: Self.ms(5)),
                 Op(kind: .read("b"), call: Self.ms(6), ret: Self.ms(7))]
        #expect(LinearizabilityChecker.isLinearizable(h))
    }

    @Test func aStaleReadAfterAnAcknowledgedWriteIsNot() {
        let h = [Op(kind: .write("a"), call: Self.ms(0), ret: Self.ms(1)),
                 Op(kind: .write("b"), call: Self.ms(2), ret: Self.ms(3)),
                 Op(kind: .read("a"), call: Self.ms(4), ret: Self.ms(5))]
        #expect(!LinearizabilityChecker.isLinearizable(h))
    }

    @Test func concurrentOperationsMayOrderEitherWay() {
        let h = [Op(kind: .write("a"), call: Self.ms(0), ret: Self.ms(10)),
                 Op(kind: .read(nil), call: Self.ms(1), ret: Self.ms(2)),
                 Op(kind: .read("a"), call: Self.ms(3), ret: Self.ms(4))]
        #expect(LinearizabilityChecker.isLinearizable(h))
    }

    @Test func aReadCannotGoBackAfterSeeingANewerValue() {
        let h = [Op(kind: .write("a"), call: Self.ms(0), ret: Self.ms(10)),
                 Op(kind: .read("a"), call: Self.ms(1), ret: Self.ms(2)),
                 Op(kind: .read(nil), call: Self.ms(3), ret: Self.ms(4))]
        #expect(!LinearizabilityChecker.isLinearizable(h))
    }

    @Test func aWriteWithUnknownOutcomeMayTakeEffectLateOrNever() {
        let late = [Op(kind: .write("x"), call: Self.ms(0), ret: nil),
                    Op(kind: .read(nil), call: Self.ms(1), ret: Self.ms(2)),
                    Op(kind: .read("x"), call: Self.ms(50), ret: Self.ms(51))]
        #expect(LinearizabilityChecker.isLinearizable(late))
        let never = [Op(kind: .write("x"), call: Self.ms(0), ret: nil),
                     Op(kind: .read(nil), call: Self.ms(50), ret: Self.ms(51))]
        #expect(LinearizabilityChecker.isLinearizable(never))
        let beforeCall = [Op(kind: .read("x"), call: Self.ms(0), ret: Self.ms(1)),
                          Op(kind: .write("x"), call: Self.ms(5), ret: nil)]
        #expect(!LinearizabilityChecker.isLinearizable(beforeCall))
    }
}
