import Framing
#if canImport(Glibc)
import Glibc
#endif
import Keyring
import Logging
import NIOCore
import NIOPosix
import Primitives
import Raft

/// Moves Raft messages and forwarded requests between agents over TCP (port 4681), each frame
/// sealed with the cluster keyring.
///
/// One outgoing connection per peer carries our messages and requests; answers to requests
/// come back on it. Frames queued for a peer that cannot be reached are dropped (Raft
/// retransmits), so a slow or dead follower never holds up the others. Snapshots travel in
/// chunks of ``chunkBytes``, one written after the other, so a large one never sits in memory
/// twice. All mutable state lives on `loop`.
public final class RaftTransport: @unchecked Sendable {
    /// `challenge` opens every accepted connection (see ``FrameSession``); the connector's
    /// `hello` answers it, proving the key and freshness, after which the receiver accepts frames
    /// up to `maxFrame`.
    enum Kind: UInt8 { case message = 1, snapshotChunk = 2, request = 3, response = 4, hello = 5, challenge = 6 }

    public struct RemoteFailure: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    public let id: ServerID
    public let advertised: String
    let loop: any EventLoop
    let group: any EventLoopGroup
    let keyring: SharedKeyring
    let logger: Logger
    let bindHost: String
    /// One entry of the largest size (`RaftCodec.maxEntryBytes`) with its message around it.
    let maxFrame = RaftCodec.maxEntryBytes + (1 << 20)
    /// The largest frame an incoming connection may send before one of its frames has opened
    /// with the cluster key: a stranger cannot make the agent buffer megabytes per connection.
    static let maxFrameBeforeProof = 64 << 10
    /// Incoming connections that have not proved the key yet, from one address and in all, and
    /// proven ones in all; more are closed at once. Strangers count only against the first two,
    /// so they can never keep members out.
    static let maxUnprovenPerAddress = 8
    static let maxUnproven = 256
    static let maxConnections = 1024
    /// An incoming connection that has not proved the key within this time is closed; one that
    /// has proved it is closed after this long without a frame (a peer that crashed or was cut
    /// off leaves nothing behind; a live one reconnects at once).
    static let proofTimeout: TimeAmount = .seconds(10)
    static let idleTimeout: TimeAmount = .seconds(60)
    /// The incoming connections that have proved the key, and the others oldest first.
    var proven: Set<ObjectIdentifier> = []
    var unprovenOrder: [ObjectIdentifier] = []
    /// Connections refused or closed for the limits above (a metric and a test hook).
    public internal(set) var connectionsRefused = 0
    /// Names received snapshot files (never the sender's name, which is the peer's to choose).
    var spoolSerial: UInt64 = 0
    public static let chunkBytes = 1 << 20
    /// A connection whose sent data stays unacknowledged this long is closed (TCP_USER_TIMEOUT),
    /// so a partition is noticed in seconds and the reconnect after it heals does not wait out
    /// TCP's exponential retransmission backoff.
    static let userTimeout = ChannelOptions.Types.SocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: 18)  // TCP_USER_TIMEOUT
    static let userTimeoutMilliseconds: SocketOptionValue = 2_000
    var server: (any Channel)?
    var peers: [String: PeerConnection] = [:]
    /// Where each server was last heard from or configured.
    var addressBook: [ServerID: String] = [:]
    var nextRequest: UInt64 = 0
    var pendingRequests: [UInt64: EventLoopPromise<[UInt8]>] = [:]
    var incomingSnapshots: [String: SnapshotSpool] = [:]
    /// Where received snapshots are written while they arrive.
    let spoolDirectory: String
    var nextTransfer: UInt64 = 0
    var closed = false
    /// Connections other agents opened to us, closed on shutdown.
    var accepted: [ObjectIdentifier: any Channel] = [:]

    /// A Raft message arrived.
    var onMessage: (@Sendable (Message) -> Void)?
    /// A whole snapshot file arrived (its message follows through `onMessage`, without data).
    var onSnapshotFile: (@Sendable (SnapshotMetadata, String) -> Void)?
    /// A forwarded request arrived: op code and payload; answer with the result or throw.
    var onRequest: (@Sendable (UInt8, [UInt8]) -> EventLoopFuture<[UInt8]>)?
    /// A peer could not be reached; `gone` when the connection was refused or reset (the process
    /// is not there any more).
    var onUnreachable: (@Sendable (ServerID, _ gone: Bool) -> Void)?

    public internal(set) var framesDropped = 0
    /// Frames refused as replayed (a wrong connection nonce or a spent sequence number).
    public internal(set) var framesReplayed = 0

    init(id: ServerID, bind: String, port: Int, advertise: String, keyring: SharedKeyring, group: any EventLoopGroup, logger: Logger,
         spoolDirectory: String) {
        self.id = id
        self.spoolDirectory = spoolDirectory
        self.bindHost = bind
        self.advertised = advertise
        self.keyring = keyring
        self.group = group
        self.loop = group.next()
        self.logger = logger
    }

    func start(port: Int) async throws {
        let t = self
        server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(Self.userTimeout, value: Self.userTimeoutMilliseconds)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    let decoder = LengthPrefixedFrameDecoder(maxFrame: Self.maxFrameBeforeProof)
                    try ch.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: Self.idleTimeout))
                    try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(decoder))
                    try ch.pipeline.syncOperations.addHandler(FrameHandler(transport: t, incoming: true, decoder: decoder))
                }
            }
            .bind(to: SocketAddress(ipAddress: bindHost, port: port)).get()
    }

    func close() async {
        try? await loop.submit {
            self.closed = true
            for p in self.peers.values { p.channel?.close(promise: nil) }
            self.peers = [:]
            for ch in self.accepted.values { ch.close(promise: nil) }
            self.accepted = [:]
            for spool in self.incomingSnapshots.values { spool.abandon() }
            self.incomingSnapshots = [:]
            for (_, p) in self.pendingRequests { p.fail(RemoteFailure(description: "the agent is shutting down")) }
            self.pendingRequests = [:]
        }.get()
        try? await server?.close()
    }

    // MARK: - Sending (any thread)

    func learn(_ id: ServerID, address: String) {
        loop.execute { self.addressBook[id] = address }
    }

    /// On the node's own loop (where the transport lives) the frames are written at once — before
    /// the leader's fsync that follows in the same pass.
    func send(_ messages: [Message]) {
        guard loop.inEventLoop else {
            loop.execute { for m in messages { self.sendOnLoop(m) } }
            return
        }
        for m in messages { sendOnLoop(m) }
    }

    private func sendOnLoop(_ m: Message) {
        guard let address = addressBook[m.to] else { framesDropped += 1; return }
        let peer = connection(to: address, id: m.to)
        var w = ByteWriter(capacity: 64)
        w.byte(Kind.message.rawValue)
        w.string(advertised)
        w.raw(RaftCodec.encode(m))
        peer.enqueue(w.bytes)
    }

    /// Streams a snapshot file in chunks read from disk; each chunk is read and written when the
    /// previous one has left, so a snapshot never sits in memory here.
    func sendSnapshot(_ m: Message, file: String) {
        loop.execute {
            guard let address = self.addressBook[m.to] else { self.framesDropped += 1; return }
            let peer = self.connection(to: address, id: m.to)
            let fd = Glibc.open(file, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { self.framesDropped += 1; return }
            var st = stat()
            fstat(fd, &st)
            let total = Int(st.st_size)
            self.nextTransfer += 1
            let transfer = self.nextTransfer
            let headerBytes = RaftCodec.encode(m)
            var offset = 0
            func next() {
                guard !self.closed else { Glibc.close(fd); return }
                let n = min(Self.chunkBytes, total - offset)
                var chunk = [UInt8](repeating: 0, count: n)
                let got = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, n, off_t(offset)) }
                guard got == n else { Glibc.close(fd); self.framesDropped += 1; return }
                var w = ByteWriter(capacity: n + 128)
                w.byte(Kind.snapshotChunk.rawValue)
                w.string(self.advertised)
                w.uint64(transfer)
                w.varint(UInt64(offset)); w.varint(UInt64(total))
                w.blob(headerBytes)
                w.blob(chunk)
                offset += n
                let done = offset >= total
                if done { Glibc.close(fd) }
                peer.enqueue(w.bytes) { ok in
                    if ok && !done { next() } else if !ok && !done { Glibc.close(fd) }
                }
            }
            next()
        }
    }

    /// Sends a request to the agent at `address` and waits for its answer.
    func request(_ op: UInt8, _ payload: [UInt8], to address: String, timeout: TimeAmount) -> EventLoopFuture<[UInt8]> {
        loop.flatSubmit {
            self.nextRequest += 1
            let rid = self.nextRequest
            let promise = self.loop.makePromise(of: [UInt8].self)
            self.pendingRequests[rid] = promise
            var w = ByteWriter(capacity: payload.count + 32)
            w.byte(Kind.request.rawValue)
            w.string(self.advertised)
            w.uint64(rid)
            w.byte(op)
            w.raw(payload)
            let peer = self.connection(to: address, id: nil)
            peer.requests.insert(rid)
            promise.futureResult.whenComplete { _ in peer.requests.remove(rid) }
            peer.enqueue(w.bytes) { ok in
                if !ok, let p = self.pendingRequests.removeValue(forKey: rid) {
                    p.fail(RemoteFailure(description: "cannot reach \(address)"))
                }
            }
            let timer = self.loop.scheduleTask(in: timeout) {
                self.pendingRequests.removeValue(forKey: rid)?.fail(RemoteFailure(description: "\(address) did not answer in time"))
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            return promise.futureResult
        }
    }

    private func connection(to address: String, id: ServerID?) -> PeerConnection {
        if let p = peers[address] {
            if let id { p.ids.insert(id) }
            return p
        }
        let p = PeerConnection(address: address, transport: self)
        if let id { p.ids.insert(id) }
        peers[address] = p
        return p
    }


    // MARK: - Receiving (on a channel's loop)

    func accepted(_ channel: any Channel) {
        let host = channel.remoteAddress?.ipAddress ?? ""
        loop.execute {
            guard !self.closed else { channel.close(promise: nil); return }
            // Over a cap, the oldest connection still unproven goes, not the new one: a member's
            // connection proves itself with its first frame, so strangers who keep connecting
            // cannot keep it out.
            let unproven = self.unprovenOrder.filter { self.accepted[$0] != nil && !self.proven.contains($0) }
            let fromHost = unproven.filter { self.accepted[$0]?.remoteAddress?.ipAddress == host }
            let evict = fromHost.count >= Self.maxUnprovenPerAddress ? fromHost.first
                : unproven.count >= Self.maxUnproven ? unproven.first : nil
            if let evict, let old = self.accepted.removeValue(forKey: evict) {
                self.connectionsRefused += 1
                old.close(promise: nil)
            }
            let id = ObjectIdentifier(channel)
            self.accepted[id] = channel
            self.unprovenOrder = unproven.filter { $0 != evict } + [id]
            channel.closeFuture.hop(to: self.loop).whenComplete { _ in
                self.accepted[id] = nil
                self.proven.remove(id)
            }
        }
    }

    /// An incoming connection proved the key: it now counts against the members' cap.
    func provenConnection(_ channel: any Channel) {
        loop.execute {
            let id = ObjectIdentifier(channel)
            guard self.accepted[id] != nil, !self.proven.contains(id) else { return }
            guard self.proven.count < Self.maxConnections else {
                self.connectionsRefused += 1
                channel.close(promise: nil)
                return
            }
            self.proven.insert(id)
        }
    }

    /// A frame opened with the cluster key, or nil (counted) when it does not open.
    func open(_ frame: ByteBuffer) -> [UInt8]? {
        guard case .success(let payload) = keyring.current.open(Array(frame.readableBytesView)) else {
            loop.execute { self.framesDropped += 1 }
            return nil
        }
        return payload
    }

    func replayed() { loop.execute { self.framesReplayed += 1 } }

    /// Handles one fresh frame (`kind | body`); answers go back on `channel` under `session`.
    func handle(_ payload: [UInt8], on channel: any Channel, session: FrameSession) {
        guard let kindByte = payload.first, let kind = Kind(rawValue: kindByte) else { return dropped() }
        var r = ByteReader(payload)
        _ = r.byte()
        switch kind {
        case .hello, .challenge:
            return
        case .message:
            guard let from = r.string(), let body = r.raw(r.remaining), let m = RaftCodec.decodeMessage(Array(body)) else { return dropped() }
            loop.execute {
                self.addressBook[m.from] = from
                self.onMessage?(m)
            }
        case .snapshotChunk:
            guard let from = r.string(), let transfer = r.uint64(), let offset = r.varint(), let total = r.varint(),
                  let header = r.blob(max: 1 << 20), let data = r.blob(max: maxFrame), r.atEnd,
                  let m = RaftCodec.decodeMessage(header), case .snapshot(let snap) = m.body else { return dropped() }
            loop.execute {
                let key = from + "#\(transfer)"
                if offset == 0 {
                    self.incomingSnapshots[key]?.abandon()
                    self.spoolSerial += 1
                    self.incomingSnapshots[key] = SnapshotSpool(directory: self.spoolDirectory, name: "incoming-\(self.spoolSerial)", total: total)
                }
                guard let spool = self.incomingSnapshots[key], spool.append(data, at: offset) else {
                    self.incomingSnapshots.removeValue(forKey: key)?.abandon()
                    self.framesDropped += 1
                    return
                }
                guard spool.isComplete else { return }
                self.incomingSnapshots[key] = nil
                guard let path = spool.finish() else {
                    self.logger.warning("dropped a received snapshot that failed its checksum", metadata: ["from": "\(m.from)"])
                    self.framesDropped += 1
                    return
                }
                self.addressBook[m.from] = from
                self.onSnapshotFile?(snap.metadata, path)
                self.onMessage?(m)
            }
        case .request:
            guard r.string() != nil, let rid = r.uint64(), let op = r.byte(), let body = r.raw(r.remaining) else { return dropped() }
            let answer = onRequest?(op, Array(body)) ?? channel.eventLoop.makeFailedFuture(RemoteFailure(description: "not ready"))
            answer.hop(to: channel.eventLoop).whenComplete { result in
                var w = ByteWriter()
                w.byte(Kind.response.rawValue)
                w.uint64(rid)
                switch result {
                case .success(let bytes): w.byte(0); w.raw(bytes)
                case .failure(let e):
                    // A RaftError keeps its code across the wire, so the asking agent answers
                    // exactly as the leader would have.
                    w.byte(1)
                    w.string((e as? RaftError)?.code.rawValue ?? "", max: 64)
                    w.string(String(describing: e), max: 4096)
                }
                var buf = channel.allocator.buffer(capacity: w.bytes.count + 64)
                buf.writeFrame(session.seal(w.bytes, self.keyring))
                channel.writeAndFlush(buf, promise: nil)
            }
        case .response:
            guard let rid = r.uint64(), let status = r.byte() else { return dropped() }
            let rest = Array(r.raw(r.remaining) ?? [])
            loop.execute {
                guard let p = self.pendingRequests.removeValue(forKey: rid) else { return }
                if status == 0 {
                    p.succeed(rest)
                } else {
                    var e = ByteReader(rest)
                    let code = e.string(max: 64).flatMap(RaftError.Code.init(rawValue:))
                    let message = e.string(max: 4096) ?? "the remote agent failed"
                    p.fail(code.map { RaftError($0, message) } ?? RemoteFailure(description: message))
                }
            }
        }
    }

    private func dropped() { loop.execute { self.framesDropped += 1 } }

    func peerLost(_ p: PeerConnection, gone: Bool) {
        for id in p.ids { onUnreachable?(id, gone) }
    }
}

