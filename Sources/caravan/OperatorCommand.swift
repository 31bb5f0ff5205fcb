import API
import ArgumentParser

struct OperatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator", abstract: "Operate the cluster's internals.", subcommands: [RaftCommand.self, SchedulerCommand.self])
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
