import FoundationEssentials
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// An error from the HTTP API or from reaching it.
/// How an agent ends a stream early because it is shutting down: a trailer on log follows, an
/// error frame on exec streams. Clients turn it into an error that says so.
public enum StreamEnd {
    public static let header = "X-Caravan-Stream-End"
    public static let shutdown = "shutdown"
    /// A log follow with no new output for a while ends with this trailer (so the agent learns of
    /// clients that went away); ``CaravanClient/followLogs`` resumes it from where it was.
    public static let idle = "idle"

    /// What a stream that ended with the `idle` trailer throws.
    public struct Idle: Error, Sendable {}
    public static let shutdownMessage = "the agent is shutting down: the stream ended early; run the command again (against another agent if this one is gone)"
}

/// Exactly-once writes: each write a client makes carries `X-Caravan-Write-ID: CLIENT/SEQ`, and
/// the cluster applies a write with an id it has seen only once (answering a retry with the first
/// answer). A client id is random per ``CaravanClient``; its sequence numbers start at 1.
public final class WriteID: Sendable {
    public static let header = "X-Caravan-Write-ID"
    private let state = Mutex<(client: String, sequence: UInt64)>((WriteID.newClient(), 0))

    public init() {}

    /// `MS-RANDOM`: this client's creation time in Unix milliseconds, then 16 random hex digits.
    static func newClient() -> String {
        let ms = Int64(Date().timeIntervalSince1970 * 1000)
        return "\(ms)-" + String(UInt64.random(in: 0...UInt64.max) | (1 << 63), radix: 16)
    }

    public var client: String { state.withLock { $0.client } }

    /// The next id, `CLIENT/SEQ`.
    public func next() -> String {
        state.withLock { s in
            s.sequence += 1
            return "\(s.client)/\(s.sequence)"
        }
    }

    /// Starts over as a new client (after the cluster forgot this one): the next id is `NEW/1`.
    public func renew() { state.withLock { $0 = (WriteID.newClient(), 0) } }
}

public struct ClientError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The agent could not be reached.
        case unreachable
        /// The agent answered with an error body.
        case api(status: Int, code: String)
        /// The answer could not be understood.
        case badResponse
        case badAddress
    }
    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// The agent ended the stream because it is shutting down.
    public var isShutdown: Bool { code == .api(status: 503, code: "shutting_down") }

    /// A failure a write may be retried after with the same write id: the cluster had no leader,
    /// lost it mid-write, timed out, or this agent could not reach the leader or is stopping.
    public var isRetryable: Bool {
        guard case .api(let status, let code) = code else { return false }
        return (status == 503 && ["no_leader", "leadership_lost", "shutting_down"].contains(code))
            || (status == 504 && code == "timeout") || (status == 502 && code == "leader_unreachable")
    }

    /// True for errors that are the caller's fault (bad input), false for failed operations.
    public var isBadInput: Bool {
        if case .api(let status, _) = code { return status == 400 || status == 404 || status == 413 || status == 422 }
        return code == .badAddress
    }
}

/// A small HTTP/1.1 client for the agent's API, used by the CLI, the tests and the benchmarks.
public struct CaravanClient: Sendable {
    public let host: String
    public let port: Int
    public let baseURL: String
    let timeout: TimeAmount
    /// Ids for this client's writes.
    public var writeIDs = WriteID()
    /// How long a write is retried (with the same write id) while the cluster has no leader.
    public var retryWrites: Duration = .seconds(20)
    /// The ACL token's secret, sent as `X-Caravan-Token` with every request.
    public var token: String?
    /// The namespace of jobs, allocations and evaluations (`?namespace=` on their routes); nil: default.
    public var namespace: String?
    /// TLS, for an `https://` address (required there).
    public let tls: ClientTLS?
    /// Connections kept open between requests, shared by this client's copies.
    let pool = ConnectionPool()

