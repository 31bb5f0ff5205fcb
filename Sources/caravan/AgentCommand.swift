import Agent
import CaravanModel
import Executor
import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Gossip
import Keyring
import Logging
import NIOCore

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the agent: gossip membership, Raft and the HTTP API on this machine.",
        discussion: """
            Listens on --bind: HTTP API 4680, RPC 4681 (TCP), gossip 4682 (UDP and TCP). The first
            --bootstrap-expect agents that see each other form the Raft group; the leader keeps
            3 (or 5) voters from then on. Runs until SIGINT or SIGTERM, then hands Raft leadership
            over and leaves the cluster gracefully.
            """
    )

    @Option(help: "This agent's name, unique in the cluster (default: the host name).") var name: String?
    @Option(help: "IP address every listener binds to.") var bind: String?
    @Option(help: "IP address other agents use to reach this one (default: --bind).") var advertise: String?
    @Option(help: "An agent to join, IP[:PORT] (gossip port, default 4682). Repeatable.") var join: [String] = []
    @Option(help: "Directory for the keyring and the Raft log.") var dataDir: String?
    @Option(help: "Base64 cluster key (see `caravan keygen`); seeds the keyring file on first start.") var encrypt: String?
    @Option(help: "Keyring file to use (default <data-dir>/keyring.json).") var keyringFile: String?
    @Option(help: "A KEY=VALUE tag published to the cluster. Repeatable.") var tag: [String] = []
    @Option(name: .customLong("insecure-registry"), help: "HOST:PORT of a registry the container driver may use over plain HTTP (loopback registries always may). Repeatable.")
    var insecureRegistry: [String] = []
    @Option(name: .customLong("registry-ca"), help: "HOST:PORT=FILE: a PEM CA file the container driver trusts for that registry (besides the system's roots); such a registry is spoken to over HTTPS even on loopback. Repeatable.")
    var registryCA: [String] = []
    @Option(name: .customLong("registry-client-cert"), help: "HOST:PORT=CERT,KEY: PEM files of the client certificate that registry asks for (mutual TLS). Repeatable.")
    var registryClientCert: [String] = []
    @Option(help: "Gossip timings: lan (default) or local.") var gossipProfile: String?
    @Option(help: "HTTP API port (default 4680).") var httpPort: Int?
    @Option(help: "Gossip port, UDP and TCP (default 4682).") var gossipPort: Int?
    @Option(help: "Raft RPC port, TCP (default 4681).") var rpcPort: Int?
    @Option(help: "How many agents form the Raft group together at first (default 3; 1 with --dev).") var bootstrapExpect: Int?
    @Option(help: "Most Raft voters the leader keeps: 3, or 5 once 5 agents are live (default 5).") var raftVoters: Int?
    @Option(help: "Seconds gossip must report a voter dead before it is replaced (default 10).") var raftDeadGrace: Double?
    @Option(help: "Raft election timeout in milliseconds; heartbeat is a tenth (default 1000).") var raftElectionMs: Int?
    @Option(help: "Applied Raft entries between two snapshots of the cluster state (default 10000).") var raftSnapshotEvery: Int?
    @Option(help: "The longest a blocking read (?index=…&wait=…) waits, in seconds (default 600; 1 to 3600).") var maxQueryWait: Int?
    @Option(help: "The longest a task is given between its kill signal and SIGKILL, in seconds, whatever its job asks (default 30; 1 to 3600).") var maxKillTimeout: Int?
    @Option(help: "Host uids tasks may not run as, like 0,100-199 (default 0: no root); see --deny-task-users-in.") var denyTaskUids: String?
    @Option(help: "Host gids tasks may not run as, like 0,100-199 (default none).") var denyTaskGids: String?
    @Option(help: "The drivers whose tasks --deny-task-uids/-gids apply to, comma-separated (default exec).") var denyTaskUsersIn: String?
    @Option(help: "trace, debug, info, warning or error (default info).") var logLevel: String?
    @Option(help: "A YAML or JSON file of these settings (name, bind, join, dataDir, tags, ports, …); flags win over it.")
    var config: String?
    @Flag(help: "Development mode: one agent on 127.0.0.1 with a throw-away data dir (raw_exec enabled).") var dev = false
    @Flag(help: "Offer the raw_exec driver: jobs may run plain processes as this agent's user (root, usually). Off by default.")
    var enableRawExec = false
    @Flag(help: "Deny calls without an ACL token even before `caravan acl bootstrap` (which turns ACLs on for every agent).")
    var aclEnabled = false
    @Option(help: "TLS on the HTTP API: the cluster CA certificate (PEM; see `caravan tls`).") var tlsCaFile: String?
    @Option(help: "TLS: this agent's certificate (`caravan tls cert create --server`).") var tlsCertFile: String?
    @Option(help: "TLS: this agent's key.") var tlsKeyFile: String?
    @Option(help: "TLS: ask every caller for a certificate from the CA (default true).") var tlsVerifyIncoming: Bool?

    func run() async throws {
        // Keys given on the command line must not stay visible in `ps`.
        ArgvScrubber.scrubValue(of: "--encrypt")
        let file = try config.map(AgentConfigFile.load)
        let levelName = try logLevel ?? file?.string("logLevel") ?? "info"
        guard let level = Logger.Level(rawValue: levelName) else {
            throw CLIError.usage("--log-level: \"\(levelName)\" is not one of trace, debug, info, notice, warning, error")
        }
        let config = try configuration(file)
        LoggingSystem.bootstrap { label in LogOutput(label: label, level: level) }
        var logger = Logger(label: "caravan")
        logger[metadataKey: "node"] = "\(config.name)"
        let agent: Agent
        do {
            AgentMetrics.bootstrap()
            agent = try await Agent.start(config, logger: logger)
            try await agent.run()
        } catch let e as AgentError {
            throw e.isUsage ? CLIError.usage(e.message) : CLIError.failed(e.message)
        }
    }

    /// `KEY=VALUE` flag values (neither side empty) as a map; a later key wins.
    static func pairs(_ values: [String], flag: String, form: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for v in values {
            let parts = v.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw CLIError.usage("\(flag): \"\(v)\" is not \(form)") }
            out[parts[0]] = parts[1]
        }
        return out
    }

    /// `HOST:PORT` with a port in 1…65535.
    static func isHostPort(_ s: String) -> Bool {
        guard let c = s.lastIndex(of: ":"), !s[..<c].isEmpty, let p = Int(s[s.index(after: c)...]) else { return false }
        return (1...65535).contains(p)
    }

    func configuration(_ file: AgentConfigFile? = nil) throws -> AgentConfiguration {
        // Each setting: the flag, else the config file, else the default.
        let bind = try self.bind ?? file?.string("bind")
        let advertise = try self.advertise ?? file?.string("advertise")
        let dataDir = try self.dataDir ?? file?.string("dataDir")
        let name = try self.name ?? file?.string("name")
        let encrypt = try self.encrypt ?? file?.string("encrypt")
        let keyringFile = try self.keyringFile ?? file?.string("keyringFile")
        let join = try self.join.isEmpty ? file?.strings("join") ?? [] : self.join
        let insecureRegistry = try self.insecureRegistry.isEmpty ? file?.strings("insecureRegistries") ?? [] : self.insecureRegistry
        let registryCAs = try self.registryCA.isEmpty ? file?.map("registryCAs") ?? [:]
            : Self.pairs(self.registryCA, flag: "--registry-ca", form: "HOST:PORT=FILE")
        let ports = try file?.map("ports") ?? [:]
        func port(_ flag: Int?, _ key: String, _ fallback: Int) throws -> Int {
            if let flag { return flag }
            guard let raw = ports[key] else { return fallback }
            guard let p = Int(raw) else { throw CLIError.usage("\(file!.path): ports.\(key): \"\(raw)\" is not a port") }
            return p
        }
        let httpPort = try port(self.httpPort, "http", 4680)
        let gossipPort = try port(self.gossipPort, "gossip", 4682)
        let rpcPort = try port(self.rpcPort, "rpc", 4681)
        let bootstrapExpect = try self.bootstrapExpect ?? file?.int("bootstrapExpect")
        let raftVoters = try self.raftVoters ?? file?.int("raftVoters") ?? 5
        let raftDeadGrace = try self.raftDeadGrace ?? file?.double("raftDeadGrace") ?? 10
        let raftElectionMs = try self.raftElectionMs ?? file?.int("raftElectionMs") ?? 1000
        let raftSnapshotEvery = try self.raftSnapshotEvery ?? file?.int("raftSnapshotEvery") ?? 10_000
        let maxQueryWait = try self.maxQueryWait ?? file?.int("maxQueryWait") ?? 600
        let maxKillTimeout = try self.maxKillTimeout ?? file?.int("maxKillTimeout") ?? 30
        let gossipProfile = try self.gossipProfile ?? file?.string("gossipProfile") ?? "lan"
        var tags = try file?.map("tags") ?? [:]
        let bindIP = bind ?? (dev ? "127.0.0.1" : nil)
        guard let bindIP else { throw CLIError.usage("--bind is required: the IP address to listen on (or use --dev)") }
        guard (try? SocketAddress(ipAddress: bindIP, port: 0)) != nil else {
            throw CLIError.usage("--bind: \"\(bindIP)\" is not an IP address")
        }
        if let advertise, (try? SocketAddress(ipAddress: advertise, port: 0)) == nil {
            throw CLIError.usage("--advertise: \"\(advertise)\" is not an IP address")
        }
        var dir = dataDir
        if dir == nil && dev { dir = "/tmp/caravan-dev-\(getpid())" }
        guard let dir else { throw CLIError.usage("--data-dir is required (or use --dev)") }
        guard (1...65535).contains(httpPort) else { throw CLIError.usage("--http-port: \(httpPort) is not a port") }
        guard (1...65535).contains(gossipPort) else { throw CLIError.usage("--gossip-port: \(gossipPort) is not a port") }
        guard (1...65535).contains(rpcPort) else { throw CLIError.usage("--rpc-port: \(rpcPort) is not a port") }
        let expect = bootstrapExpect ?? (dev ? 1 : 3)
        guard (1...7).contains(expect) else { throw CLIError.usage("--bootstrap-expect: \(expect) must be 1 to 7") }
        guard [1, 3, 5, 7].contains(raftVoters) else { throw CLIError.usage("--raft-voters: \(raftVoters) must be 1, 3, 5 or 7") }
        guard raftDeadGrace >= 0, raftDeadGrace <= 86_400 else { throw CLIError.usage("--raft-dead-grace: \(raftDeadGrace) must be 0 to 86400 seconds") }
        guard (50...60_000).contains(raftElectionMs) else { throw CLIError.usage("--raft-election-ms: \(raftElectionMs) must be 50 to 60000") }
        guard (1...3600).contains(maxQueryWait) else { throw CLIError.usage("--max-query-wait: \(maxQueryWait) must be 1 to 3600 seconds") }
        guard (1...3600).contains(maxKillTimeout) else { throw CLIError.usage("--max-kill-timeout: \(maxKillTimeout) must be 1 to 3600 seconds") }
        guard (100...1_000_000).contains(raftSnapshotEvery) else {
            throw CLIError.usage("--raft-snapshot-every: \(raftSnapshotEvery) must be 100 to 1000000 entries")
        }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let hostName = String(cString: host)
        let agentName = name ?? (hostName.isEmpty ? "caravan" : hostName)
        guard !agentName.isEmpty, agentName.utf8.count <= 128,
              agentName.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw CLIError.usage("--name: \"\(agentName)\" must be 1-128 letters, digits, '-', '_' or '.'")
        }
        var config = AgentConfiguration(name: agentName, bind: bindIP, dataDir: dir)
        config.advertise = advertise
        config.httpPort = UInt16(httpPort)
        config.gossipPort = UInt16(gossipPort)
        config.rpcPort = UInt16(rpcPort)
        config.bootstrapExpect = expect
        config.dev = dev
        config.enableRawExec = try enableRawExec || dev || file?.bool("enableRawExec") ?? false
        let tlsFile = try file?.map("tls") ?? [:]
        for key in tlsFile.keys where !["caFile", "certFile", "keyFile", "verifyIncoming"].contains(key) {
            throw CLIError.usage("\(file!.path): tls.\(key): unknown setting (caFile, certFile, keyFile, verifyIncoming)")
        }
        let ca = tlsCaFile ?? tlsFile["caFile"], cert = tlsCertFile ?? tlsFile["certFile"], key = tlsKeyFile ?? tlsFile["keyFile"]
        var verify = tlsVerifyIncoming ?? true
        if tlsVerifyIncoming == nil, let v = tlsFile["verifyIncoming"] {
            guard v == "true" || v == "false" else { throw CLIError.usage("\(file!.path): tls.verifyIncoming: \"\(v)\" is not true or false") }
            verify = v == "true"
        }
        switch (ca, cert, key) {
        case (nil, nil, nil): break
        case (let ca?, let cert?, let key?):
            for (flag, f) in [("--tls-ca-file", ca), ("--tls-cert-file", cert), ("--tls-key-file", key)] where access(f, R_OK) != 0 {
                throw CLIError.usage("\(flag): cannot read \(f)")
            }
            config.tls = AgentTLS(caFile: ca, certFile: cert, keyFile: key, verifyIncoming: verify)
        default: throw CLIError.usage("TLS needs all three of --tls-ca-file, --tls-cert-file and --tls-key-file (or tls: {caFile, certFile, keyFile})")
        }
        let acl = try file?.map("acl") ?? [:]
        for key in acl.keys where key != "enabled" { throw CLIError.usage("\(file!.path): acl.\(key): unknown setting (enabled)") }
        switch acl["enabled"] {
        case nil, "false": config.aclEnabled = aclEnabled
        case "true": config.aclEnabled = true
        case let v?: throw CLIError.usage("\(file!.path): acl.enabled: \"\(v)\" is not true or false")
        }
        config.raftVoters = raftVoters
        config.deadServerGrace = .milliseconds(Int64(raftDeadGrace * 1000))
        config.raftElectionTimeout = .milliseconds(raftElectionMs)
        config.raftHeartbeat = .milliseconds(max(10, raftElectionMs / 10))
        config.raftSnapshotEvery = raftSnapshotEvery
        config.limits.maxQueryWait = .seconds(maxQueryWait)
        config.maxKillTimeout = .seconds(maxKillTimeout)
        config.taskUsers = try taskUserPolicy(file)
        for j in join {
            guard let a = Address(parsing: j, defaultPort: 4682), (try? SocketAddress(ipAddress: a.host, port: 0)) != nil else {
                throw CLIError.usage("--join: \"\(j)\" is not IP[:PORT]")
            }
            config.join.append(a)
        }
        if let encrypt {
            do { config.encryptKey = try SecretKey(base64: encrypt) } catch { throw CLIError.usage("--encrypt: \(error.message)") }
        }
        config.keyringFile = keyringFile
        tags.merge(try Self.pairs(tag, flag: "--tag", form: "KEY=VALUE")) { _, flag in flag }
        config.tags = tags
        for r in insecureRegistry {
            guard Self.isHostPort(r) else { throw CLIError.usage("--insecure-registry: \"\(r)\" is not HOST:PORT") }
            config.insecureRegistries.append(r)
        }
        let clientCerts = try self.registryClientCert.isEmpty ? file?.map("registryClientCerts") ?? [:]
            : Self.pairs(self.registryClientCert, flag: "--registry-client-cert", form: "HOST:PORT=CERT,KEY")
        for (r, files) in clientCerts.sorted(by: { $0.key < $1.key }) {
            let pair = files.split(separator: ",", maxSplits: 1).map(String.init)
            guard Self.isHostPort(r), pair.count == 2, !pair[0].isEmpty, !pair[1].isEmpty else {
                throw CLIError.usage("--registry-client-cert: \"\(r)=\(files)\" is not HOST:PORT=CERT,KEY")
            }
            for f in pair where access(f, R_OK) != 0 { throw CLIError.usage("--registry-client-cert: cannot read \(f) for \(r)") }
            config.registryClientCertificates[r] = RegistryClientCertificate(certificate: pair[0], key: pair[1])
        }
        for (r, file) in registryCAs.sorted(by: { $0.key < $1.key }) {
            guard Self.isHostPort(r) else { throw CLIError.usage("--registry-ca: \"\(r)\" is not HOST:PORT") }
            guard access(file, R_OK) == 0 else { throw CLIError.usage("--registry-ca: cannot read the CA file \(file) for \(r)") }
            config.registryCAs[r] = file
        }
        switch gossipProfile {
        case "lan": config.gossip = .lan
        case "local": config.gossip = .local
        default: throw CLIError.usage("--gossip-profile: \"\(gossipProfile)\" is not lan or local")
        }
        if dev && gossipProfile == "lan" { config.gossip = .local }
        return config
    }
}

