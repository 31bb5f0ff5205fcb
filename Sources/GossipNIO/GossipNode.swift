import Framing
import FoundationEssentials
import Gossip
import Keyring
import Logging
import NIOCore
import NIOPosix

/// Where and how a gossip node listens.
public struct GossipConfiguration: Sendable {
    public var name: String
    /// The address the UDP and TCP sockets bind to.
    public var bind: Address
    /// The address other members use to reach this node (defaults to `bind`).
    public var advertise: Address?
    public var settings: Settings
    public var keyring: Keyring
    /// Where rotations are persisted; nil keeps them in memory only.
    public var keyringPath: String?
    public var metadata: [UInt8]
    public var seed: UInt64
    /// This node's identity key pair; published in metadata, used to recover from a missed rotation.
    public var identity: NodeIdentity?
    /// Where known peers are remembered across restarts; nil keeps them in memory only.
    public var peersPath: String?
    /// Receives every new keyring after a rotation, for other shells that seal with it.
    public var sharedKeyring: SharedKeyring?

    public init(name: String, bind: Address, advertise: Address? = nil, settings: Settings = .lan,
                keyring: Keyring = Keyring(), keyringPath: String? = nil, metadata: [UInt8] = [],
                seed: UInt64 = UInt64.random(in: 0...UInt64.max), identity: NodeIdentity? = nil, peersPath: String? = nil) {
        self.name = name
        self.bind = bind
        self.advertise = advertise
        self.settings = settings
        self.keyring = keyring
        self.keyringPath = keyringPath
        self.metadata = metadata
        self.seed = seed
        self.identity = identity
        self.peersPath = peersPath
    }
}

/// Traffic counters of one node, for metrics and benchmarks.
public struct GossipTraffic: Sendable, Equatable {
    public var packetsSent = 0
    public var packetsReceived = 0
    public var bytesSent = 0
    public var bytesReceived = 0
    public var streamBytesSent = 0
    public var streamBytesReceived = 0
    /// Packets or frames dropped, by reason (`unknown_key`, `plaintext_refused`, `malformed`, ...).
    public var dropped: [String: Int] = [:]
}

/// The UDP/TCP shell around one ``Gossip/Instance``: it moves bytes and carries out directives.
///
/// All mutable state lives on one event loop (`loop`); every entry point hops there first. That
/// is what makes the `@unchecked Sendable` below safe.
public final class GossipNode: @unchecked Sendable {
    public let name: String
    public let advertised: Address
    /// Outgoing TCP binds here too, so peers (and firewalls) see the same source as for UDP.
    let sourceAddress: SocketAddress?
    let loop: any EventLoop
    let logger: Logger
    var core: Instance
    var keyring: Keyring { didSet { sharedKeyring?.current = keyring } }
    let sharedKeyring: SharedKeyring?
    let keyringPath: String?
    var udp: (any Channel)?
    var tcp: (any Channel)?
    var ticker: RepeatedTask?
    let origin = NIODeadline.now()
    var traffic = GossipTraffic()
    /// Replay protection for datagrams and for stream requests (see ``PacketGuard``; a session
    /// and counter of their own each); touched only on `loop`.
    var packetGuard = PacketGuard()
    var streamGuard = PacketGuard()
    /// Where the stream requests seen are written down (beside the peers file).
    let streamSessionsPath: String?
    var socketAddresses: [Address: SocketAddress] = [:]
    var onEvent: (@Sendable (Event) -> Void)?
    let maxFrame = 16 << 20
    /// Open incoming stream connections: at most 8 from one address and 256 in all (more are closed at once, counted as
    /// `too_many_streams`), so a stranger cannot hold many 16 MiB frames half-sent.
    var openStreams = ConnectionCounts(maxPerAddress: 8, maxTotal: 256)
    /// Bytes the incoming streams may announce and have buffered at once, in all: a stream's
    /// frame is sealed, so nothing proves the sender before all of it has arrived.
    static let streamBudgetBytes = 64 << 20
    var streamBudgetUsed = 0
    let identity: NodeIdentity?
    let peersPath: String?
    var peers: PeerDirectory
    var joinAddresses: [Address] = []
    var lastRekeyAttempt: [Address: NIODeadline] = [:]
    var rekeyReplies: [NIODeadline] = []
    var nextPeersSave = NIODeadline.now()


