import API
import ArgumentParser

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show the Raft leader, the term and this agent's role.")

    @OptionGroup var client: ClientOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        let s: StatusView
        do { s = try await client.client().status() } catch let e as ClientError { throw CLIError.from(e) }
        if json { return try printJSON(s) }
        printTable(["NODE", "LEADER", "TERM", "ROLE", "MEMBERSHIP", "COMMIT", "APPLIED"],
                   [[s.node, s.leader ?? "(none)", "\(s.term)", s.role, s.membership, "\(s.commitIndex)", "\(s.appliedIndex)"]])
    }
}