/// Overwrites a secret argument in the process's own argv, so `ps` and /proc/PID/cmdline no
/// longer show it once the agent has started.
enum ArgvScrubber {
    static func scrubValue(of flag: String) {
        let argc = Int(CommandLine.argc)
        let argv = CommandLine.unsafeArgv
        var i = 1
        while i < argc {
            guard let p = argv[i] else { i += 1; continue }
            let arg = String(cString: p)
            if arg == flag, i + 1 < argc, let v = argv[i + 1] {
                memset(v, Int32(UInt8(ascii: "x")), strlen(v))
                i += 2
                continue
            }
            if arg.hasPrefix(flag + "=") {
                let start = p + flag.utf8.count + 1
                memset(start, Int32(UInt8(ascii: "x")), strlen(start))
            }
            i += 1
        }
    }
}

extension AgentCommand {
    /// `--deny-task-uids/-gids/-users-in` or `taskUsers: {denyUids, denyGids, drivers}`.
    func taskUserPolicy(_ file: AgentConfigFile?) throws -> TaskUserPolicy {
        let section = try file?.map("taskUsers") ?? [:]
        for key in section.keys where !["denyUids", "denyGids", "drivers"].contains(key) {
            throw CLIError.usage("\(file!.path): taskUsers.\(key): unknown setting (denyUids, denyGids, drivers)")
        }
        var policy = TaskUserPolicy.standard
        for (flag, value, key) in [("--deny-task-uids", denyTaskUids, "denyUids"), ("--deny-task-gids", denyTaskGids, "denyGids")] {
            guard let text = value ?? section[key] else { continue }
            guard let ranges = TaskUserPolicy.ranges(text) else {
                throw CLIError.usage("\(value != nil ? flag : "\(file!.path): taskUsers.\(key)"): \"\(text.prefix(60))\" is not a list of ids or ranges such as 0,100-199")
            }
            if key == "denyUids" { policy.deniedUids = ranges } else { policy.deniedGids = ranges }
        }
        if let text = denyTaskUsersIn ?? section["drivers"] {
            var drivers: Set<TaskSpec.Driver> = []
            for n in text.split(separator: ",").map({ String($0.filter { $0 != " " }) }) where !n.isEmpty {
                guard let d = TaskSpec.Driver(rawValue: n) else {
                    let source = denyTaskUsersIn != nil ? "--deny-task-users-in" : "\(file!.path): taskUsers.drivers"
                    throw CLIError.usage("\(source): \"\(n.prefix(40))\" is not a driver (raw_exec, exec, container)")
                }
                drivers.insert(d)
            }
            policy.drivers = drivers
        }
        return policy
    }
}