    private init(config: GossipConfiguration, loop: any EventLoop, logger: Logger) {
        self.name = config.name
        self.advertised = config.advertise ?? config.bind
        self.sourceAddress = try? SocketAddress(ipAddress: config.bind.host, port: 0)
        self.loop = loop
        self.logger = logger
        var settings = config.settings
        // Datagrams are sealed with their replay numbers as the nonce; without keys, plain
        // frames carry those numbers inside (the larger of the two).
        settings.sealOverhead = config.keyring.isEncrypted ? Keyring.datagramOverhead : config.keyring.overhead + PacketGuard.sessionBytes + 10
        self.identity = config.identity
        self.peersPath = config.peersPath
        self.peers = PeerDirectory.load(path: config.peersPath)
        // Stream requests seen by earlier runs are not taken again after a restart.
        self.streamSessionsPath = config.peersPath.map { p in String(p[..<(p.lastIndex(of: "/") ?? p.startIndex)]) + "/stream-sessions" }
        if let path = streamSessionsPath, let data = FileManager.default.contents(atPath: path) { streamGuard.restoreSeen(Array(data)) }
        self.core = Instance(name: config.name, address: config.advertise ?? config.bind,
                             metadata: MetadataEnvelope.wrap(config.metadata, identity: config.identity),
                             settings: settings, seed: config.seed)
        self.keyring = config.keyring
        self.sharedKeyring = config.sharedKeyring
        config.sharedKeyring?.current = config.keyring
        self.keyringPath = config.keyringPath
    }

