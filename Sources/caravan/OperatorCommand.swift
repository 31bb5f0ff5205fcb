import API
import ArgumentParser
import FoundationEssentials

struct OperatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator", abstract: "Operate the cluster's internals.", subcommands: [RaftCommand.self, SchedulerCommand.self, WhatIfCommand.self])
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
        let body = WhatIfRequest(killNodes: killNodes, killNodesWhere: killNodesWhere, drainNodes: drainNodes, addNodes: addNodes,
                                 addNodesLike: like, job: text)
        let v: WhatIfView = try await client.call(.POST, "/v1/operator/what-if", body: body)
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
