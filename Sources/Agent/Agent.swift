import Access
import API
import Dispatch
import Executor
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Gossip
import GossipNIO
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Keyring
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Raft
import RaftNIO
import ServiceLifecycle
import Synchronization

/// One `caravan agent` process: gossip membership, the Raft server and the HTTP API, wired together.
public final class Agent: Sendable {
    public let config: AgentConfiguration
    public let gossip: GossipNode
    public let raft: RaftNode
    let store: ClusterStore
    let executor: Executor
    /// Pulled images (collected by the node client when no task uses them).
    let images: ImageStore
    let logger: Logger
    let capacity: CapacityView
    /// TLS for this agent's calls to other agents (relays): its own certificate as the client's,
    /// and the server role checked in theirs.
    let peerTLS: ClientTLS?
    /// The HTTP server's TLS configuration, checked at start.
    let serverTLS: TLSConfiguration?
    /// Who calls: ACL tokens resolved against the replicated ACL state.
    let tokens: TokenResolver
    /// Variables sealed at rest under a data key the cluster keyring protects.
    let cipher: VariableCipher
    /// Set when shutdown begins: long requests (blocking reads, follows, exec) end at once.
    public let stopping = ShutdownSignal()
    /// Exec sessions and log follows in progress here, each capped (`ClusterLimits`).
    /// Open HTTP connections, per address and in all (`HTTPConnectionCounter`).
    let httpConnections = HTTPConnectionCounter()
    var execSessions: ConcurrencyLimit { concurrency.exec }
    var logFollows: ConcurrencyLimit { concurrency.follows }
    /// What-ifs computing here: one at a time, so questions cannot crowd out the agent's work.
    let whatIfs = ConcurrencyLimit(1, "what-ifs")
    /// Snapshot restores in progress here (each holds a whole snapshot file in memory).
    let restores = ConcurrencyLimit(1, "snapshot restores")
    private let concurrency: (exec: ConcurrencyLimit, follows: ConcurrencyLimit)
    private let metadata: Mutex<NodeMetadata>
    private let shutdownTrigger = Mutex<(@Sendable () -> Void)?>(nil)
    private let shutdownRequested = Mutex(false)
    private let leaving = Mutex<Task<Void, Never>?>(nil)

    private init(config: AgentConfiguration, gossip: GossipNode, raft: RaftNode, store: ClusterStore, executor: Executor, images: ImageStore,
                 logger: Logger, capacity: CapacityView, metadata: NodeMetadata, tls: (server: TLSConfiguration, peer: ClientTLS)?,
                 keyring: SharedKeyring) {
        self.cipher = VariableCipher(keyring: keyring)
        self.serverTLS = tls?.server
        self.peerTLS = tls?.peer
        self.concurrency = (ConcurrencyLimit(config.limits.maxExecSessions, "exec sessions"),
                            ConcurrencyLimit(config.limits.maxLogFollows, "log follows"))
        self.images = images
        self.config = config
        self.gossip = gossip
        self.raft = raft
        self.store = store
        self.executor = executor
        self.logger = logger
        self.capacity = capacity
        self.metadata = Mutex(metadata)
        self.tokens = TokenResolver(enforceBeforeBootstrap: config.aclEnabled, markerPath: config.dataDir + "/acl-on",
                                    local: { [store] in store.acl },
                                    groupExists: { [gossip] in
                                        await gossip.members().contains { NodeMetadata.decode($0.metadata)?.raft == .member }
                                    }) { [raft] hash, linearizable in
            let bytes = try await raft.read(ACLQuery.resolve(secretHash: hash).encode(), stale: !linearizable, timeout: .seconds(2))
            guard let state = ACLState.decode(bytes) else { throw APIError(.badGateway, "bad_answer", "a member sent an unreadable ACL answer") }
            return state
        }
    }

    /// Changes this agent's gossip metadata and spreads it.
    func updateMetadata(_ change: (inout NodeMetadata) -> Void) async {
        let bytes = metadata.withLock { m -> [UInt8] in
            change(&m)
            return m.encode()
        }
        await gossip.updateMetadata(bytes)
    }