    /// Binds UDP and TCP on the configured address and starts the protocol.
    ///
    /// Throws when either socket cannot be bound (the address is in use or not local).
    public static func start(_ config: GossipConfiguration, group: any EventLoopGroup, logger: Logger,
                             onEvent: (@Sendable (Event) -> Void)? = nil) async throws -> GossipNode {
        let loop = group.next()
        let node = GossipNode(config: config, loop: loop, logger: logger)
        node.onEvent = onEvent
        let bindAddress = try SocketAddress(ipAddress: config.bind.host, port: Int(config.bind.port))
        let udp = try await DatagramBootstrap(group: loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(DatagramHandler(node: node)) }
            }
            .bind(to: bindAddress).get()
        let tcp: any Channel
        do {
            tcp = try await ServerBootstrap(group: loop)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHandler(StreamBudgetHandler(node: node))
                        try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(LengthPrefixedFrameDecoder(maxFrame: node.maxFrame)))
                        try ch.pipeline.syncOperations.addHandler(StreamServerHandler(node: node))
                    }
                }
                .bind(to: bindAddress).get()
        } catch {
            try? await udp.close()
            throw error
        }
        try await loop.submit {
            node.udp = udp
            node.tcp = tcp
            node.ticker = loop.scheduleRepeatedTask(initialDelay: .zero, delay: node.timeAmount(config.settings.tickInterval)) { _ in
                node.tick()
            }
        }.get()
        return node
    }

    // MARK: public API (hops to the loop)

    /// Joins through any of these addresses; retried in the background until one answers.
    public func join(_ addresses: [Address]) async {
        try? await loop.submit {
            self.joinAddresses = addresses
            self.carry(self.core.join(addresses, now: self.now))
        }.get()
    }

    /// Every member as the core sees it, with the agent's own metadata bytes.
    public func members() async -> [Member] {
        (try? await loop.submit {
            self.core.members.map { m in
                var m = m
                m.metadata = MetadataEnvelope.unwrap(m.metadata).metadata
                return m
            }
        }.get()) ?? []
    }

    public func updateMetadata(_ bytes: [UInt8]) async {
        try? await loop.submit {
            self.carry(self.core.updateMetadata(MetadataEnvelope.wrap(bytes, identity: self.identity), now: self.now))
        }.get()
    }

    /// Gossip addresses of members remembered from earlier runs (for rejoining without `--join`).
    public func rememberedPeers() async -> [Address] {
        (try? await loop.submit { self.peers.addresses.filter { $0 != self.advertised } }.get()) ?? []
    }

    public func traffic() async -> GossipTraffic {
        (try? await loop.submit { self.traffic }.get()) ?? GossipTraffic()
    }

    public func stats() async -> (Stats, localHealth: Int) {
        (try? await loop.submit { (self.core.stats, self.core.localHealth) }.get()) ?? (Stats(), 0)
    }

    public var isEncrypted: Bool {
        get async { (try? await loop.submit { self.keyring.isEncrypted }.get()) ?? false }
    }

    /// Broadcasts a graceful leave and waits (up to `timeout`) until it has been sent.
    public func leave(timeout: Duration = .seconds(2)) async {
        try? await loop.submit { self.carry(self.core.leave(now: self.now)) }.get()
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let pending = (try? await loop.submit { self.core.hasPendingBroadcasts }.get()) ?? false
            if !pending { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Stops ticking and closes the sockets.
    public func shutdown() async {
        try? await loop.submit { self.ticker?.cancel() }.get()
        try? await udp?.close()
        try? await tcp?.close()
    }

    // MARK: loop-confined internals

    var now: Duration { .nanoseconds((NIODeadline.now() - origin).nanoseconds) }

    func timeAmount(_ d: Duration) -> TimeAmount { .nanoseconds(Int64(d / .nanoseconds(1))) }

    func tick() {
        carry(core.onTick(now: now))
        if NIODeadline.now() >= nextPeersSave {
            nextPeersSave = NIODeadline.now() + .seconds(2)
            peers.save(path: peersPath)
        }
    }

    func socketAddress(_ a: Address) -> SocketAddress? {
        if let s = socketAddresses[a] { return s }
        guard let s = try? SocketAddress(ipAddress: a.host, port: Int(a.port)) else { return nil }
        if socketAddresses.count > 10_000 { socketAddresses.removeAll() }
        socketAddresses[a] = s
        return s
    }

    func drop(_ reason: String, from: String) {
        traffic.dropped[reason, default: 0] += 1
        logger.debug("dropped gossip input", metadata: ["reason": "\(reason)", "from": "\(from)"])
    }

    func onDatagram(_ bytes: ByteBuffer, from remote: SocketAddress) {
        traffic.packetsReceived += 1
        traffic.bytesReceived += bytes.readableBytes
        guard let ip = remote.ipAddress, let port = remote.port else { return }
        // A sealed datagram carries its replay numbers as its nonce; a frame of the first
        // version (and a plain one) inside its payload.
        let opened: Result<[UInt8]?, OpenFailure> = bytes.withUnsafeReadableBytes { raw in
            let frame = UnsafeBufferPointer(start: raw.bindMemory(to: UInt8.self).baseAddress, count: raw.count)
            if frame.count >= 2, frame[1] == Keyring.datagramVersion {
                return keyring.openDatagram(frame).map { d in
                    packetGuard.accept(session: d.session, counter: UInt64(d.counter)) ? d.payload : nil
                }
            }
            return keyring.open(frame).map { packetGuard.unwrap($0) }
        }
        switch opened {
        case .failure(let f):
            drop(f.rawValue, from: "\(ip):\(port)")
            // Sealed with a key we do not hold: the cluster may have rotated while we were away.
            if f == .unknownKey { requestRekey(from: Address(host: ip, port: UInt16(port))) }
        case .success(let inner):
            guard let packet = inner else {
                drop("replayed", from: "\(ip):\(port)")
                return
            }
            guard let messages = Codec.decodePacket(packet) else {
                drop("malformed", from: "\(ip):\(port)")
                return
            }
            carry(core.onPacket(messages, from: Address(host: ip, port: UInt16(port)), now: now))
        }
    }

    /// Answers one TCP frame; returns the sealed reply, if any.
    func onStreamFrame(_ frame: [UInt8], from remote: String) -> EventLoopFuture<[UInt8]?> {
        traffic.streamBytesReceived += frame.count + 4
        if frame.count >= 2 && frame[0] == Keyring.magic && frame[1] == RekeyFrame.request {
            return loop.makeSucceededFuture(answerRekey(Array(frame.dropFirst(2)), from: remote))
        }
        switch keyring.open(frame) {
        case .failure(let f):
            drop(f.rawValue, from: remote)
            return loop.makeSucceededFuture(nil)
        case .success(let guarded):
            // A stream request captured and sent again (say, a keyring operation) is refused.
            guard let payload = streamGuard.unwrap(guarded) else {
                drop("replayed", from: remote)
                return loop.makeSucceededFuture(nil)
            }
            if let path = streamSessionsPath { try? AtomicFile.write(Data(streamGuard.encodeSeen()), to: path, mode: 0o600) }
            guard let kind = payload.first.flatMap(StreamKind.init(rawValue:)) else {
                drop("malformed", from: remote)
                return loop.makeSucceededFuture(nil)
            }
            switch kind {
            case .gossip:
                guard let m = Codec.decodeStream(Array(payload.dropFirst())) else {
                    drop("malformed", from: remote)
                    return loop.makeSucceededFuture(nil)
                }
                let peer = Address(host: remote, port: 0)
                let (reply, ds) = core.onStreamRequest(m, from: peer, now: now)
                carry(ds)
                guard let reply else { return loop.makeSucceededFuture(nil) }
                return loop.makeSucceededFuture(keyring.seal([StreamKind.gossip.rawValue] + Codec.encodeStream(reply)))
            case .keyringQuery:
                guard let op = KeyringOperation.decode(payload.dropFirst()) else {
                    drop("malformed", from: remote)
                    return loop.makeSucceededFuture(nil)
                }
                // Seal the reply with the key the query came with, so the asker can always open it.
                let sealer = keyring
                let reply = applyKeyring(op)
                return loop.makeSucceededFuture(sealer.seal(reply.encode()))
            case .liveness:
                return loop.makeSucceededFuture(keyring.seal(payload))
            case .keyringReply:
                drop("unexpected", from: remote)
                return loop.makeSucceededFuture(nil)
            }
        }
    }

    func carry(_ directives: [Directive]) {
        for d in directives {
            switch d {
            case .send(let messages, let to):
                sendPacket(messages, to: to)
            case .connect(let to, let m):
                exchange(m, with: to)
            case .checkReachability(_, let at, let seq):
                checkReachability(at, seq: seq)
            case .event(let e):
                log(e)
                remember(e)
                onEvent?(e)
            }
        }
    }

    func sendPacket(_ messages: [Message], to: Address) {
        guard let udp, let sa = socketAddress(to) else { return }
        let packet = Codec.encodePacket(messages)
        let (session, counter) = packetGuard.next()
        let sealed = keyring.sealDatagram(packet, session: session, counter: counter) ?? keyring.seal(packetGuard.wrap(packet))
        traffic.packetsSent += 1
        traffic.bytesSent += sealed.count
        var buf = udp.allocator.buffer(capacity: sealed.count)
        buf.writeBytes(sealed)
        udp.writeAndFlush(AddressedEnvelope(remoteAddress: sa, data: buf), promise: nil)
    }

    /// Connects, sends one sealed frame, and reads one sealed reply frame (unless none is expected).
    func request(_ payload: [UInt8], to: Address, expectReply: Bool, timeout: Duration, raw: Bool = false) -> EventLoopFuture<[UInt8]?> {
        guard let sa = socketAddress(to) else {
            return loop.makeFailedFuture(IOError(errnoCode: EINVAL, reason: "bad address \(to)"))
        }
        let sealed = raw ? payload : keyring.seal(streamGuard.wrap(payload))
        let promise = loop.makePromise(of: [UInt8]?.self)
        let maxFrame = self.maxFrame
        let timeoutAmount = timeAmount(timeout)
        var bootstrap = ClientBootstrap(group: loop)
        if let src = sourceAddress { bootstrap = bootstrap.bind(to: src) }
        bootstrap
            .connectTimeout(timeAmount(min(timeout, .seconds(2))))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(LengthPrefixedFrameDecoder(maxFrame: maxFrame)))
                    try ch.pipeline.syncOperations.addHandler(ReplyHandler(promise: promise))
                }
            }
            .connect(to: sa)
            .whenComplete { result in
                switch result {
                case .failure(let e):
                    promise.fail(e)
                case .success(let ch):
                    var buf = ch.allocator.buffer(capacity: sealed.count + 4)
                    buf.writeFrame(sealed)
                    self.traffic.streamBytesSent += buf.readableBytes
                    if expectReply {
                        ch.writeAndFlush(buf, promise: nil)
                        let timer = ch.eventLoop.scheduleTask(in: timeoutAmount) {
                            promise.fail(IOError(errnoCode: ETIMEDOUT, reason: "no reply from \(to)"))
                            ch.close(promise: nil)
                        }
                        promise.futureResult.whenComplete { _ in timer.cancel(); ch.close(promise: nil) }
                    } else {
                        ch.writeAndFlush(buf).whenComplete { _ in
                            ch.close(promise: nil)
                            promise.succeed(nil)
                        }
                    }
                }
            }
        return promise.futureResult
    }

    func exchange(_ m: StreamMessage, with peer: Address) {
        let expectReply: Bool
        if case .push = m { expectReply = false } else { expectReply = true }
        request([StreamKind.gossip.rawValue] + Codec.encodeStream(m), to: peer, expectReply: expectReply, timeout: .seconds(5))
            .whenComplete { result in
                switch result {
                case .success(nil):
                    if expectReply { self.carry(self.core.onStreamFailed(to: peer, now: self.now)) }
                case .success(let frame?):
                    self.traffic.streamBytesReceived += frame.count + 4
                    guard case .success(let payload) = self.keyring.open(frame), payload.first == StreamKind.gossip.rawValue,
                          let reply = Codec.decodeStream(Array(payload.dropFirst())) else {
                        self.drop("malformed_reply", from: "\(peer)")
                        self.carry(self.core.onStreamFailed(to: peer, now: self.now))
                        return
                    }
                    self.carry(self.core.onStreamReply(reply, from: peer, now: self.now))
                case .failure:
                    self.carry(self.core.onStreamFailed(to: peer, now: self.now))
                }
            }
    }

    /// A TCP ping to the member's gossip port: an echo proves it alive, a refused connection
    /// proves the agent process gone.
    func checkReachability(_ a: Address, seq: UInt32) {
        var nonce = [UInt8](repeating: 0, count: 8)
        for i in nonce.indices { nonce[i] = UInt8.random(in: 0...255) }
        let ping = [StreamKind.liveness.rawValue] + nonce
        // As long as the probe's indirect window (scaled like it by this node's health).
        let window = core.settings.indirectTimeout * (core.localHealth + 1)
        request(ping, to: a, expectReply: true, timeout: window).whenComplete { result in
            switch result {
            case .success(let frame?):
                if case .success(let echo) = self.keyring.open(frame), echo == ping {
                    self.carry(self.core.onReachability(seq: seq, .answered, now: self.now))
                }
            case .success(nil):
                break
            case .failure(let e):
                if Self.isRefused(e) { self.carry(self.core.onReachability(seq: seq, .refused, now: self.now)) }
            }
        }
    }

    static func isRefused(_ e: any Error) -> Bool {
        if let io = e as? IOError { return io.errnoCode == ECONNREFUSED }
        if let c = e as? NIOConnectionError { return c.connectionErrors.contains { isRefused($0.error) } }
        return false
    }

    func log(_ e: Event) {
        switch e {
        case .memberJoined(let m):
            logger.info("member joined", metadata: ["member": "\(m.name)", "address": "\(m.address)"])
        case .memberSuspected(let m, let by):
            logger.info("member suspected", metadata: ["member": "\(m.name)", "by": "\(by)"])
        case .memberRecovered(let m):
            logger.info("member recovered", metadata: ["member": "\(m.name)", "incarnation": "\(m.incarnation)"])
        case .memberDied(let m, let by):
            logger.info("member dead", metadata: ["member": "\(m.name)", "by": "\(by)"])
        case .memberLeft(let m):
            logger.info("member left", metadata: ["member": "\(m.name)"])
        case .memberUpdated(let m):
            logger.debug("member updated", metadata: ["member": "\(m.name)"])
        case .memberReaped(let n):
            logger.info("member reaped", metadata: ["member": "\(n)"])
        case .refuted(let rumour, let inc):
            logger.info("refuted a rumour about this node", metadata: ["rumour": "\(rumour)", "incarnation": "\(inc)"])
        case .nameConflict(let n, let known, let claimed):
            logger.error("name conflict: two agents use one name",
                         metadata: ["member": "\(n)", "known": "\(known)", "claimed": "\(claimed)"])
        case .joined(let via, let count):
            logger.info("joined cluster", metadata: ["via": "\(via)", "members": "\(count)"])
        case .joinFailed(let attempt, let retryIn):
            logger.warning("join failed, retrying", metadata: ["attempt": "\(attempt)", "retry_in": "\(retryIn)"])
        }
    }
}

