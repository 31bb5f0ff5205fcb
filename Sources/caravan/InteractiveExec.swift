import API
import CUV
import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// `caravan alloc exec -i [-t]`: this terminal's input goes up as `ExecFrame`s, the command's
/// output comes back and is written as it arrives; with -t and a terminal here, it is put in raw
/// mode (restored at the end) and its size follows the window's (SIGWINCH).
struct InteractiveExec {
    let api: CaravanClient
    let allocation: String
    let task: String
    let command: [String]
    let tty: Bool

    func run() async throws -> Int32 {
        let (upload, frames) = AsyncStream<[UInt8]>.makeStream()
        var rows: UInt16 = 24, columns: UInt16 = 80
        let localTerminal = tty && isatty(0) == 1
        if localTerminal { _ = caravan_get_winsize(0, &rows, &columns) }
        let stream: CaravanClient.Stream = try await cli { () async throws(ClientError) in
            try await api.execStream(allocation: allocation, task: task, command: command, tty: tty, rows: rows, columns: columns, upload: upload)
        }
        // Raw mode only once the session is up, so an error above prints normally.
        var saved = termios()
        if localTerminal {
            tcgetattr(0, &saved)
            var raw = saved
            cfmakeraw(&raw)
            tcsetattr(0, TCSANOW, &raw)
        }
        defer { if localTerminal { tcsetattr(0, TCSANOW, &saved) } }
        var resize: (any DispatchSourceSignal)?
        if localTerminal {
            signal(SIGWINCH, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: SIGWINCH)
            source.setEventHandler {
                var r: UInt16 = 0, c: UInt16 = 0
                if caravan_get_winsize(0, &r, &c) == 0 { frames.yield(ExecFrame.resize(rows: r, columns: c).encode()) }
            }
            source.resume()
            resize = source
        }
        defer { resize?.cancel() }
        // An empty input frame every 30 s: agents close HTTP connections idle for 2 minutes, and
        // a terminal nobody types into is not idle.
        let heartbeat = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(30))
                if !Task.isCancelled { frames.yield(ExecFrame.stdin([]).encode()) }
            }
        }
        defer { heartbeat.cancel() }
        // This terminal's input, read on a thread of its own.
        let keepOpen = tty
        DispatchQueue.global().async {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                frames.yield(ExecFrame.stdin(Array(buffer.prefix(n))).encode())
            }
            frames.yield(ExecFrame.stdinClosed.encode())
            // Without a terminal the request may end here; with one, resizes may still follow.
            if !keepOpen { frames.finish() }
        }
        var parser = ExecFrame.Parser()
        for try await piece in stream.body {
            for frame in try parser.feed(piece) {
                switch frame {
                case .stdout(let b): writeAll(1, b)
                case .stderr(let b): writeAll(2, b)
                case .exited(let code):
                    frames.finish()
                    return code
                case .error(let why):
                    frames.finish()
                    throw CLIError.failed(why)
                default: break
                }
            }
        }
        frames.finish()
        throw CLIError.failed("the session ended before the command did (the agent went away?)")
    }

    func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes.count - off) }
            if n < 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }
}