    /// Parses `http://HOST:PORT` or `https://HOST:PORT` (the port defaults to 4680); an https
    /// address needs `tls`.
    public init(address: String, timeout: Duration = .seconds(30), tls: ClientTLS? = nil) throws(ClientError) {
        var rest = Substring(address)
        let secure = rest.hasPrefix("https://")
        if rest.hasPrefix("http://") { rest = rest.dropFirst(7) } else if secure { rest = rest.dropFirst(8) } else if rest.contains("://") {
            throw ClientError(.badAddress, "unsupported address \(address): use http:// or https://")
        }
        if secure && tls == nil {
            throw ClientError(.badAddress, "\(address) is https: give the CA certificate (--ca-cert or CARAVAN_CACERT)")
        }
        self.tls = secure ? tls : nil
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        var host = rest
        var port = 4680
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw ClientError(.badAddress, "bad address \(address)") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else {
                    throw ClientError(.badAddress, "bad port in address \(address)")
                }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else {
                throw ClientError(.badAddress, "bad port in address \(address)")
            }
            port = p
        }
        guard !host.isEmpty else { throw ClientError(.badAddress, "no host in address \(address)") }
        self.host = host == "localhost" ? "127.0.0.1" : String(host)
        self.port = port
        self.baseURL = secure ? address : "http://\(address.hasPrefix("http://") ? String(address.dropFirst(7)) : address)"
        self.timeout = .nanoseconds(Int64(timeout / .nanoseconds(1)))
    }

    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    /// Sends a write that goes through Raft, tagged with a fresh write id, and retries it with
    /// the same id while the cluster answers that it has no leader (see ``WriteID``). The answer
    /// is the cluster's first, however many tries it took.
    ///
    /// Retried only when the agent echoes the id (so it is one that honours it); an agent that
    /// says its group has members too old for write ids gets the write once without one; a
    /// first try refused because the cluster forgot this client is sent again as a new client.
    public func write(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil) async throws(ClientError) -> Response {
        var id = writeIDs.next()
        let clock = ContinuousClock()
        let until = clock.now + retryWrites
        var pause: Duration = .milliseconds(50)
        var tries = 0
        while true {
            let r = try await send(method, path, body: body, headers: [(WriteID.header, id)])
            tries += 1
            guard !(200..<300).contains(r.status) else { return r }
            var error: ClientError?
            do { _ = try Self.decode(r, as: [String: String].self) } catch let e { error = e }
            if error?.code == .api(status: 409, code: "write_ids_unsupported") { return try await send(method, path, body: body) }
            if error?.code == .api(status: 409, code: "session_expired"), tries == 1 {
                writeIDs.renew()
                id = writeIDs.next()
                continue
            }
            guard let error, error.isRetryable, r.header(WriteID.header) == id, clock.now + pause < until else { return r }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(1))
        }
    }

    /// Sends one request and returns the raw response, whatever its status. The connection is
    /// kept for the client's next request (and its copies'): a TLS handshake or TCP connect is
    /// paid once, not per call. A kept connection the agent closed meanwhile is replaced, and the
    /// request sent once more, only when nothing of it was answered.
    public func send(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil,
                     headers: [(String, String)] = []) async throws(ClientError) -> Response {
        if let kept = pool.take() {
            do { return try await send(method, path, body: body, headers: headers, on: kept) } catch where error.message == Self.closedWithoutAnswer {
                // Closed while it sat idle: a new connection.
            }
        }
        let address = try socketAddress()
        let collector = KeepAliveCollector()
        let channel: any Channel
        do { channel = try await connect(to: address, collector) } catch { throw unreachable(error) }
        return try await send(method, path, body: body, headers: headers, on: ConnectionPool.Kept(channel: channel, collector: collector))
    }

    private func send(_ method: HTTPMethod, _ path: String, body: [UInt8]?, headers: [(String, String)],
                      on kept: ConnectionPool.Kept) async throws(ClientError) -> Response {
        let channel = kept.channel
        let promise = channel.eventLoop.makePromise(of: Response.self)
        var head = requestHead(method, path, keepAlive: true)
        for (k, v) in headers { head.headers.add(name: k, value: v) }
        head.headers.add(name: "Content-Length", value: "\(body?.count ?? 0)")
        if body != nil { head.headers.add(name: "Content-Type", value: "application/json") }
        let timeout = self.timeout
        let baseURL = self.baseURL
        let collector = kept.collector
        channel.eventLoop.execute {
            collector.arm(promise)
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let body {
                var buf = channel.allocator.buffer(capacity: body.count)
                buf.writeBytes(body)
                channel.write(HTTPClientRequestPart.body(.byteBuffer(buf)), promise: nil)
            }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(ClientError(.unreachable, "no answer from \(baseURL) within the timeout"))
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        do {
            let response = try await promise.futureResult.get()
            let close = response.header("Connection")?.lowercased() == "close"
            if close || !channel.isActive { channel.close(promise: nil) } else { pool.put(kept) }
            return response
        } catch let e as ClientError {
            channel.close(promise: nil)
            throw e
        } catch {
            channel.close(promise: nil)
            throw unreachable(error)
        }
    }

    /// The agent's address as a socket address.
    func socketAddress() throws(ClientError) -> SocketAddress {
        do { return try SocketAddress(ipAddress: host, port: port) } catch {
            throw ClientError(.badAddress, "\(host) is not an IP address")
        }
    }

    /// The routes that take `?namespace=`.
    static let namespacedRoutes = ["/v1/job/", "/v1/jobs", "/v1/allocation", "/v1/evaluation", "/v1/client/allocation/"]

    /// `path` with this client's namespace, on the routes that take one (and do not name one).
    func namespaced(_ path: String) -> String {
        guard let namespace, Self.namespacedRoutes.contains(where: { path.hasPrefix($0) }), !path.contains("namespace=") else { return path }
        return path + (path.contains("?") ? "&" : "?") + "namespace=" + Self.escape(namespace)
    }

    /// The head every request starts with (one request per connection).
    func requestHead(_ method: HTTPMethod, _ path: String, keepAlive: Bool = false) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: namespaced(path))
        head.headers.add(name: "Host", value: "\(host):\(port)")
        if !keepAlive { head.headers.add(name: "Connection", value: "close") }
        if let token, !token.isEmpty { head.headers.add(name: "X-Caravan-Token", value: token) }
        return head
    }

    /// A connection to the agent speaking HTTP/1.1, its answer going to `handler`.
    func connect(to address: SocketAddress, _ handler: some ChannelInboundHandler & Sendable) async throws -> any Channel {
        let tls = self.tls
        let host = self.host
        return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    if let tls {
                        try ch.pipeline.syncOperations.addHandler(tls.handler(for: host))
                    }
                    try ch.pipeline.syncOperations.addHTTPClientHandlers()
                    try ch.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(to: address).get()
    }

    func unreachable(_ error: any Error) -> ClientError {
        ClientError(.unreachable, "cannot reach the agent at \(baseURL): \(Self.describe(error)) (is `caravan agent` running there?)")
    }

    /// A response whose body arrives as it is written (`?follow=true` logs): the status and
    /// headers, then the body's pieces until the agent ends it. No overall timeout applies.
    public struct Stream: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: AsyncThrowingStream<[UInt8], any Error>
        /// Closes the connection: the body ends with an error.
        public var close: @Sendable () -> Void = {}

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    /// Sends a GET and hands the body over piece by piece; an error status is thrown as
    /// ``ClientError`` with the agent's message.
    /// A request whose answer is read as it comes; with `upload`, the request body is sent as it
    /// comes too (chunked), while the answer streams back.
    public func stream(_ path: String, method: HTTPMethod = .GET, upload: AsyncStream<[UInt8]>? = nil) async throws(ClientError) -> Stream {
        let address = try socketAddress()
        let (body, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        let head = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: (Int, [(String, String)]).self)
        var request = requestHead(method, path)
        if upload != nil { request.headers.add(name: "Transfer-Encoding", value: "chunked") }
        let channel: any Channel
        do { channel = try await connect(to: address, StreamingCollector(head: head, body: continuation)) } catch {
            head.fail(error)
            throw unreachable(error)
        }
        channel.writeAndFlush(HTTPClientRequestPart.head(request), promise: nil)
        if let upload {
            let sender = Task {
                for await piece in upload where !piece.isEmpty {
                    try await channel.writeAndFlush(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: piece)))).get()
                }
                try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
            }
            continuation.onTermination = { _ in sender.cancel(); channel.close(promise: nil) }
        } else {
            continuation.onTermination = { _ in channel.close(promise: nil) }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        let (status, headers): (Int, [(String, String)])
        do { (status, headers) = try await head.futureResult.get() } catch {
            channel.close(promise: nil)
            throw (error as? ClientError) ?? ClientError(.unreachable, "\(baseURL): \(Self.describe(error))")
        }
        guard (200..<300).contains(status) else {
            var bytes: [UInt8] = []
            do { for try await piece in body { bytes += piece } } catch {}
            _ = try Self.decode(Response(status: status, headers: headers, body: bytes), as: [String: String].self)
            throw ClientError(.badResponse, "the agent answered HTTP \(status)")
        }
        return Stream(status: status, headers: headers, body: body, close: { channel.close(promise: nil) })
    }

    static let closedWithoutAnswer = "the agent closed the connection without an answer (an agent serving https closes plain http connections)"

    /// An error while the answer was read: TLS refusals said plainly, anything else as it came.
    static func answerError(_ error: any Error) -> ClientError {
        if error is NIOSSLError || error is BoringSSLError { return ClientError(.unreachable, "TLS: " + describe(error)) }
        return ClientError(.badResponse, "bad HTTP answer: \(error)")
    }

    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)).lowercased() }
        if let e = error as? ClientError { return e.message }
        let text = "\(error)"
        if text.contains("WRONG_VERSION_NUMBER") { return "the agent does not serve https there (use http://, or check the port)" }
        if text.contains("CERTIFICATE_EXPIRED") { return "the agent refused this client certificate: it has expired" }
        if text.contains("CERTIFICATE_VERIFY_FAILED"), text.contains("certificate has expired") || text.contains("CERT_HAS_EXPIRED") {
            return "the agent's certificate has expired"
        }
        if text.contains("does not name") { return text }
        if text.contains("CERTIFICATE_REQUIRED") { return "the agent asks for a client certificate from its CA (--client-cert, --client-key)" }
        if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificateVerify") {
            return "the agent's certificate is not from this CA or does not name \(ClientTLS.serverRole) (--ca-cert, --tls-server-name)"
        }
        if text.contains("DECRYPT_ERROR") || text.contains("BAD_CERTIFICATE") || text.contains("UNKNOWN_CA") {
            return "the agent refused this client certificate (is it from the agent's CA?)"
        }
        if error is NIOSSLError || error is BoringSSLError { return "TLS handshake failed: \(text)" }
        if let c = error as? NIOConnectionError, let first = c.connectionErrors.first { return describe(first.error) }
        if error is ChannelError { return "connection failed" }
        return "\(error)"
    }

    /// Sends a request and decodes a JSON answer; API errors become ``ClientError``.
    /// With `write`, the request is a Raft write: sent with a write id and retried (``write(_:_:body:)``).
    public func request<T: Decodable>(_ method: HTTPMethod, _ path: String, body: (some Encodable)? = Optional<String>.none,
                                      as: T.Type = T.self, write: Bool = false) async throws(ClientError) -> T {
        var raw: [UInt8]?
        if let body {
            do { raw = Array(try JSONEncoder().encode(body)) } catch {
                throw ClientError(.badResponse, "cannot encode the request: \(error)")
            }
        }
        let r = write ? try await self.write(method, path, body: raw) : try await send(method, path, body: raw)
        return try Self.decode(r, as: T.self)
    }

    public static func decode<T: Decodable>(_ r: Response, as: T.Type) throws(ClientError) -> T {
        guard (200..<300).contains(r.status) else {
            if let e = try? JSONDecoder().decode(ErrorBody.self, from: Data(r.body)) {
                throw ClientError(.api(status: r.status, code: e.error.code), e.error.message)
            }
            throw ClientError(.api(status: r.status, code: "http_\(r.status)"), "the agent answered HTTP \(r.status)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(r.body))
        } catch {
            throw ClientError(.badResponse, "cannot read the agent's answer: \(error)")
        }
    }

    // MARK: typed calls

    public func members() async throws(ClientError) -> [MemberView] {
        try await request(.GET, "/v1/agent/members")
    }

    public func agentSelf() async throws(ClientError) -> AgentSelfView {
        try await request(.GET, "/v1/agent/self")
    }

    public func keyringList() async throws(ClientError) -> KeyringView {
        try await request(.GET, "/v1/agent/keyring")
    }

    /// `operation` is install, use or remove.
    public func keyring(_ operation: String, key: String) async throws(ClientError) -> KeyringView {
        try await request(.POST, "/v1/agent/keyring/\(operation)", body: KeyringRequest(key: key))
    }

    @discardableResult
    public func leave() async throws(ClientError) -> [String: String] {
        try await request(.POST, "/v1/agent/leave")
    }

    public func status() async throws(ClientError) -> StatusView {
        try await request(.GET, "/v1/status")
    }

    public func raftConfiguration() async throws(ClientError) -> RaftConfigurationView {
        try await request(.GET, "/v1/operator/raft/configuration")
    }

    public func transferLeadership(to id: String?) async throws(ClientError) -> LeaderView {
        try await request(.POST, "/v1/operator/raft/transfer-leader" + (id.map { "?id=" + Self.escape($0) } ?? ""))
    }

    public func putVariable(_ path: String, _ value: String) async throws(ClientError) -> VariableView {
        try await request(.PUT, "/v1/var/" + Self.escapePath(path), body: VariableWrite(value: value), write: true)
    }

    public func variable(_ path: String, stale: Bool = false) async throws(ClientError) -> VariableView {
        try await request(.GET, "/v1/var/" + Self.escapePath(path) + (stale ? "?stale" : ""))
    }

    public func variables(prefix: String, stale: Bool = false) async throws(ClientError) -> [VariableView] {
        try await request(.GET, "/v1/vars?prefix=" + Self.escape(prefix) + (stale ? "&stale" : ""))
    }

    @discardableResult
    public func deleteVariable(_ path: String) async throws(ClientError) -> [String: Bool] {
        try await request(.DELETE, "/v1/var/" + Self.escapePath(path), write: true)
    }

    /// Registers a job from its file text (YAML or JSON).
    public func registerJob(_ text: String) async throws(ClientError) -> JobRegisterView {
        let r = try await write(.POST, "/v1/jobs", body: Array(text.utf8))
        return try Self.decode(r, as: JobRegisterView.self)
    }

    public func jobs() async throws(ClientError) -> [JobStatusView] { try await request(.GET, "/v1/jobs") }

    public func job(_ id: String) async throws(ClientError) -> JobStatusView { try await request(.GET, "/v1/job/" + Self.escape(id)) }

    /// A blocking read: answers once something newer than `index` exists, or after `wait`; the
    /// answer's `X-Caravan-Index` comes with it (pass it back as the next `index`).
    public func blocking<T: Decodable>(_ path: String, index: UInt64, wait: Duration, as: T.Type = T.self) async throws(ClientError) -> (T, UInt64) {
        let sep = path.contains("?") ? "&" : "?"
        let ms = Int(wait / .milliseconds(1))
        let r = try await send(.GET, path + "\(sep)index=\(index)&wait=\(ms)ms")
        return (try Self.decode(r, as: T.self), r.header("X-Caravan-Index").flatMap { UInt64($0) } ?? index)
    }

    public func job(_ id: String, index: UInt64, wait: Duration) async throws(ClientError) -> (JobStatusView, UInt64) {
        try await blocking("/v1/job/" + Self.escape(id), index: index, wait: wait)
    }

    public func evaluations() async throws(ClientError) -> [EvaluationView] { try await request(.GET, "/v1/evaluations") }

    /// One evaluation by id or unique prefix (at least 4 characters).
    public func evaluation(_ id: String) async throws(ClientError) -> EvaluationView {
        try await request(.GET, "/v1/evaluation/" + Self.escape(id))
    }

    public func evaluations(job id: String) async throws(ClientError) -> [EvaluationView] {
        try await request(.GET, "/v1/job/" + Self.escape(id) + "/evaluations")
    }

    public func schedulerConfiguration() async throws(ClientError) -> SchedulerConfigView {
        try await request(.GET, "/v1/operator/scheduler/configuration")
    }

    public func setSchedulerConfiguration(algorithm: String) async throws(ClientError) -> SchedulerConfigView {
        try await request(.PUT, "/v1/operator/scheduler/configuration", body: SchedulerConfigRequest(algorithm: algorithm), write: true)
    }

    public func node(_ id: String) async throws(ClientError) -> NodeDetailView { try await request(.GET, "/v1/node/" + Self.escape(id)) }

    public func stopJob(_ id: String, purge: Bool) async throws(ClientError) -> JobRegisterView {
        try await request(.DELETE, "/v1/job/" + Self.escape(id) + (purge ? "?purge=true" : ""), write: true)
    }

    public func nodes() async throws(ClientError) -> [NodeView] { try await request(.GET, "/v1/nodes") }

    public func jobVersions(_ id: String) async throws(ClientError) -> [JobVersionView] {
        try await request(.GET, "/v1/job/" + Self.escape(id) + "/versions")
    }

    public func revertJob(_ id: String, to version: Int) async throws(ClientError) -> JobRegisterView {
        try await request(.POST, "/v1/job/" + Self.escape(id) + "/revert?version=\(version)")
    }

    /// Promotes the canaries of the job's current version: its remaining instances are replaced.
    public func promoteJob(_ id: String) async throws(ClientError) -> JobRegisterView {
        try await request(.POST, "/v1/job/" + Self.escape(id) + "/promote")
    }

    public func planJob(_ text: String) async throws(ClientError) -> JobPlanView {
        let r = try await send(.POST, "/v1/jobs/plan", body: Array(text.utf8))
        return try Self.decode(r, as: JobPlanView.self)
    }

    @discardableResult
    public func drainNode(_ id: String, enable: Bool) async throws(ClientError) -> [String: String] {
        try await request(.POST, "/v1/node/\(Self.escape(id))/drain?enable=\(enable)", write: true)
    }

    @discardableResult
    public func setEligibility(_ id: String, eligible: Bool) async throws(ClientError) -> [String: String] {
        try await request(.POST, "/v1/node/\(Self.escape(id))/eligibility?eligible=\(eligible)", write: true)
    }

    public func allocations() async throws(ClientError) -> [AllocationView] { try await request(.GET, "/v1/allocations") }

    /// One allocation by id or unique prefix (at least 4 characters).
    public func allocation(_ id: String) async throws(ClientError) -> AllocationView {
        try await request(.GET, "/v1/allocation/" + Self.escape(id))
    }

    /// Runs a command inside a running task, on the node that runs it.
    public func exec(allocation: String, task: String, command: [String], timeout: Double? = nil) async throws(ClientError) -> ExecResultView {
        try await request(.POST, "/v1/client/allocation/\(Self.escape(allocation))/exec/\(Self.escape(task))",
                          body: ExecRequest(command: command, timeout: timeout))
    }

    /// An interactive command in a task: `upload` carries `ExecFrame`s (input, resizes) as they
    /// happen; the answer's body carries the command's output frames and its exit.
    public func execStream(allocation: String, task: String, command: [String], tty: Bool, rows: UInt16 = 24, columns: UInt16 = 80,
                           upload: AsyncStream<[UInt8]>) async throws(ClientError) -> Stream {
        let args = command.map { "command=" + Self.escape($0) }.joined(separator: "&")
        return try await stream("/v1/client/allocation/\(Self.escape(allocation))/exec/\(Self.escape(task))/stream?tty=\(tty)&rows=\(rows)&columns=\(columns)&" + args,
                                method: .POST, upload: upload)
    }

    public struct LogChunk: Sendable {
        public var bytes: [UInt8]
        /// Where `bytes` start in the stream, and the stream's size when read.
        public var offset: Int
        public var size: Int
        /// The task is dead: no more output will come.
        public var finished: Bool
    }

    /// A piece of a task's stdout or stderr from `offset` (negative: that many bytes before the end).
    public func logs(allocation: String, task: String, stderr: Bool, offset: Int, limit: Int = 1 << 20) async throws(ClientError) -> LogChunk {
        let path = "/v1/client/allocation/\(Self.escape(allocation))/logs/\(Self.escape(task))?type=\(stderr ? "stderr" : "stdout")&offset=\(offset)&limit=\(limit)"
        let r = try await send(.GET, path)
        guard r.status == 200 else { _ = try Self.decode(r, as: [String: String].self); throw ClientError(.badResponse, "status \(r.status)") }
        return LogChunk(bytes: r.body, offset: r.header("X-Caravan-Log-Offset").flatMap { Int($0) } ?? 0,
                        size: r.header("X-Caravan-Log-Size").flatMap { Int($0) } ?? 0,
                        finished: r.header("X-Caravan-Task-Finished") == "true")
    }

    /// A task's output as it is written, from `offset` (negative: that many bytes before the
    /// end), until the task ends.
    /// A quiet task's follow is ended by the agent from time to time (the `idle` trailer); this
    /// stream then asks again from the byte it had reached, so its reader sees one stream.
    public func followLogs(allocation: String, task: String, stderr: Bool, offset: Int) async throws(ClientError) -> Stream {
        func open(_ at: Int) async throws(ClientError) -> Stream {
            try await stream("/v1/client/allocation/\(Self.escape(allocation))/logs/\(Self.escape(task))?type=\(stderr ? "stderr" : "stdout")&offset=\(at)&follow=true")
        }
        let first = try await open(offset)
        // Where the answer starts (a negative offset counts from the end): the agent says.
        let start = first.header("X-Caravan-Log-Offset").flatMap(Int.init) ?? max(0, offset)
        let (body, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream()
        let current = Mutex(first.close)
        let pump = Task {
            var stream = first
            var position = start
            while true {
                do {
                    for try await piece in stream.body {
                        position += piece.count
                        continuation.yield(piece)
                    }
                    continuation.finish()
                    return
                } catch is StreamEnd.Idle {
                    do { stream = try await open(position) } catch { continuation.finish(throwing: error); return }
                    let close = stream.close
                    current.withLock { $0 = close }
                } catch {
                    continuation.finish(throwing: error)
                    return
                }
            }
        }
        continuation.onTermination = { _ in pump.cancel(); current.withLock { $0 }() }
        var out = first
        out.body = body
        out.close = { pump.cancel(); current.withLock { $0 }() }
        return out
    }

    /// Percent-encodes a query value.
    public static func escape(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Character(Unicode.Scalar(b))
            if c.isASCII && (c.isLetter || c.isNumber || "-._~".contains(c)) { out.append(c) } else { out += "%" + String(b, radix: 16, uppercase: true).leftPadded(2) }
        }
        return out
    }

    /// Percent-encodes each segment of a path, keeping the slashes.
    static func escapePath(_ s: String) -> String {
        s.split(separator: "/", omittingEmptySubsequences: false).map { escape(String($0)) }.joined(separator: "/")
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

/// Collects one HTTP response.
/// A few connections kept open between one client's requests; each is dropped after a while
/// idle (well before an agent's own idle timeout closes it).
final class ConnectionPool: Sendable {
    struct Kept: @unchecked Sendable {
        let channel: any Channel
        let collector: KeepAliveCollector
        var since = ContinuousClock.now
    }
    private let idle = Mutex<[Kept]>([])
    static let maxIdle = 4
    static let maxAge: Duration = .seconds(30)

    func take() -> Kept? {
        idle.withLock { list in
            while let k = list.popLast() {
                if k.channel.isActive && ContinuousClock.now - k.since < Self.maxAge { return k }
                k.channel.close(promise: nil)
            }
            return nil
        }
    }

    func put(_ k: Kept) {
        var k = k
        k.since = ContinuousClock.now
        let kept = idle.withLock { list -> Bool in
            guard list.count < Self.maxIdle else { return false }
            list.append(k)
            return true
        }
        if !kept { k.channel.close(promise: nil) }
    }

    deinit { for k in idle.withLock({ $0 }) { k.channel.close(promise: nil) } }
}

/// Collects one response at a time on a kept connection (armed with each request's promise).
final class KeepAliveCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    private var promise: EventLoopPromise<CaravanClient.Response>?
    private var status = 0
    private var headers: [(String, String)] = []
    private var body: [UInt8] = []
    /// How the connection ended while no request was waiting (a TLS handshake refused before the
    /// request was armed, an idle connection closed by the agent): the next request fails with
    /// it at once instead of waiting out its timeout.
    private var ended: ClientError?

    /// On the channel's event loop, before the request is written.
    func arm(_ p: EventLoopPromise<CaravanClient.Response>) {
        if let ended {
            p.fail(ended)
            return
        }
        promise = p
        status = 0
        headers = []
        body = []
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            status = Int(h.status.code)
            headers = h.headers.map { ($0.name, $0.value) }
        case .body(var b):
            body += b.readBytes(length: b.readableBytes) ?? []
        case .end:
            let p = promise
            promise = nil
            p?.succeed(CaravanClient.Response(status: status, headers: headers, body: body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        guard let p = promise else {
            if ended == nil { ended = ClientError(.unreachable, CaravanClient.closedWithoutAnswer) }
            return
        }
        promise = nil
        p.fail(ClientError(.unreachable, status == 0 ? CaravanClient.closedWithoutAnswer : "the agent closed the connection mid-answer"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let failure = CaravanClient.answerError(error)
        if let p = promise {
            promise = nil
            p.fail(failure)
        } else if ended == nil {
            ended = failure
        }
        context.close(promise: nil)
    }
}

/// Hands a response's head to a promise and its body pieces to a stream as they arrive.
final class StreamingCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let head: EventLoopPromise<(Int, [(String, String)])>
    let body: AsyncThrowingStream<[UInt8], any Error>.Continuation

    init(head: EventLoopPromise<(Int, [(String, String)])>, body: AsyncThrowingStream<[UInt8], any Error>.Continuation) {
        self.head = head
        self.body = body
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head.succeed((Int(h.status.code), h.headers.map { ($0.name, $0.value) }))
        case .body(var b): body.yield(b.readBytes(length: b.readableBytes) ?? [])
        case .end(let trailers):
            if trailers?.first(name: StreamEnd.header) == StreamEnd.shutdown {
                body.finish(throwing: ClientError(.api(status: 503, code: "shutting_down"), StreamEnd.shutdownMessage))
            } else if trailers?.first(name: StreamEnd.header) == StreamEnd.idle {
                body.finish(throwing: StreamEnd.Idle())
            } else {
                body.finish()
            }
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        head.fail(ClientError(.unreachable, CaravanClient.closedWithoutAnswer))
        body.finish(throwing: ClientError(.unreachable, "the agent closed the connection"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        head.fail(CaravanClient.answerError(error))
        body.finish(throwing: CaravanClient.answerError(error))
        context.close(promise: nil)
    }
}