/// Feeds datagrams to the node.
final class DatagramHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let node: GossipNode
    init(node: GossipNode) { self.node = node }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let env = unwrapInboundIn(data)
        node.onDatagram(env.data, from: env.remoteAddress)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors and oversize datagrams must never stop the receive loop.
        node.logger.debug("udp error", metadata: ["error": "\(error)"])
    }
}

/// Serves one request frame per connection.
/// Reserves the frame an incoming stream announces (its first four bytes) from the node's
/// stream budget before any of it is buffered; over budget, the stream is closed. Runs on the
/// node's loop, as every stream does.
final class StreamBudgetHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let node: GossipNode
    var header: [UInt8] = []
    var reserved = 0
    var decided = false
    init(node: GossipNode) { self.node = node }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !decided {
            let buf = unwrapInboundIn(data)
            header += buf.readableBytesView.prefix(4 - header.count)
            if header.count == 4 {
                decided = true
                let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
                guard length <= node.maxFrame, node.streamBudgetUsed + length <= GossipNode.streamBudgetBytes else {
                    node.drop("stream_budget", from: context.remoteAddress?.ipAddress ?? "?")
                    context.close(promise: nil)
                    return
                }
                reserved = length
                node.streamBudgetUsed += length
            }
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        node.streamBudgetUsed -= reserved
        reserved = 0
        context.fireChannelInactive()
    }
}

