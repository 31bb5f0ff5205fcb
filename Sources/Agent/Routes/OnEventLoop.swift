import HummingbirdCore
import Logging
import NIOCore

/// Serves each HTTP connection's requests on the event loop its socket belongs to.
///
/// Without it, every request crosses threads four times: the event loop hands the parsed
/// request to a task on Swift's shared pool, and that task hands each part of the answer back
/// to the event loop to be written. A task that prefers the loop's executor runs there instead,
/// so a request answered from memory never leaves the loop's thread, and one that waits for
/// Raft crosses only to the Raft thread and back (`Docs/benchmarks.md`, "API writes and reads").
/// Work a handler awaits on an actor still runs on that actor; only the handler's own code runs
/// here — and only for quick routes: ``AccessMiddleware`` moves every other handler to Swift's
/// shared pool (`AccessRules.quick`), so a slow one holds up no loop.
struct OnItsEventLoop<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await withTaskExecutorPreference(EventLoopTaskExecutor(value.channel.eventLoop)) {
            await base.handle(value: value, logger: logger)
        }
    }
}

/// A Swift concurrency task executor that runs jobs on one NIO event loop.
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let me = asUnownedTaskExecutor()
        loop.execute { job.runSynchronously(on: me) }
    }
}