/// One outgoing connection with its queue; reconnects with backoff when asked to send again.
final class PeerConnection: @unchecked Sendable {
    let address: String
    unowned let transport: RaftTransport
    var ids: Set<ServerID> = []
    /// Requests waiting for an answer on this connection; failed at once if it closes.
    var requests: Set<UInt64> = []
    var channel: (any Channel)?
    /// The connection's session once the peer's challenge arrived; frames wait for it.
    var session: FrameSession?
    var connecting = false
    /// Frames (`kind | body`, not yet sealed: sealing binds them to a connection).
    var queue: [([UInt8], ((Bool) -> Void)?)] = []
    /// A peer that sends no challenge within this time (an agent of an earlier version, or not
    /// an agent) is hung up on.
    static let challengeTimeout: TimeAmount = .seconds(3)
    var queuedBytes = 0
    var backoffUntil: NIODeadline = .distantPast
    var backoff: TimeAmount = .milliseconds(20)
    static let maxQueuedBytes = 16 << 20

    init(address: String, transport: RaftTransport) {
        self.address = address
        self.transport = transport
    }

    /// Sends a frame (`kind | body`), sealed for the connection; `done` learns whether it was written.
    func enqueue(_ frame: [UInt8], done: ((Bool) -> Void)? = nil) {
        if let ch = channel, let session {
            write(session.seal(frame, transport.keyring), on: ch, done: done)
            return
        }
        guard channel != nil || NIODeadline.now() >= backoffUntil, queuedBytes + frame.count <= Self.maxQueuedBytes else {
            transport.framesDropped += 1
            done?(false)
            return
        }
        queue.append((frame, done))
        queuedBytes += frame.count
        if channel == nil { connect() }
    }

