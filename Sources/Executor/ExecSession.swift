import CUV
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// What to start for an interactive command in a task: a program, its argv and environment,
/// and where (`TaskDriver.interactiveCommand`).
public struct InteractiveCommand: Sendable {
    public var path: String
    public var arguments: [String]
    public var environment: [String]
    public var directory: String?
}

/// An interactive command running in a task (`caravan alloc exec -i [-t]`): input goes to its
/// stdin, its output comes back as it is written, and its exit status at the end.
///
/// With a terminal, the command runs on a new pseudo-terminal (its controlling terminal, in a
/// session of its own): input and output are the pty's master, and the terminal can be resized.
/// Without, stdin, stdout and stderr are pipes. Reads and writes block on threads of their own
/// (Dispatch), never on the agent's cooperative pool.
public final class ExecSession: Sendable {
    public enum Output: UInt8, Sendable { case stdout = 1, stderr = 2 }

    public let pid: Int32
    public let tty: Bool
    /// The pty master (terminal), or the write end of stdin's pipe.
    private let input: Int32
    private let outputs: [(Output, Int32)]
    private let exit: ExitLatch
    private let inputOpen = Atomic<Bool>(true)
    private let reading = Atomic<Bool>(false)
    private let writer = DispatchQueue(label: "caravan.exec.input")

    private init(pid: Int32, tty: Bool, input: Int32, outputs: [(Output, Int32)], exit: ExitLatch) {
        self.pid = pid
        self.tty = tty
        self.input = input
        self.outputs = outputs
        self.exit = exit
    }

    static func start(_ command: InteractiveCommand, tty: Bool, rows: UInt16 = 24, columns: UInt16 = 80) async throws(DriverError) -> ExecSession {
        var spec = SpawnSpec(path: command.path, arguments: command.arguments, environment: command.environment,
                             workingDirectory: command.directory)
        let exit = ExitLatch()
        if tty {
            var master: Int32 = -1
            var name = [CChar](repeating: 0, count: 256)
            let rc = caravan_openpty(&master, &name, name.count)
            guard rc == 0 else { throw DriverError("cannot open a terminal: \(String(cString: strerror(-rc)))") }
            _ = caravan_set_winsize(master, rows, columns)
            spec.terminal = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let pid: Int32
            do { pid = try await ProcessSupervisor.shared.spawn(spec) { exit.finish($0) } } catch {
                close(master)
                throw DriverError(error.description)
            }
            return ExecSession(pid: pid, tty: true, input: master, outputs: [(.stdout, master)], exit: exit)
        }
        var fds = [Int32](repeating: -1, count: 6)
        for i in stride(from: 0, to: 6, by: 2) {
            guard fds.withUnsafeMutableBufferPointer({ caravan_pipe_cloexec($0.baseAddress! + i) }) == 0 else {
                for fd in fds where fd >= 0 { close(fd) }
                throw DriverError("cannot create pipes: \(String(cString: strerror(errno)))")
            }
        }
        // [0] stdin read, [1] stdin write, [2] stdout read, [3] stdout write, [4] stderr read, [5] stderr write.
        spec.stdinFD = fds[0]
        spec.stdoutFD = fds[3]
        spec.stderrFD = fds[5]
        let pid: Int32
        do { pid = try await ProcessSupervisor.shared.spawn(spec) { exit.finish($0) } } catch {
            for fd in fds { close(fd) }
            throw DriverError(error.description)
        }
        close(fds[0]); close(fds[3]); close(fds[5])
        return ExecSession(pid: pid, tty: false, input: fds[1], outputs: [(.stdout, fds[2]), (.stderr, fds[4])], exit: exit)
    }

    /// How many chunks (of up to 16 KiB) may wait for a slow client; then the readers stop
    /// reading, the pipe or terminal fills and the command blocks on its writes.
    public static let bufferedChunks = 64

