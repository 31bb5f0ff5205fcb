import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Serf agents run next to Caravan's in the gossip benchmark (same machine, same run, the same
/// address pattern on their own subnet), and asked about membership over Serf's RPC protocol
/// (MessagePack over TCP) — no process start per question, so both are polled alike.
struct SerfCluster {
    static let key = "YmVuY2gtc2VyZi1rZXktMQ=="  // 16 bytes: Serf's AES-GCM keyring
    let binary: String
    let subnet: Int
    var processes: [Process] = []
    let root: String

    static func ip(_ subnet: Int, _ i: Int) -> String { "127.\(subnet).\(i / 250).\(i % 250 + 2)" }

    init(binary: String, subnet: Int, count: Int) throws {
        self.binary = binary
        self.subnet = subnet
        root = NSTemporaryDirectory() + "caravan-bench-serf-\(getpid())-\(count)"
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        for i in 0..<count {
            let ip = Self.ip(subnet, i)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["agent", "-node", "serf-\(i)", "-bind", "\(ip):7946", "-rpc-addr", "\(ip):7373", "-encrypt", Self.key,
                           "-retry-join", Self.ip(subnet, 0), "-retry-join", Self.ip(subnet, 1), "-retry-interval", "1s", "-log-level", "err"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            processes.append(p)
        }
    }

    func stop() {
        for p in processes where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Name → status ("alive", "failed", "left", …) as agent `i` sees it; nil when it does not answer.
    func members(_ i: Int) -> [String: String]? {
        guard let rpc = try? SerfRPC(host: Self.ip(subnet, i), port: 7373) else { return nil }
        return try? rpc.members()
    }
}

/// A Serf RPC connection: the handshake, then `members`.
final class SerfRPC {
    let fd: Int32
    var seq: UInt64 = 0
    var buffer: [UInt8] = []

    init(host: String, port: UInt16) throws {
        fd = try HTTPLoad.connect(host: host, port: port, timeoutSeconds: 2)
        try call("handshake", body: .map([("Version", .int(1))]), wantBody: false)
    }

    deinit { close(fd) }

    func members() throws -> [String: String] {
        guard case .map(let top)? = try call("members", body: nil, wantBody: true),
              case .array(let list)? = top.first(where: { $0.0 == "Members" })?.1 else {
            throw HTTPLoad.Failure(description: "serf rpc: unexpected members answer")
        }
        var out: [String: String] = [:]
        for m in list {
            guard case .map(let fields) = m, case .str(let name)? = fields.first(where: { $0.0 == "Name" })?.1,
                  case .str(let status)? = fields.first(where: { $0.0 == "Status" })?.1 else { continue }
            out[name] = status
        }
        return out
    }

    @discardableResult
    private func call(_ command: String, body: MsgPack?, wantBody: Bool) throws -> MsgPack? {
        var out: [UInt8] = []
        MsgPack.map([("Command", .str(command)), ("Seq", .int(Int64(seq)))]).encode(into: &out)
        body?.encode(into: &out)
        seq += 1
        try HTTPLoad.sendAll(fd, out)
        guard case .map(let header) = try next() else { throw HTTPLoad.Failure(description: "serf rpc: bad header") }
        if case .str(let e)? = header.first(where: { $0.0 == "Error" })?.1, !e.isEmpty { throw HTTPLoad.Failure(description: "serf rpc: \(e)") }
        return wantBody ? try next() : nil
    }

    /// The next whole value from the connection.
    private func next() throws -> MsgPack {
        while true {
            var at = 0
            if let v = MsgPack.decode(buffer, &at) {
                buffer.removeFirst(at)
                return v
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            guard n > 0 else { throw HTTPLoad.Failure(description: "serf rpc: connection closed") }
            buffer += chunk.prefix(n)
        }
    }
}

/// The part of MessagePack Serf's RPC uses.
indirect enum MsgPack {
    case int(Int64), str(String), bin([UInt8]), array([MsgPack]), map([(String, MsgPack)]), other

    func encode(into out: inout [UInt8]) {
        switch self {
        case .int(let v):
            if v >= 0 && v < 128 { out.append(UInt8(v)) } else {
                out.append(0xd3)
                for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> Int64(s))) }
            }
        case .str(let s):
            let b = Array(s.utf8)
            if b.count < 32 { out.append(0xa0 | UInt8(b.count)) } else { out.append(0xd9); out.append(UInt8(b.count)) }
            out += b
        case .map(let kv):
            out.append(0x80 | UInt8(kv.count))
            for (k, v) in kv { MsgPack.str(k).encode(into: &out); v.encode(into: &out) }
        case .bin, .array, .other:
            break  // not sent
        }
    }