    /// The peer's challenge arrived on `ch`: answer it with the hello, then send what waited.
    func established(_ session: FrameSession, challenge: [UInt8], on ch: any Channel) {
        guard channel === ch, self.session == nil else { return }
        self.session = session
        write(session.answer(challenge, transport.keyring), on: ch, done: nil)
        let pending = queue
        queue = []
        queuedBytes = 0
        for (f, d) in pending { write(session.seal(f, transport.keyring), on: ch, done: d) }
    }

    private func write(_ frame: [UInt8], on ch: any Channel, done: ((Bool) -> Void)?) {
        var buf = ch.allocator.buffer(capacity: frame.count + 4)
        buf.writeFrame(frame)
        let p = ch.eventLoop.makePromise(of: Void.self)
        p.futureResult.hop(to: transport.loop).whenComplete { r in
            if case .success = r { done?(true) } else { done?(false) }
        }
        ch.writeAndFlush(buf, promise: p)
    }

    private func connect() {
        guard !connecting, channel == nil else { return }
        connecting = true
        let t = transport
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]),
              let remote = try? SocketAddress(ipAddress: String(parts[0]), port: port) else {
            failQueue()
            connecting = false
            return
        }
        let local = try? SocketAddress(ipAddress: t.bindHost, port: 0)
        var boot = ClientBootstrap(group: t.loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(RaftTransport.userTimeout, value: RaftTransport.userTimeoutMilliseconds)
            .connectTimeout(.milliseconds(500))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(LengthPrefixedFrameDecoder(maxFrame: t.maxFrame)))
                    try ch.pipeline.syncOperations.addHandler(FrameHandler(transport: t, incoming: false, peer: self))
                }
            }
        if let local { boot = boot.bind(to: local) }
        boot.connect(to: remote).hop(to: t.loop).whenComplete { result in
            self.connecting = false
            switch result {
            case .success(let ch):
                guard !t.closed else { ch.close(promise: nil); return }
                self.channel = ch
                self.session = nil
                self.backoff = .milliseconds(20)
                t.loop.scheduleTask(in: Self.challengeTimeout) {
                    guard self.channel === ch, self.session == nil else { return }
                    t.logger.warning("a Raft peer sent no challenge; is it an agent of this version?", metadata: ["peer": "\(self.address)"])
                    ch.close(promise: nil)
                }
                ch.closeFuture.hop(to: t.loop).whenComplete { _ in
                    self.channel = nil
                    self.session = nil
                    // Frames that waited for a challenge that never came are dropped (Raft resends).
                    if !self.queue.isEmpty { self.failQueue() }
                    for rid in self.requests {
                        t.pendingRequests.removeValue(forKey: rid)?.fail(RaftTransport.RemoteFailure(description: "the connection to \(self.address) was lost"))
                    }
                    self.requests = []
                    if !t.closed { t.peerLost(self, gone: true) }
                }
                // What is queued waits for the peer's challenge (``established``).
            case .failure(let error):
                self.backoffUntil = .now() + self.backoff
                self.backoff = min(self.backoff * 2, .seconds(1))
                self.failQueue()
                t.peerLost(self, gone: Self.isRefused(error))
            }
        }
    }

    private func failQueue() {
        let pending = queue
        queue = []
        queuedBytes = 0
        transport.framesDropped += pending.count
        for (_, d) in pending { d?(false) }
    }

    static func isRefused(_ e: any Error) -> Bool {
        if let io = e as? IOError { return io.errnoCode == ECONNREFUSED || io.errnoCode == ECONNRESET }
        return "\(e)".contains("connection refused") || "\(e)".contains("Connection refused")
    }
}

