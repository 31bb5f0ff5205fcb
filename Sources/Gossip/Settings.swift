/// Every timing and size of the protocol; start from a preset and change what you need.
public struct Settings: Sendable, Equatable {
    /// How often the shell MUST call `onTick`; timers are checked at this granularity.
    public var tickInterval: Duration
    /// One probe per interval (scaled by the local health multiplier).
    public var probeInterval: Duration
    /// Longest wait for a direct ack before probing indirectly.
    public var probeTimeout: Duration
    /// Shortest direct-ack wait the RTT-adaptive timeout may use.
    public var minProbeTimeout: Duration
    /// How long the indirect probes and the TCP ping have after the direct ack wait ran out,
    /// before the probe counts as failed (and the window of the last probe before a death).
    public var indirectTimeout: Duration
    /// Members asked to probe indirectly (SWIM's k).
    public var indirectChecks: Int
    /// Suspicion timeout floor is `suspicionMultiplier × max(1, log10(n)) × probeInterval`,
    /// never below `minSuspicionTimeout`.
    public var suspicionMultiplier: Double
    public var minSuspicionTimeout: Duration
    /// The timeout starts at `suspicionMaxMultiplier ×` the floor and shrinks with confirmations
    /// (Lifeguard IV.B).
    public var suspicionMaxMultiplier: Double
    /// Independent confirmations after which the timeout reaches its floor.
    public var suspicionConfirmations: Int
    /// Suspicion timeout when the suspecter's TCP connection was refused (agent process gone).
    public var refusedSuspicionTimeout: Duration
    /// Upper bound of the local health multiplier (Lifeguard IV.A).
    public var maxLocalHealth: Int
    /// A broadcast is sent `retransmitMultiplier × ceil(log10(n + 1))` times.
    public var retransmitMultiplier: Int
    /// Members told directly when this node refutes a rumour about itself.
    public var refutationFanout: Int
    /// How often pending broadcasts are also sent on their own to `gossipFanout` members.
    public var gossipInterval: Duration
    public var gossipFanout: Int
    /// Anti-entropy period once the view has settled (it starts short after a join and doubles).
    public var pushPullInterval: Duration
    public var initialPushPullInterval: Duration
    /// Largest UDP payload (after sealing) the protocol will build.
    public var maxPacketSize: Int
    /// Bytes the seal adds, so the core can budget payloads (set by the shell from the keyring).
    public var sealOverhead: Int
    /// Largest metadata a member may carry.
    public var maxMetadataSize: Int
    /// A metadata change is announced at most this often; later changes are coalesced.
    public var metadataMinInterval: Duration
    /// How often a dead (not left) member is contacted for a state exchange, so a healed
    /// partition or a returning agent merges back without an operator.
    public var reconnectInterval: Duration
    /// Dead and left members are forgotten after this long.
    public var reapAfter: Duration
    /// Join retry backoff: starts at the first value, doubles to the second.
    public var joinRetryInitial: Duration
    public var joinRetryMax: Duration

    /// For a LAN or a single data centre: a probe every half second (four small packets a second
    /// per node), suspicion long enough that an agent paused for 2.5 s (GC, SIGSTOP, a busy host)
    /// is not declared dead, fast verdicts on refused connections.
    public static let lan = Settings(
        tickInterval: .milliseconds(10),
        probeInterval: .milliseconds(500),
        probeTimeout: .milliseconds(200),
        minProbeTimeout: .milliseconds(40),
        indirectTimeout: .milliseconds(300),
        indirectChecks: 3,
        suspicionMultiplier: 1.5,
        minSuspicionTimeout: .milliseconds(2200),
        suspicionMaxMultiplier: 3,
        suspicionConfirmations: 3,
        refusedSuspicionTimeout: .milliseconds(150),
        maxLocalHealth: 8,
        retransmitMultiplier: 4,
        refutationFanout: 64,
        gossipInterval: .milliseconds(100),
        gossipFanout: 3,
        pushPullInterval: .seconds(30),
        initialPushPullInterval: .seconds(1),
        maxPacketSize: 1400,
        sealOverhead: 34,
        maxMetadataSize: 512,
        metadataMinInterval: .seconds(1),
        reconnectInterval: .seconds(10),
        reapAfter: .seconds(3600),
        joinRetryInitial: .milliseconds(500),
        joinRetryMax: .seconds(30)
    )

    /// For agents on one machine (loopback): tighter timings.
    public static let local: Settings = {
        var s = Settings.lan
        s.probeInterval = .milliseconds(100)
        s.probeTimeout = .milliseconds(50)
        s.minProbeTimeout = .milliseconds(20)
        s.indirectTimeout = .milliseconds(100)
        s.minSuspicionTimeout = .seconds(1)
        s.refusedSuspicionTimeout = .milliseconds(200)
        s.gossipInterval = .milliseconds(50)
        s.pushPullInterval = .seconds(15)
        s.reconnectInterval = .seconds(5)
        s.reapAfter = .seconds(600)
        return s
    }()
}
