import Agent
import API
import ArgumentParser
import CaravanModel
import ClusterState
import Executor
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import LeaderCore

struct OperatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator", abstract: "Operate the cluster's internals.", subcommands: [RaftCommand.self, SchedulerCommand.self, WhatIfCommand.self, SnapshotCommand.self])
}

/// `caravan operator what-if`: the leader's core run on a copy of the cluster's state with a
/// supposed change, and what would move, start, stop or not fit.
struct WhatIfCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "what-if", abstract: "What the scheduler would do if nodes were lost, drained or added, or a job registered.",
        discussion: """
            caravan operator what-if --kill-nodes-where meta.rack=r1
            caravan operator what-if --drain web-3 --add-nodes 2 --like web-1
            caravan operator what-if --job batch.yaml

            Runs the leader's own scheduling code on a copy of the cluster's state as it is now, with
            the change and without it, and prints the difference: instances that would move, start,
            stop, and groups that would not fit (with why). Nothing in the cluster changes.
            """)

    @OptionGroup var client: ClientOptions
    @Option(name: .customLong("kill-node"), help: "Suppose this node is lost (repeatable).") var killNodes: [String] = []
    @Option(name: .customLong("kill-nodes-where"), help: "Suppose every node with meta.KEY=VALUE or attr.KEY=VALUE is lost (repeatable).")
    var killNodesWhere: [String] = []
    @Option(name: .customLong("drain"), help: "Suppose this node is drained (repeatable).") var drainNodes: [String] = []
    @Option(help: "Suppose this many nodes like --like join.") var addNodes: Int?
    @Option(help: "The node the added ones copy.") var like: String?
    @Option(help: "Suppose this job file is registered.") var job: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    @Option(help: "Ask a snapshot file (`caravan operator snapshot save`) instead of a live cluster, here, offline.") var snapshot: String?

    func run() async throws {
        var text: String?
        if let job {
            guard let data = FileManager.default.contents(atPath: job), let t = String(data: data, encoding: .utf8) else {
                throw CLIError.usage("--job: cannot read \(job)")
            }
            text = t
        }
        guard !killNodes.isEmpty || !killNodesWhere.isEmpty || !drainNodes.isEmpty || addNodes != nil || text != nil else {
            throw CLIError.usage("suppose something: --kill-node, --kill-nodes-where, --drain, --add-nodes N --like ID or --job FILE")
        }
        let v: WhatIfView
        if let snapshot {
            v = try await offline(snapshot, job: text)
        } else {
            let body = WhatIfRequest(killNodes: killNodes, killNodesWhere: killNodesWhere, drainNodes: drainNodes, addNodes: addNodes,
                                     addNodesLike: like, job: text)
            v = try await client.call(.POST, "/v1/operator/what-if", body: body)
        }
        if json { return try printJSON(v) }
        for (what, nodes) in [("lost", v.killed), ("drained", v.drained), ("added", v.added)] where !nodes.isEmpty {
            print("Nodes \(what): \(nodes.joined(separator: ", "))")
        }
        func name(_ i: WhatIfView.Instance) -> String { i.namespace == "default" ? i.name : "\(i.namespace)/\(i.name)" }
        if v.moved.isEmpty && v.placed.isEmpty && v.stopped.isEmpty && v.unplaced.isEmpty { print("Nothing would change.") }
        if !v.moved.isEmpty {
            print("\nWould move (\(v.moved.count)):")
            printTable(["INSTANCE", "FROM", "TO"], v.moved.map { [name($0), $0.from ?? "-", $0.to ?? "-"] })
        }
        if !v.placed.isEmpty {
            print("\nWould start (\(v.placed.count)):")
            printTable(["INSTANCE", "NODE"], v.placed.map { [name($0), $0.to ?? "-"] })
        }
        if !v.stopped.isEmpty {
            print("\nWould no longer run (\(v.stopped.count)):")
            printTable(["INSTANCE", "WAS ON"], v.stopped.map { [name($0), $0.from ?? "-"] })
        }
        if !v.unplaced.isEmpty {
            print("\nWould not fit:")
            for f in v.unplaced { print("  \(f.namespace == "default" ? f.job : "\(f.namespace)/\(f.job)") group \(f.group): \(f.reason)") }
        }
    }

    /// The same question asked of a snapshot file, with the same core, in this process.
    func offline(_ path: String, job text: String?) async throws -> WhatIfView {
        guard let data = FileManager.default.contents(atPath: path) else { throw CLIError.usage("--snapshot: cannot read \(path)") }
        let state: ClusterState
        do { state = try ClusterStore.state(fromSnapshotFile: Array(data)) } catch { throw CLIError.usage("--snapshot: \(path): \(error)") }
        var change = WhatIf.Change()
        change.killNodes = killNodes
        change.killNodesWhere = killNodesWhere
        change.drainNodes = drainNodes
        change.addNodes = addNodes ?? 0
        change.addNodesLike = like
        if let text {
            do { change.job = try JobFile.parse(text, file: job ?? "job") } catch { throw CLIError.usage("\(error)") }
        }
        let o: WhatIf.Outcome
        do throws(WhatIf.Problem) { o = try await WhatIf.run(state, change, now: Executor.unixMillis()) } catch { throw CLIError.usage(error.description) }
        return WhatIfView(o, index: state.lastIndex)
    }
}

