import Framing
import Hummingbird
import NIOCore
import Synchronization

/// The caps an agent enforces on what callers may make it hold, each refused with 429 and a
/// message naming the limit (`Docs/security.md` lists them). Counts of stored things (jobs,
/// variables) are checked against this agent's copy of the state before the write is proposed;
/// the replicated state itself never refuses on them, so agents of different versions agree.
public struct ClusterLimits: Sendable, Equatable {
    /// Jobs registered (all namespaces). A new job past it is refused; updating one is not.
    public var maxJobs = 50_000
    /// Variables, and the bytes of their paths and values together.
    public var maxVariables = 100_000
    public var maxVariableBytes = 256 << 20
    /// Concurrent exec sessions (one-shot and interactive) this agent runs.
    public var maxExecSessions = 64
    /// Concurrent log follows this agent serves.
    public var maxLogFollows = 512
    /// The longest a blocking read waits (`?wait` beyond it, however large, means this).
    public var maxQueryWait: Duration = .seconds(600)

    public init() {}
}

/// A count of things in progress with a ceiling: `acquire` fails when it is reached.
final class ConcurrencyLimit: Sendable {
    let limit: Int
    let what: String
    private let inUse = Atomic<Int>(0)

    init(_ limit: Int, _ what: String) {
        self.limit = limit
        self.what = what
    }

    var current: Int { inUse.load(ordering: .relaxed) }

    /// Takes a slot, or throws 429 naming the limit.
    func acquire() throws {
        let n = inUse.add(1, ordering: .acquiringAndReleasing).newValue
        guard n <= limit else {
            inUse.subtract(1, ordering: .acquiringAndReleasing)
            throw APIError(.tooManyRequests, "limit_reached", "this agent already runs \(limit) \(what), its limit; try again when one ends")
        }
    }

    func release() { inUse.subtract(1, ordering: .acquiringAndReleasing) }

    /// Takes a slot held until the returned token is gone. A streamed answer captures the token
    /// in its body: the slot is freed when the answer is done with, whether or not the body ever
    /// ran (it does not when the client is gone before the head is written); `whenDropped` runs
    /// then if the body never took the token over (to stop what the body would have stopped).
    func hold(whenDropped: (@Sendable () -> Void)? = nil) throws -> Slot {
        try acquire()
        return Slot(limit: self, whenDropped: whenDropped)
    }

    final class Slot: Sendable {
        let limit: ConcurrencyLimit
        let whenDropped: (@Sendable () -> Void)?
        private let used = Atomic<Bool>(false)
        init(limit: ConcurrencyLimit, whenDropped: (@Sendable () -> Void)?) {
            self.limit = limit
            self.whenDropped = whenDropped
        }
        /// The body took over (it ends what it started itself); `whenDropped` will not run.
        func take() { used.store(true, ordering: .releasing) }
        deinit {
            if !used.load(ordering: .acquiring) { whenDropped?() }
            limit.release()
        }
    }
}

/// Open HTTP connections per remote address and in all; past either, a new connection is closed
/// at once (before any request is read), so one client cannot use up the agent's descriptors.
final class HTTPConnectionCounter: Sendable {
    private let counts = Mutex(ConnectionCounts(maxPerAddress: 512, maxTotal: 4096))

    func admit(_ address: String) -> Bool { counts.withLock { $0.admit(address) } }
    func leave(_ address: String) { counts.withLock { $0.leave(address) } }
}

/// The first handler of every HTTP connection: counts it in, or closes it.
final class HTTPConnectionGate: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    let counter: HTTPConnectionCounter
    var address: String?

    init(counter: HTTPConnectionCounter) { self.counter = counter }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { admit(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        admit(context)
        context.fireChannelActive()
    }

    private func admit(_ context: ChannelHandlerContext) {
        guard address == nil else { return }
        let remote = context.remoteAddress?.ipAddress ?? "?"
        if counter.admit(remote) { address = remote } else { context.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let a = address { counter.leave(a); address = nil }
        context.fireChannelInactive()
    }
}
