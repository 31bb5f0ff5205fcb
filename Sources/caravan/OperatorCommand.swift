import API
import ArgumentParser

struct OperatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator", abstract: "Operate the cluster's internals.", subcommands: [RaftCommand.self])
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