struct RaftCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raft", abstract: "Inspect and steer the Raft group.", subcommands: [Peers.self, TransferLeader.self])

    struct Peers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "peers", abstract: "List the Raft servers as the leader sees them: id, address, voter, leader.")

        @OptionGroup var client: ClientOptions
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let c: RaftConfigurationView
            do { c = try await client.client().raftConfiguration() } catch let e as ClientError { throw CLIError.from(e) }
            if json { return try printJSON(c.servers) }
            printTable(["ID", "ADDRESS", "VOTER", "LEADER", "MATCH"], c.servers.map {
                [$0.id, $0.address, $0.voter ? "true" : "false", $0.leader ? "true" : "false", "\($0.matchIndex)"]
            })
        }
    }

    struct TransferLeader: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "transfer-leader",
            abstract: "Hand leadership to another voter (the most up-to-date one unless ID is given).")

        @OptionGroup var client: ClientOptions
        @Argument(help: "The voter to become leader.") var id: String?
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let v: LeaderView
            do { v = try await client.client().transferLeadership(to: id) } catch let e as ClientError { throw CLIError.from(e) }
            if json { return try printJSON(v) }
            print("leader is now \(v.leader ?? "(electing)")\(v.address.map { " at \($0)" } ?? "")")
        }
    }
}

struct SchedulerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler", abstract: "The cluster-wide scheduler configuration.", subcommands: [GetConfig.self, SetConfig.self])

    struct GetConfig: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get-config", abstract: "How the leader ranks nodes: binpack or spread.")
        @OptionGroup var client: ClientOptions
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            let c: SchedulerConfigView = try await cli { () async throws(ClientError) in try await api.schedulerConfiguration() }
            if json { return try printJSON(c) }
            print("Algorithm = \(c.algorithm)")
        }
    }

    struct SetConfig: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-config",
            abstract: "Choose how the leader ranks nodes for new placements, cluster-wide.",
            discussion: "binpack fills the fullest node that fits (fewer machines busy); spread prefers the emptiest (even load). Running allocations stay where they are.")
        @OptionGroup var client: ClientOptions
        @Option(help: "binpack or spread.") var algorithm: String
        @Flag(name: .long, help: "Print JSON.") var json = false

        func validate() throws {
            guard ["binpack", "spread"].contains(algorithm) else { throw ValidationError("--algorithm must be binpack or spread, not \(algorithm)") }
        }

        func run() async throws {
            let api = try client.client()
            let c: SchedulerConfigView = try await cli { () async throws(ClientError) in try await api.setSchedulerConfiguration(algorithm: algorithm) }
            if json { return try printJSON(c) }
            print("Scheduler algorithm set to \(c.algorithm) (index \(c.modifyIndex))")
        }
    }
}

/// `caravan operator snapshot save FILE`: the whole replicated state, consistent, in one file.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Save the cluster's replicated state to a file (for what-if offline, or safekeeping), or restore one.",
        subcommands: [Save.self, Restore.self])

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "restore",
            abstract: "Replace this cluster's jobs, allocations, nodes, evaluations, namespaces, variables and ACLs with a snapshot file's.",
            discussion: """
                The file's nodes that are not members of this cluster are marked down, so their work is placed \
                again on this cluster's nodes. Its ACL tokens replace this cluster's: keep one of them. Sealed \
                variables need the cluster key they were sealed with in this agent's keyring.
                """)
        @OptionGroup var client: ClientOptions
        @Flag(help: "Print the answer as JSON.") var json = false
        @Argument(help: "A file written by `caravan operator snapshot save`.") var file: String

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else { throw CLIError.usage("cannot read \(file)") }
            let bytes = Array(data)
            // Checked here too, so a wrong file is named before it is sent.
            do { _ = try ClusterStore.state(fromSnapshotFile: bytes) } catch { throw CLIError.usage("\(file): \(error)") }
            let api = try client.client()
            let r = try await cli { () async throws(ClientError) in try await api.write(.PUT, "/v1/operator/snapshot", body: bytes) }
            let v = try await cli { () async throws(ClientError) in try CaravanClient.decode(r, as: SnapshotRestoreView.self) }
            if json { return try printJSON(v) }
            print("restored \(file) at index \(v.index): \(v.jobs) jobs, \(v.allocations) allocations, \(v.variables) variables")
            if !v.nodesDown.isEmpty {
                print("\(v.nodesDown.count) nodes of the snapshot are not members here and were marked down (their work is placed again): \(v.nodesDown.joined(separator: ", "))")
            }
        }
    }

    struct Save: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "save", abstract: "Write a consistent snapshot of the replicated state (jobs, allocations, nodes, sealed variables, ACLs) to FILE, mode 0600.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The file to write (not overwritten).") var file: String

        func run() async throws {
            guard access(file, F_OK) != 0 else { throw CLIError.usage("\(file) exists; name a new file") }
            let api = try client.client()
            let r = try await cli { () async throws(ClientError) in try await api.send(.GET, "/v1/operator/snapshot") }
            if r.status != 200 { _ = try await cli { () async throws(ClientError) in try CaravanClient.decode(r, as: [String: String].self) } }
            let state: ClusterState
            do { state = try ClusterStore.state(fromSnapshotFile: r.body) } catch { throw CLIError.failed("the agent's answer is not a snapshot: \(error)") }
            let tmp = file + ".partial-\(getpid())"
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            guard fd >= 0 else { throw CLIError.failed("cannot create \(tmp): \(String(cString: strerror(errno)))") }
            let wrote = r.body.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            let synced = fsync(fd) == 0
            close(fd)
            // link, not rename: a file made at that name meanwhile is never replaced.
            let linked = wrote == r.body.count && synced && link(tmp, file) == 0
            let why = String(cString: strerror(errno))
            unlink(tmp)
            guard linked else { throw CLIError.failed("cannot write \(file): \(why)") }
            print("snapshot saved to \(file): \(r.body.count) bytes; cluster state as of its last change (index \(state.lastIndex)): \(state.jobs.count) jobs, \(state.nodes.count) nodes, \(state.allocations.count) allocations")
        }
    }
}