final class StreamServerHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let node: GossipNode
    var answered = false
    init(node: GossipNode) { self.node = node }

    var counted: String?

    func channelActive(context: ChannelHandlerContext) {
        let remote = context.remoteAddress?.ipAddress ?? "?"
        guard node.openStreams.admit(remote) else {
            node.drop("too_many_streams", from: remote)
            context.close(promise: nil)
            return
        }
        counted = remote
        // A peer that connects and says nothing is cut off.
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .seconds(10)) { ctx.value.close(promise: nil) }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let remote = counted {
            counted = nil
            node.openStreams.leave(remote)
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        answered = true
        var buf = unwrapInboundIn(data)
        let bytes = buf.readBytes(length: buf.readableBytes) ?? []
        let remote = context.remoteAddress?.ipAddress ?? "?"
        let ctx = NIOLoopBound(context, eventLoop: context.eventLoop)
        node.onStreamFrame(bytes, from: remote).whenSuccess { reply in
            let context = ctx.value
            guard let reply else {
                context.close(promise: nil)
                return
            }
            var out = context.channel.allocator.buffer(capacity: reply.count + 4)
            out.writeFrame(reply)
            self.node.traffic.streamBytesSent += out.readableBytes
            context.writeAndFlush(NIOAny(out)).whenComplete { _ in context.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        node.drop("bad_stream", from: context.remoteAddress?.description ?? "?")
        context.close(promise: nil)
    }
}

/// Completes a promise with the first frame a client connection receives.
final class ReplyHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<[UInt8]?>
    init(promise: EventLoopPromise<[UInt8]?>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buf = unwrapInboundIn(data)
        promise.succeed(buf.readBytes(length: buf.readableBytes) ?? [])
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.succeed(nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