/// Hands decoded frames to the transport.
final class FrameHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let transport: RaftTransport
    let incoming: Bool
    /// The incoming connection's decoder, whose limit is raised once a frame opened with the key.
    let decoder: LengthPrefixedFrameDecoder?

    /// The outgoing connection this handler reads for.
    weak var peer: PeerConnection?
    let session = FrameSession()

    init(transport: RaftTransport, incoming: Bool, decoder: LengthPrefixedFrameDecoder? = nil, peer: PeerConnection? = nil) {
        self.transport = transport
        self.incoming = incoming
        self.decoder = decoder
        self.peer = peer
    }

    var proved = false

    func channelActive(context: ChannelHandlerContext) {
        if incoming {
            transport.accepted(context.channel)
            var buf = context.channel.allocator.buffer(capacity: 64)
            buf.writeFrame(session.challenge(transport.keyring))
            context.writeAndFlush(NIOAny(buf), promise: nil)
            let channel = context.channel, transport = self.transport
            context.eventLoop.scheduleTask(in: RaftTransport.proofTimeout) { [weak self] in
                guard let self, !self.proved, channel.isActive else { return }
                transport.loop.execute { transport.connectionsRefused += 1 }
                channel.close(promise: nil)
            }
        }
        context.fireChannelActive()
    }

    /// Nothing arrived for `idleTimeout` (an incoming connection's `IdleStateHandler`): close it.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? IdleStateHandler.IdleStateEvent, e == .read {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let payload = transport.open(unwrapInboundIn(data)) else {
            // A stranger's first frame that does not open ends its connection (it cannot flood
            // the agent with frames that each cost a decryption attempt).
            if incoming && !proved { context.close(promise: nil) }
            return
        }
        switch session.check(payload) {
        case .replayed:
            transport.replayed()
            context.close(promise: nil)
        case .challenge(let nonce):
            guard !incoming, let peer else { transport.replayed(); context.close(promise: nil); return }
            let channel = context.channel
            transport.loop.execute { peer.established(self.session, challenge: nonce, on: channel) }
        case .frame(let frame):
            if incoming && !proved {
                // The first fresh frame is the connector's hello: from now on the key and the
                // connection are proven.
                guard frame.first == RaftTransport.Kind.hello.rawValue, session.accept(hello: frame.dropFirst()) else {
                    transport.replayed()
                    context.close(promise: nil)
                    return
                }
                transport.provenConnection(context.channel)
                proved = true
                if let decoder, decoder.maxFrame < transport.maxFrame { decoder.maxFrame = transport.maxFrame }
                return
            }
            proved = true
            transport.handle(frame, on: context.channel, session: session)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// A snapshot file being received: chunks are written as they come and checksummed on the way,
/// so the receiver never holds the whole snapshot in memory.
final class SnapshotSpool {
    let path: String
    let total: UInt64
    private var fd: Int32
    private var written: UInt64 = 0
    private var crc: UInt32 = 0
    private var expected: UInt32?
    private var head: [UInt8] = []

    init(directory: String, name: String, total: UInt64) {
        path = directory + "/" + name + ".part"
        self.total = total
        fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    }

    var isComplete: Bool { written >= total }

    /// Writes the next chunk; false if it is out of order, too long or cannot be written.
    func append(_ chunk: [UInt8], at offset: UInt64) -> Bool {
        guard fd >= 0, offset == written, written + UInt64(chunk.count) <= total else { return false }
        var body = chunk[...]
        if head.count < 8 {
            let take = min(8 - head.count, body.count)
            head += body.prefix(take)
            body = body.dropFirst(take)
            if head.count == 8 {
                expected = UInt32(head[4]) | UInt32(head[5]) << 8 | UInt32(head[6]) << 16 | UInt32(head[7]) << 24
            }
        }
        crc = CRC32C.checksum(body, seed: crc)
        written += UInt64(chunk.count)
        return (try? WriteAheadLog.writeAll(fd, chunk, path: path)) != nil
    }

    /// Closes the file; its path if the checksum matched, else nil (and the file is removed).
    func finish() -> String? {
        close(fd)
        fd = -1
        guard expected == crc, head.count == 8 else { unlink(path); return nil }
        return path
    }

    func abandon() {
        if fd >= 0 { close(fd); fd = -1 }
        unlink(path)
    }
}
