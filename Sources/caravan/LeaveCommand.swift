import API
import ArgumentParser

struct LeaveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leave", abstract: "Make the agent leave the cluster gracefully and stop.")

    @OptionGroup var client: ClientOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        let api = try client.client()
        let r: [String: String] = try await cli { () async throws(ClientError) in try await api.leave() }
        if json { return try printJSON(r) }
        print("Leaving the cluster; the agent stops once its leave notice is out.")
    }
}
