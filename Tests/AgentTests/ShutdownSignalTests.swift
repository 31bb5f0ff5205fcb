import Synchronization
import Testing
@testable import Agent

@Suite struct ShutdownSignalTests {
    @Test func anOperationEndsWhenTheSignalIsSetAndNotOtherwise() async throws {
        let signal = ShutdownSignal()
        // Finishes first: its value, and the watcher of the signal goes away (no hang).
        let quick = try await signal.unlessTriggered { 42 }
        #expect(quick == 42)
        // Still waiting when the signal is set: nil, at once.
        let start = ContinuousClock.now
        let slow = Task { try await signal.unlessTriggered { try await Task.sleep(for: .seconds(60)); return 1 } }
        try await Task.sleep(for: .milliseconds(50))
        let ran = Atomic(0)
        _ = signal.onTrigger { ran.add(1, ordering: .relaxed) }
        let cancelled = signal.onTrigger { ran.add(100, ordering: .relaxed) }
        cancelled.cancelled()
        signal.trigger()
        signal.trigger()
        #expect(try await slow.value == nil)
        // Well before the operation's own minute (a loaded test run may take a few seconds).
        #expect(ContinuousClock.now - start < .seconds(45))
        let count = ran.load(ordering: .relaxed)
        #expect(count == 1)
        // After it is set: nothing runs, handlers run at once.
        #expect(try await signal.unlessTriggered { 7 } == nil)
        let late = Atomic(false)
        _ = signal.onTrigger { late.store(true, ordering: .relaxed) }
        let wasRun = late.load(ordering: .relaxed)
        #expect(wasRun)
        await signal.wait()
    }
}
