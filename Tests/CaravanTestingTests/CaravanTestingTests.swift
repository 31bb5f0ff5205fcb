import CaravanTesting
import Testing

@Suite struct CaravanTestingTests {
    @Test func theSameSeedGivesTheSameSequence() {
        var a = SeededRandom(seed: 5), b = SeededRandom(seed: 5), c = SeededRandom(seed: 6)
        let x = (0..<10).map { _ in a.next() }
        #expect(x == (0..<10).map { _ in b.next() })
        #expect(x != (0..<10).map { _ in c.next() })
    }

    @Test func networkDropsAcrossPartitionsAndToCrashedNodes() {
        var net = SimulatedNetwork<Int, String>(seed: 1)
        net.partition([[1]])
        net.send("x", from: 1, to: 2, now: .zero)
        net.heal()
        net.crash(3)
        net.send("y", from: 1, to: 3, now: .zero)
        net.send("z", from: 1, to: 2, now: .zero)
        #expect(net.nextDelivery(upTo: .seconds(1))?.message == "z")
        #expect(net.nextDelivery(upTo: .seconds(1)) == nil)
        #expect(net.dropped == 2)
    }

    @Test func lossIsRoughlyTheConfiguredRate() {
        var net = SimulatedNetwork<Int, Int>(seed: 2, faults: .init(loss: 0.1))
        for i in 0..<10_000 { net.send(i, from: 0, to: 1, now: .zero) }
        #expect((800...1200).contains(net.dropped))
    }

    @Test func deliveriesComeInTimeOrder() {
        var net = SimulatedNetwork<Int, Int>(seed: 3, faults: .init(latency: .milliseconds(1) ... .milliseconds(50)))
        for i in 0..<100 { net.send(i, from: 0, to: 1, now: .zero) }
        var last = Duration.zero
        while let d = net.nextDelivery(upTo: .seconds(1)) {
            #expect(d.at >= last)
            last = d.at
        }
    }

    @Test func manualClockWakesSleepersInOrder() async throws {
        let clock = ManualClock()
        let task = Task { try await clock.sleep(until: clock.now.advanced(by: .seconds(5)), tolerance: nil); return clock.now }
        while clock.sleeperCount == 0 { await Task.yield() }
        clock.advance(by: .seconds(4))
        #expect(clock.sleeperCount == 1)
        clock.advance(by: .seconds(1))
        #expect(try await task.value.offset == .seconds(5))
    }
}
