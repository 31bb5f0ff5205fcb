/// The frames of an interactive exec stream (`POST /v1/client/allocation/{id}/exec/{task}/stream`):
/// the request body carries the client's frames, the response body the agent's, both as they
/// happen. Each frame is one byte of kind, four bytes of payload length (big-endian), then the
/// payload.
public enum ExecFrame: Equatable, Sendable {
    /// Client → agent: input for the command.
    case stdin([UInt8])
    /// Client → agent: no more input.
    case stdinClosed
    /// Client → agent: the terminal's new size.
    case resize(rows: UInt16, columns: UInt16)
    /// Agent → client: output (a terminal's all comes as stdout).
    case stdout([UInt8])
    case stderr([UInt8])
    /// Agent → client: the command ended with this exit code (the last frame).
    case exited(code: Int32)
    /// Agent → client: the session failed (the last frame).
    case error(String)

    public static let maxPayload = 1 << 20

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public func encode() -> [UInt8] {
        func frame(_ kind: UInt8, _ payload: [UInt8]) -> [UInt8] {
            let n = UInt32(payload.count)
            return [kind, UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + payload
        }
        switch self {
        case .stdin(let b): return frame(0, b)
        case .stdinClosed: return frame(1, [])
        case .resize(let r, let c): return frame(2, [UInt8(r >> 8), UInt8(r & 0xff), UInt8(c >> 8), UInt8(c & 0xff)])
        case .stdout(let b): return frame(16, b)
        case .stderr(let b): return frame(17, b)
        case .exited(let code):
            let u = UInt32(bitPattern: code)
            return frame(18, [UInt8(u >> 24), UInt8(u >> 16 & 0xff), UInt8(u >> 8 & 0xff), UInt8(u & 0xff)])
        case .error(let text): return frame(19, Array(text.utf8))
        }
    }

    /// Cuts a byte stream into frames, however it arrives.
    public struct Parser: Sendable {
        private var buffer: [UInt8] = []
        public init() {}

        public mutating func feed(_ bytes: [UInt8]) throws(ParseError) -> [ExecFrame] {
            buffer += bytes
            var out: [ExecFrame] = []
            var at = 0
            while buffer.count - at >= 5 {
                let n = Int(buffer[at + 1]) << 24 | Int(buffer[at + 2]) << 16 | Int(buffer[at + 3]) << 8 | Int(buffer[at + 4])
                guard n <= ExecFrame.maxPayload else { throw ParseError(description: "exec frame of \(n) bytes (at most \(ExecFrame.maxPayload))") }
                guard buffer.count - at - 5 >= n else { break }
                let p = Array(buffer[(at + 5)..<(at + 5 + n)])
                func u16(_ i: Int) -> UInt16 { UInt16(p[i]) << 8 | UInt16(p[i + 1]) }
                switch buffer[at] {
                case 0: out.append(.stdin(p))
                case 1: out.append(.stdinClosed)
                case 2 where n == 4: out.append(.resize(rows: u16(0), columns: u16(2)))
                case 16: out.append(.stdout(p))
                case 17: out.append(.stderr(p))
                case 18 where n == 4: out.append(.exited(code: Int32(bitPattern: UInt32(u16(0)) << 16 | UInt32(u16(2)))))
                case 19: out.append(.error(String(decoding: p, as: UTF8.self)))
                default: throw ParseError(description: "unknown exec frame kind \(buffer[at]) (\(n) bytes)")
                }
                at += 5 + n
            }
            buffer.removeFirst(at)
            return out
        }
    }

    /// What the exec-frame fuzz target (`Fuzz/run.sh execframe`) and its corpus replay run: a
    /// stream parses or is refused the same however it is cut, and frames encode back to it.
    public static func fuzzCheck(_ bytes: [UInt8]) {
        var whole = Parser()
        let frames = try? whole.feed(bytes)
        var pieces = Parser()
        var cut: [ExecFrame] = []
        var failed = false
        var at = 0
        while at < bytes.count && !failed {
            let n = min(bytes.count - at, 1 + (at % 7))
            do { cut += try pieces.feed(Array(bytes[at..<(at + n)])) } catch { failed = true }
            at += n
        }
        precondition((frames == nil) == failed, "a stream parsed whole and in pieces disagree")
        if let frames, !failed {
            precondition(cut == frames, "frames differ when the stream is cut")
            var again = Parser()
            precondition((try? again.feed(frames.flatMap { $0.encode() })) == frames, "frame round trip")
        }
    }
}