    /// Everything the command writes, as it comes, until it (and whatever holds its output) is
    /// done — with an empty stdout chunk every 5 s as a heartbeat. At most `bufferedChunks`
    /// chunks wait for the consumer (back-pressure, not memory); once the consumer stops
    /// iterating, the readers stop too.
    public func output() -> ExecOutput {
        reading.store(true, ordering: .releasing)
        let (stream, continuation) = AsyncStream<(Output, [UInt8])>.makeStream()
        // Created at 0 and filled by signals: libdispatch traps when a semaphore is freed below
        // its initial value, which it would be whenever the consumer leaves with chunks unread.
        let credits = DispatchSemaphore(value: 0)
        for _ in 0..<Self.bufferedChunks { credits.signal() }
        let abandoned = ExecOutput.Flag()
        // An empty chunk every 5 s while the command runs: writing it is how a client that went
        // away is noticed when the command itself is quiet.
        let heartbeat = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(5))
                if !Task.isCancelled { continuation.yield((.stdout, [])) }
            }
        }
        continuation.onTermination = { _ in
            heartbeat.cancel()
            abandoned.set()
        }
        let open = Atomic<Int>(outputs.count)
        for (kind, fd) in outputs {
            DispatchQueue.global().async {
                var buffer = [UInt8](repeating: 0, count: 16 << 10)
                reading: while true {
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    // 0 at the end of a pipe; EIO once a terminal has no process left on it.
                    guard n > 0 else { break }
                    while credits.wait(timeout: .now() + .milliseconds(200)) == .timedOut {
                        if abandoned.isSet { break reading }
                    }
                    continuation.yield((kind, Array(buffer.prefix(n))))
                }
                // A pipe is this reader's to close; a terminal is closed on the writer's queue
                // (it is also the input), never while a write may be using it.
                if self.tty { self.closeInputNow() } else { close(fd) }
                if open.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { continuation.finish() }
            }
        }
        return ExecOutput(stream: stream, credits: credits)
    }

    /// Sends input to the command (in order; a full pipe or terminal waits on the writer thread).
    public func write(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        writer.async {
            guard self.inputOpen.load(ordering: .acquiring) else { return }
            var off = 0
            while off < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(self.input, $0.baseAddress! + off, bytes.count - off) }
                if n < 0 { if errno == EINTR { continue }; return }
                off += n
            }
        }
    }

    /// No more input: the command reads end-of-file (on a terminal, the EOF character).
    public func closeInput() {
        guard tty else { return closeInputNow() }
        writer.async {
            var eof: [UInt8] = [4]  // ^D
            if self.inputOpen.load(ordering: .acquiring) { _ = Glibc.write(self.input, &eof, 1) }
        }
    }

    public func resize(rows: UInt16, columns: UInt16) {
        guard tty, rows > 0, columns > 0, inputOpen.load(ordering: .acquiring) else { return }
        _ = caravan_set_winsize(input, rows, columns)
    }

    /// The command's exit status, once it has ended.
    public func wait() async -> ExitStatus { await exit.wait() ?? .unknown }

    /// Ends the command (the client went away): SIGHUP to its process group, SIGKILL 2 s later.
    public func terminate() {
        let pid = self.pid
        kill(-pid, SIGHUP)
        kill(pid, SIGHUP)
        DispatchQueue.global().asyncAfter(deadline: .now() + 2) { kill(-pid, SIGKILL); kill(pid, SIGKILL) }
    }

    /// Closes the input once the session is over. A terminal being read stays open until its
    /// reader sees it end (no process left on it: after `terminate`, within 2 s), so a read never
    /// meets a descriptor number reused meanwhile.
    public func finish() {
        if !tty || !reading.load(ordering: .acquiring) { closeInputNow() }
    }

    private func closeInputNow() {
        writer.async {
            if self.inputOpen.exchange(false, ordering: .acquiringAndReleasing) { close(self.input) }
        }
    }
}

/// The output of an exec session as the consumer takes it: each chunk taken frees a place for
/// the readers (see `ExecSession.output`).
public struct ExecOutput: AsyncSequence, Sendable {
    public typealias Element = (ExecSession.Output, [UInt8])

    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .releasing) }
        var isSet: Bool { value.load(ordering: .acquiring) }
    }

    let stream: AsyncStream<Element>
    let credits: DispatchSemaphore

    public struct AsyncIterator: AsyncIteratorProtocol {
        var inner: AsyncStream<Element>.Iterator
        let credits: DispatchSemaphore

        public mutating func next() async -> Element? {
            guard let e = await inner.next() else { return nil }
            // Heartbeats (empty) took no place.
            if !e.1.isEmpty { credits.signal() }
            return e
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inner: stream.makeAsyncIterator(), credits: credits) }
}