    /// Prepares the data directory and keyring, binds gossip, and joins the given peers.
    ///
    /// Throws ``AgentError`` with a one-line message on any configuration or bind problem.
    public static func start(_ config: AgentConfiguration, logger: Logger) async throws -> Agent {
        do {
            try FileManager.default.createDirectory(atPath: config.dataDir, withIntermediateDirectories: true)
        } catch {
            throw AgentError("cannot create data dir \(config.dataDir): \(error)")
        }
        // The keyring, the Raft log (variables, job files with registry credentials) and every
        // allocation's files are the agent's alone.
        if chmod(config.dataDir, 0o700) != 0 {
            throw AgentError("cannot make data dir \(config.dataDir) private (mode 0700): \(String(cString: strerror(errno)))")
        }
        let keyring = try loadKeyring(config, logger: logger)
        if let t = config.tls { try await AgentCertificate.check(t) }
        let tls = try config.tls.map(Self.loadTLS)
        let capacity = HostFingerprint.capacity(dataDir: config.dataDir)
        let images = ImageStore(root: config.dataDir + "/images", insecureRegistries: config.insecureRegistries,
                                registryCAs: config.registryCAs, registryClientCertificates: config.registryClientCertificates)
        let drivers = makeDrivers(config, images: images)
        var metadata = NodeMetadata(role: "agent", version: config.version, capacity: capacity,
                                    free: ResourcesView(cpuMillicores: capacity.cpuMillicores, memoryMiB: capacity.memoryMiB,
                                                        diskMiB: capacity.diskMiB),
                                    tags: config.tags, httpPort: config.httpPort, rpcPort: config.rpcPort)
        metadata.attributes = HostFingerprint.attributes(cgroup: TaskCgroup.detected.rawValue)
        if config.enableRawExec {
            logger.notice("raw_exec is enabled: jobs may run plain processes as \(geteuid() == 0 ? "root" : "this agent's user") on this node")
        } else {
            logger.info("task driver not offered", metadata: ["driver": "raw_exec", "why": "off unless the agent runs with --enable-raw-exec"])
        }
        for d in drivers {
            let (usable, detail) = d.fingerprint()
            if usable { metadata.drivers.append(d.name.rawValue) } else {
                logger.info("task driver not available", metadata: ["driver": "\(d.name.rawValue)", "why": "\(detail)"])
            }
        }
        let encoded = metadata.encode()
        guard encoded.count + 33 <= config.gossip.maxMetadataSize else {
            throw AgentError("node metadata is \(encoded.count) bytes, over the \(config.gossip.maxMetadataSize)-byte bound: use fewer or shorter --tag values", usage: true)
        }
        let bind = Address(host: config.bind, port: config.gossipPort)
        let advertise = config.advertise.map { Address(host: $0, port: config.gossipPort) }
        let identity: NodeIdentity
        do { identity = try NodeIdentity.loadOrCreate(path: config.dataDir + "/identity.key") } catch {
            throw AgentError(error.message)
        }
        let shared = SharedKeyring(keyring)
        var gossipConfig = GossipConfiguration(name: config.name, bind: bind, advertise: advertise, settings: config.gossip,
                                               keyring: keyring, keyringPath: keyring.isEncrypted ? config.keyringPath : nil,
                                               metadata: encoded, identity: identity, peersPath: config.dataDir + "/peers.json")
        gossipConfig.sharedKeyring = shared
        let store = ClusterStore()
        let raft = try await startRaft(config, keyring: shared, stateMachine: store, logger: logger)
        let node: GossipNode
        do {
            node = try await GossipNode.start(gossipConfig, group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        } catch {
            await raft.shutdown()
            throw AgentError("cannot bind gossip on \(bind) (UDP and TCP): \(describe(error))")
        }
        logger.info("agent started", metadata: ["name": "\(config.name)", "gossip": "\(bind)",
                                                "http": "\(config.bind):\(config.httpPort)", "rpc": "\(config.bind):\(config.rpcPort)",
                                                "encrypted": "\(keyring.isEncrypted)"])
        // Rejoin the members remembered from earlier runs as well as those named on the command line.
        var join = config.join
        for a in await node.rememberedPeers() where !join.contains(a) { join.append(a) }
        if !join.isEmpty { await node.join(join) }
        let executor = Executor(root: config.dataDir + "/alloc", nodeName: config.name, address: config.bind, drivers: drivers,
                                report: { [raft] reports in await NodeClient.commit(reports, raft: raft, logger: logger) })
        await executor.setMaxKillTimeout(config.maxKillTimeout)
        await executor.setUserPolicy(config.taskUsers)
        return Agent(config: config, gossip: node, raft: raft, store: store, executor: executor, images: images, logger: logger,
                     capacity: capacity, metadata: metadata, tls: tls, keyring: shared)
    }

    /// The HTTP server's TLS configuration and the client side for calls to other agents, from
    /// the configured files; a file that cannot be read, or a certificate that does not match its
    /// key, stops the start with its name.
    static func loadTLS(_ t: AgentTLS) throws -> (server: TLSConfiguration, peer: ClientTLS) {
        let chain: [NIOSSLCertificate], key: NIOSSLPrivateKey, ca: [NIOSSLCertificate]
        do { ca = try NIOSSLCertificate.fromPEMFile(t.caFile) } catch { throw AgentError("tls.caFile \(t.caFile): \(error)", usage: true) }
        do { chain = try NIOSSLCertificate.fromPEMFile(t.certFile) } catch { throw AgentError("tls.certFile \(t.certFile): \(error)", usage: true) }
        do { key = try NIOSSLPrivateKey(file: t.keyFile, format: .pem) } catch { throw AgentError("tls.keyFile \(t.keyFile): \(error)", usage: true) }
        var server = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        server.minimumTLSVersion = .tlsv12
        server.trustRoots = .certificates(ca)
        server.certificateVerification = t.verifyIncoming ? .noHostnameVerification : .none
        do { _ = try NIOSSLContext(configuration: server) } catch {
            throw AgentError("tls: \(t.certFile) and \(t.keyFile) do not make a usable certificate: \(error)", usage: true)
        }
        let peer: ClientTLS
        do { peer = try ClientTLS(caFile: t.caFile, certFile: t.certFile, keyFile: t.keyFile, serverName: ClientTLS.serverRole) } catch {
            throw AgentError(error.message, usage: true)
        }
        return (server, peer)
    }

    /// The task drivers of this agent; those whose fingerprint fails are not offered to the scheduler.
    /// `raw_exec` is among them only when the configuration enables it: a job that needs it is
    /// then not placed here, and its placement failure says why.
    static func makeDrivers(_ config: AgentConfiguration, images: ImageStore) -> [any TaskDriver] {
        let raw: [any TaskDriver] = config.enableRawExec ? [RawExecDriver(useCgroups: geteuid() == 0)] : []
        return raw + [RuncDriver(name: .exec, stateRoot: config.dataDir + "/runc"),
                      ContainerDriver(images: images, stateRoot: config.dataDir + "/runc")]
    }

    static func startRaft(_ config: AgentConfiguration, keyring: SharedKeyring, stateMachine: ClusterStore,
                          logger: Logger) async throws -> RaftNode {
        let tick = Duration.milliseconds(10)
        let election = max(2, Int(config.raftElectionTimeout / tick))
        let settings = RaftSettings(heartbeatTicks: max(1, Int(config.raftHeartbeat / tick)), electionTicks: election,
                                    electionSpreadTicks: max(1, election / 2))
        let advertise = "\(config.advertise ?? config.bind):\(config.rpcPort)"
        let raftConfig = RaftNodeConfiguration(id: ServerID(config.name), bindHost: config.bind, port: Int(config.rpcPort),
                                               advertise: advertise, directory: config.dataDir + "/raft", settings: settings,
                                               tickInterval: tick, keyring: keyring, snapshotEvery: config.raftSnapshotEvery,
                                               keepEntries: min(2_000, config.raftSnapshotEvery / 5))
        do {
            return try await RaftNode.start(raftConfig, stateMachine: stateMachine, group: MultiThreadedEventLoopGroup.singleton,
                                            logger: logger)
        } catch let e as WriteAheadLog.Failure {
            throw AgentError("cannot open the Raft log: \(e.description)")
        } catch {
            throw AgentError("cannot bind RPC on \(config.bind):\(config.rpcPort) (TCP): \(describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)).lowercased() }
        if let e = error as? SocketAddressError { return "\(e)" }
        return "\(error)"
    }

    /// Without a key, gossip and Raft frames would travel unsealed: anyone reaching port 4681 could
    /// append to the log. Only `--dev` runs that way.
    static func noKey(_ what: String) -> AgentError {
        AgentError("\(what): agents seal gossip and Raft with a shared key. Make one with `caravan keygen` and start every "
                   + "agent with --encrypt KEY (or `encrypt:` in the config file); --dev runs a single agent without one", usage: true)
    }

    static func loadKeyring(_ config: AgentConfiguration, logger: Logger) throws -> Keyring {
        let path = config.keyringPath
        if FileManager.default.fileExists(atPath: path) {
            let ring: Keyring
            do { ring = try KeyringFile.load(path: path) } catch { throw AgentError(error.message, usage: true) }
            if let k = config.encryptKey, !ring.keys.contains(k) {
                logger.warning("--encrypt ignored: the keyring file already exists and does not hold that key; use `caravan keyring` to rotate",
                               metadata: ["keyring": "\(path)"])
            }
            guard ring.isEncrypted || config.dev else { throw noKey("keyring file \(path) holds no key") }
            return ring
        }
        if config.keyringFile != nil {
            throw AgentError("keyring file \(path) does not exist", usage: true)
        }
        guard let key = config.encryptKey else {
            guard config.dev else { throw noKey("no cluster key") }
            // Unsealed traffic stays on this machine.
            guard config.bind.hasPrefix("127.") || config.bind == "::1" else {
                throw AgentError("--dev without a cluster key listens on loopback only (127.0.0.0/8 or ::1), not \(config.bind): "
                                 + "give every agent --encrypt KEY (make one with `caravan keygen`)", usage: true)
            }
            logger.warning("no cluster key (--dev): gossip and Raft travel unsealed; any host that reaches them can join and write")
            return Keyring()
        }
        let ring = Keyring(primary: key)
        do { try KeyringFile.save(ring, path: path) } catch { throw AgentError(error.message) }
        return ring
    }

    /// Serves the HTTP API until SIGINT/SIGTERM or `POST /v1/agent/leave`, then leaves gracefully.
    /// The HTTP routes of this agent (tests drive them without a socket).
    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.middlewares.add(RequestMetricsMiddleware())
        router.middlewares.add(WriteIDEcho())  // outside ErrorMiddleware: errors carry it too
        let routeMethods = RouteMethods()
        router.middlewares.add(ErrorMiddleware(routes: routeMethods))
        router.middlewares.add(AccessMiddleware(resolver: tokens))  // inside ErrorMiddleware: refusals are JSON errors
        AgentRoutes(agent: self).register(on: router)
        ACLRoutes(agent: self).register(on: router)
        NamespaceRoutes(agent: self).register(on: router)
        RaftRoutes(agent: self).register(on: router)
        VariableRoutes(agent: self).register(on: router)
        JobRoutes(agent: self).register(on: router)
        AllocationRoutes(agent: self).register(on: router)
        MetricsRoutes(agent: self).register(on: router)
        let routes = router.routes.map { (path: $0.path.description, method: $0.method.rawValue) }
        routeMethods.record(routes)
        let unguarded = AccessRules.missing(routes)
        precondition(unguarded.isEmpty, "routes without an access rule in AccessRules.table: \(unguarded.joined(separator: ", "))")
        return router
    }

    /// An HTTP connection with no request in progress (or whose request stopped arriving) is
    /// closed after this long: half-sent headers and idle keep-alives don't pile up. Answers
    /// that take long (blocking reads, follows) are not cut; interactive exec clients send an
    /// empty input frame every 30 s.
    static let httpIdleTimeout: TimeAmount = .seconds(120)

    /// The API's HTTP/1.1 server, over TLS when `tls` is set: `handlers` (made for each
    /// connection) first, then each connection's requests served on its event loop
    /// (`OnItsEventLoop`; `AccessRules.quick`).
    static func httpServer(tls: TLSConfiguration?, handlers: @escaping @Sendable () -> [any RemovableChannelHandler]) -> HTTPServerBuilder {
        let http1 = HTTP1Channel.Configuration(additionalChannelHandlers: handlers(), idleTimeout: Self.httpIdleTimeout)
        return HTTPServerBuilder { responder in
            let plain = HTTP1Channel(responder: responder, configuration: http1)
            if let tls { return OnItsEventLoop(base: try TLSChannel(plain, tlsConfiguration: tls)) }
            return OnItsEventLoop(base: plain)
        }
    }

    public func run() async throws {
        let router = makeRouter()
        let counter = httpConnections
        let server = Self.httpServer(tls: serverTLS) { [HTTPConnectionGate(counter: counter)] }
        // The API's own event loops, apart from gossip's: quick handlers run on them
        // (`OnItsEventLoop`, `AccessRules.quick`), the rest on Swift's shared pool.
        let httpLoops = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        defer { httpLoops.shutdownGracefully { _ in } }
        let app = Application(router: router,
                              server: server,
                              configuration: .init(address: .hostname(config.bind, port: Int(config.httpPort)),
                                                   serverName: "caravan"),
                              eventLoopGroupProvider: .shared(httpLoops),
                              logger: logger)
        let lifecycle = GossipLifecycle(agent: self)
        let group = ServiceGroup(configuration: .init(services: [.init(service: lifecycle), .init(service: VoterKeeper(agent: self)),
                                                                 .init(service: ClusterLeader(agent: self)),
                                                                 .init(service: NodeClient(agent: self)),
                                                                 .init(service: app),
                                                                 // Last, so it hears of the shutdown first (services are
                                                                 // stopped in reverse order): it ends every long request
                                                                 // before the HTTP server waits for them.
                                                                 .init(service: ShutdownNotice(agent: self))],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        shutdownTrigger.withLock { t in t = { Task { await group.triggerGracefulShutdown() } } }
        if shutdownRequested.withLock({ $0 }) { await group.triggerGracefulShutdown() }
        let trimming = Task.detached {
            try await Task.sleep(for: CodePages.firstAfter)
            while !Task.isCancelled {
                CodePages.release()
                try await Task.sleep(for: CodePages.every)
            }
        }
        defer { trimming.cancel() }
        do {
            try await group.run()
        } catch {
            await raft.shutdown()
            await gossip.shutdown()
            throw AgentError("cannot serve the HTTP API on \(config.bind):\(config.httpPort): \(Self.describe(error))")
        }
    }

    /// Starts a graceful leave and shutdown (used by `caravan leave`).
    public func requestShutdown() {
        shutdownRequested.withLock { $0 = true }
        let t = shutdownTrigger.withLock { $0 }
        t?()
    }

    // MARK: views

    func view(of m: Member) -> MemberView {
        let meta = NodeMetadata.decode(m.metadata)
        return MemberView(name: m.name, address: "\(m.address)", status: "\(m.status)", role: meta?.role ?? "unknown",
                          capacity: meta?.capacity, free: meta?.free, version: meta?.version, tags: meta?.tags ?? [:],
                          incarnation: m.incarnation.value)
    }

    public func memberViews() async -> [MemberView] {
        await gossip.members().map(view(of:)).sorted { $0.name < $1.name }
    }

    public func selfView() async -> AgentSelfView {
        let me = await gossip.members().first!
        let (stats, health) = await gossip.stats()
        let t = await gossip.traffic()
        return AgentSelfView(
            name: config.name, version: config.version, gossipAddress: "\(gossip.advertised)",
            httpAddress: "\(config.bind):\(config.httpPort)", encrypted: await gossip.isEncrypted, member: view(of: me),
            gossip: GossipStatsView(localHealth: health, probes: stats.probes, probesFailed: stats.probesFailed,
                                    suspicionsRaised: stats.suspicionsRaised, refutations: stats.refutations,
                                    packetsSent: t.packetsSent, packetsReceived: t.packetsReceived, bytesSent: t.bytesSent,
                                    bytesReceived: t.bytesReceived, streamBytesSent: t.streamBytesSent,
                                    streamBytesReceived: t.streamBytesReceived, dropped: t.dropped))
    }
}

/// Hears of the shutdown before every other service and sets ``Agent/stopping``; if the
/// graceful stop has not finished within ``deadline`` the process exits anyway (a supervisor
/// must never have to SIGKILL an agent that was asked to stop).
struct ShutdownNotice: Service {
    let agent: Agent
    static let deadlineMs = 1900

    func run() async throws {
        // Cancelled (the group failed, say the HTTP port was taken): not a shutdown to hurry.
        do { try await gracefulShutdown() } catch { return }
        agent.logger.info("shutting down: ending blocking reads, log follows and exec sessions")
        agent.stopping.trigger()
        // Hand-over and leave start now, beside the HTTP server's drain, not after it. Once
        // they are done nothing of the cluster's depends on this process: a request a client
        // still holds open (a stalled upload, a reader that stopped reading) gets a moment more,
        // then the process exits anyway.
        let logger = agent.logger
        Task { [agent] in
            await agent.leaveCluster()
            try? await Task.sleep(for: .milliseconds(300))
            logger.notice("left the cluster; a client still holds a request open: exiting")
            _exit(0)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Self.deadlineMs)) {
            logger.warning("shutdown did not finish within \(Self.deadlineMs) ms (a client held a request open); exiting now")
            _exit(1)
        }
    }
}

/// Waits for the graceful-shutdown signal, then leaves the cluster and closes the sockets.
struct GossipLifecycle: Service {
    let agent: Agent

    func run() async throws {
        try? await gracefulShutdown()
        await agent.leaveCluster()
    }
}

extension Agent {
    /// Hands Raft leadership over (so the cluster keeps taking writes without an election),
    /// announces the leave by gossip and closes the sockets — once, however often it is called;
    /// later callers wait for the first. Bounded: at most 0.8 s each for the hand-over and the
    /// leave.
    func leaveCluster() async {
        let task = leaving.withLock { t -> Task<Void, Never> in
            if let t { return t }
            let new = Task {
                await self.raft.shutdown(transferTimeout: .milliseconds(800))
                self.logger.info("leaving the cluster")
                await self.gossip.leave(timeout: .milliseconds(800))
                await self.gossip.shutdown()
            }
            t = new
            return new
        }
        await task.value
    }
}
