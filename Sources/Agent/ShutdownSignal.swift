import API
import HTTPTypes
import Synchronization

/// Set once when the agent starts to shut down (SIGTERM, SIGINT or a leave). Everything that
/// can hold a request open for long — blocking reads, log follows, exec streams, relays of
/// either — watches it and ends at once, so the HTTP server's graceful stop never waits on a
/// client.
public final class ShutdownSignal: Sendable {
    private struct State {
        var triggered = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var handlers: [UInt64: @Sendable () -> Void] = [:]
        var nextHandler: UInt64 = 0
    }
    private let state = Mutex(State())

    public init() {}

    public var isTriggered: Bool { state.withLock { $0.triggered } }

    /// Sets the signal (once); wakes every waiter and runs every registered handler.
    public func trigger() {
        let (waiters, handlers) = state.withLock { s -> ([CheckedContinuation<Void, Never>], [@Sendable () -> Void]) in
            guard !s.triggered else { return ([], []) }
            s.triggered = true
            defer { s.waiters = [:]; s.handlers = [:] }
            return (Array(s.waiters.values), Array(s.handlers.values))
        }
        for w in waiters { w.resume() }
        for h in handlers { h() }
    }

    /// Returns once the signal is set (at once if it already is), or when the task is cancelled.
    public func wait() async {
        let id = state.withLock { s -> UInt64 in
            s.nextHandler += 1
            return s.nextHandler
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.triggered || Task.isCancelled { return true }
                    s.waiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    /// Runs `handler` when the signal is set (at once if it already is) until the returned
    /// registration is cancelled.
    public func onTrigger(_ handler: @escaping @Sendable () -> Void) -> Registration {
        let id = state.withLock { s -> UInt64? in
            if s.triggered { return nil }
            s.nextHandler += 1
            s.handlers[s.nextHandler] = handler
            return s.nextHandler
        }
        guard let id else {
            handler()
            return Registration(cancel: {})
        }
        return Registration(cancel: { [weak self] in _ = self?.state.withLock { $0.handlers.removeValue(forKey: id) } })
    }

    public struct Registration: Sendable {
        let cancel: @Sendable () -> Void
        public func cancelled() { cancel() }
    }

    /// Runs `operation` until it ends or the signal is set, whichever comes first; nil in the
    /// latter case (the operation is cancelled).
    public func unlessTriggered<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T? {
        if isTriggered { return nil }
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                await self.wait()
                return nil
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}

extension StreamEnd {
    /// The trailer that ends a streamed answer because the agent is shutting down.
    static var shutdownTrailers: HTTPFields { [HTTPField.Name(header)!: shutdown] }
    /// The trailer that ends a quiet log follow (the client asks again from where it was).
    static var idleTrailers: HTTPFields { [HTTPField.Name(header)!: idle] }
    /// How long a log follow may go without output before it is ended that way.
    static let followIdle: Duration = .seconds(30)
}
