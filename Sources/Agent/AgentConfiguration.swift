import Executor
import Gossip
import Keyring

/// Everything `caravan agent` was told on its command line, validated.
public struct AgentConfiguration: Sendable {
    public var name: String
    /// IP literal every listener binds to.
    public var bind: String
    public var advertise: String?
    public var httpPort: UInt16 = 4680
    public var rpcPort: UInt16 = 4681
    public var gossipPort: UInt16 = 4682
    public var join: [Address] = []
    public var dataDir: String
    /// A key given on the command line; seeds the keyring file when it does not exist yet.
    public var encryptKey: SecretKey?
    /// Development mode (`--dev`): the only mode in which an agent runs without a cluster key
    /// (gossip and Raft then travel unsealed, and anyone who reaches the ports can join).
    public var dev = false
    /// Whether this agent offers the `raw_exec` driver (plain processes as the agent's user,
    /// root on most machines). Off unless `--enable-raw-exec`, the config file or `--dev` turn it on.
    public var enableRawExec = false
    /// `acl: {enabled: true}` / `--acl-enabled`: deny calls without a token even before
    /// `caravan acl bootstrap` (which turns ACLs on for the whole cluster either way).
    public var aclEnabled = false
    /// The longest between a task's kill signal and SIGKILL on this agent (`--max-kill-timeout`).
    public var maxKillTimeout: Duration = .seconds(30)
    /// Host users tasks may not run as here (`--deny-task-uids`, `--deny-task-gids`, `--deny-task-users-in`).
    public var taskUsers = TaskUserPolicy.standard
    /// TLS on the HTTP API (and on this agent's calls to other agents); nil: plain HTTP.
    public var tls: AgentTLS?
    /// Caps on what callers may make the cluster and this agent hold (429 past them).
    public var limits = ClusterLimits()
    /// Where the keyring lives; defaults to `<data-dir>/keyring.json`.
    public var keyringFile: String?
    public var tags: [String: String] = [:]
    /// Registries (HOST:PORT) the container driver may reach over plain HTTP besides loopback ones.
    public var insecureRegistries: [String] = []
    /// Registry "HOST:PORT" → PEM CA file trusted for it (HTTPS even on loopback).
    public var registryCAs: [String: String] = [:]
    /// Registry "HOST:PORT" → the client certificate it asks for (mutual TLS).
    public var registryClientCertificates: [String: RegistryClientCertificate] = [:]
    public var gossip: Settings = .lan
    public var version = CaravanVersion.current
    /// How many agents bootstrap the Raft group together (1 in `--dev`).
    public var bootstrapExpect = 3
    /// The most voters the leader keeps (3, or 5 once 5 agents are live).
    public var raftVoters = 5
    /// How long gossip must report a voter dead before the leader replaces it.
    public var deadServerGrace: Duration = .seconds(10)
    /// Raft heartbeat and election timeout (etcd's defaults).
    public var raftHeartbeat: Duration = .milliseconds(100)
    public var raftElectionTimeout: Duration = .seconds(1)
    /// Applied entries between two snapshots of the cluster state; a fifth of it (at most 2,000)
    /// stays in the log behind each snapshot for followers a little behind.
    public var raftSnapshotEvery = 10_000

    public init(name: String, bind: String, dataDir: String) {
        self.name = name
        self.bind = bind
        self.dataDir = dataDir
    }

    public var keyringPath: String { keyringFile ?? dataDir + "/keyring.json" }
}

/// `tls: {caFile, certFile, keyFile, verifyIncoming}`: the cluster CA, this agent's certificate
/// (from `caravan tls cert create --server`) and key; with `verifyIncoming` (the default) every
/// caller must present a certificate from the CA (mutual TLS).
public struct AgentTLS: Sendable, Equatable {
    public var caFile: String
    public var certFile: String
    public var keyFile: String
    public var verifyIncoming = true

    public init(caFile: String, certFile: String, keyFile: String, verifyIncoming: Bool = true) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.verifyIncoming = verifyIncoming
    }
}

public enum CaravanVersion {
    public static let current = "0.2.0"

    /// Agents from 0.2.0 on apply writes tagged with `X-Caravan-Write-ID`.
    static func supportsWriteIDs(_ version: String) -> Bool {
        let parts = version.split(separator: ".").map { Int($0) ?? -1 }
        guard parts.count >= 2, parts.allSatisfy({ $0 >= 0 }) else { return false }
        return parts[0] > 0 || parts[1] >= 2
    }
}

/// A configuration or start-up problem, reported as one line; `isUsage` picks exit status 2.
public struct AgentError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public let isUsage: Bool
    public init(_ message: String, usage: Bool = false) {
        self.message = message
        self.isUsage = usage
    }
    public var description: String { message }
}