    /// Decodes one value at `at`; nil when the bytes end before it does.
    static func decode(_ b: [UInt8], _ at: inout Int) -> MsgPack? {
        guard at < b.count else { return nil }
        func take(_ n: Int) -> [UInt8]? {
            guard at + n <= b.count else { return nil }
            defer { at += n }
            return Array(b[at..<at + n])
        }
        func uint(_ n: Int) -> UInt64? { take(n).map { $0.reduce(0) { $0 << 8 | UInt64($1) } } }
        func items(_ n: Int) -> [MsgPack]? {
            var out: [MsgPack] = []
            for _ in 0..<n { guard let v = decode(b, &at) else { return nil }; out.append(v) }
            return out
        }
        func pairs(_ n: Int) -> MsgPack? {
            var out: [(String, MsgPack)] = []
            for _ in 0..<n {
                guard let k = decode(b, &at), let v = decode(b, &at) else { return nil }
                if case .str(let s) = k { out.append((s, v)) }
            }
            return .map(out)
        }
        func str(_ n: UInt64?) -> MsgPack? { n.flatMap { take(Int($0)) }.map { .str(String(decoding: $0, as: UTF8.self)) } }
        let t = b[at]
        at += 1
        switch t {
        case 0x00...0x7f: return .int(Int64(t))
        case 0xe0...0xff: return .int(Int64(Int8(bitPattern: t)))
        case 0x80...0x8f: return pairs(Int(t & 0x0f))
        case 0x90...0x9f: return items(Int(t & 0x0f)).map { .array($0) }
        case 0xa0...0xbf: return str(UInt64(t & 0x1f))
        case 0xc0, 0xc2, 0xc3: return .other
        case 0xc4: return uint(1).flatMap { take(Int($0)) }.map { .bin($0) }
        case 0xc5: return uint(2).flatMap { take(Int($0)) }.map { .bin($0) }
        case 0xc6: return uint(4).flatMap { take(Int($0)) }.map { .bin($0) }
        case 0xca: return take(4).map { _ in .other }
        case 0xcb: return take(8).map { _ in .other }
        case 0xcc: return uint(1).map { .int(Int64($0)) }
        case 0xcd: return uint(2).map { .int(Int64($0)) }
        case 0xce: return uint(4).map { .int(Int64($0)) }
        case 0xcf: return uint(8).map { .int(Int64(bitPattern: $0)) }
        case 0xd0: return uint(1).map { .int(Int64(Int8(truncatingIfNeeded: $0))) }
        case 0xd1: return uint(2).map { .int(Int64(Int16(truncatingIfNeeded: $0))) }
        case 0xd2: return uint(4).map { .int(Int64(Int32(truncatingIfNeeded: $0))) }
        case 0xd3: return uint(8).map { .int(Int64(bitPattern: $0)) }
        case 0xd9: return str(uint(1))
        case 0xda: return str(uint(2))
        case 0xdb: return str(uint(4))
        case 0xdc: return uint(2).flatMap { items(Int($0)) }.map { .array($0) }
        case 0xdd: return uint(4).flatMap { items(Int($0)) }.map { .array($0) }
        case 0xde: return uint(2).flatMap { pairs(Int($0)) }
        case 0xdf: return uint(4).flatMap { pairs(Int($0)) }
        default: return .other
        }
    }
}

/// Bytes and packets sent on loopback in this network namespace so far (`/proc/net/dev`): on
/// `lo` every packet any process here sends is counted once, headers included.
func loopbackSent() -> (bytes: Int, packets: Int) {
    guard let s = try? String(contentsOfFile: "/proc/net/dev", encoding: .utf8) else { return (0, 0) }
    for line in s.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix("lo:") {
        let f = line.split(separator: ":")[1].split(separator: " ")
        // receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
        guard f.count >= 10 else { return (0, 0) }
        return (Int(f[8]) ?? 0, Int(f[9]) ?? 0)
    }
    return (0, 0)
}

/// nftables counters (inside the bench's own network namespace) of the packets to or from one
/// port, TCP and UDP: a membership protocol's own traffic, apart from whatever else the agents
/// send (Raft, the HTTP API).
enum PortMeter {
    static func install(ports: [Int]) throws {
        var rules = "table inet bench {\n"
        for p in ports { rules += " counter port\(p) {}\n" }
        rules += " chain egress {\n  type filter hook output priority 0;\n"
        for p in ports {
            rules += "  meta l4proto { tcp, udp } th sport \(p) counter name port\(p)\n"
            rules += "  meta l4proto { tcp, udp } th sport != \(p) th dport \(p) counter name port\(p)\n"
        }
        rules += " }\n}\n"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["nft", "-f", "-"]
        let input = Pipe()
        p.standardInput = input
        try p.run()
        input.fileHandleForWriting.write(Data(rules.utf8))
        try input.fileHandleForWriting.close()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw HTTPLoad.Failure(description: "nft could not install the port counters") }
    }

    /// Bytes and packets counted for `port` so far.
    static func read(_ port: Int) -> (bytes: Int, packets: Int) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["nft", "list", "counter", "inet", "bench", "port\(port)"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return (0, 0) }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        func after(_ w: String) -> Int { words.firstIndex(of: Substring(w)).flatMap { Int(words[$0 + 1]) } ?? 0 }
        return (after("bytes"), after("packets"))
    }
}
