import API
import ArgumentParser

struct LeaveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leave", abstract: "Make the agent leave the cluster gracefully and stop.")

    @OptionGroup var client: ClientOptions

    func run() async throws {
        do { try await client.client().leave() } catch let e as ClientError { throw CLIError.from(e) }
        print("Leaving the cluster; the agent stops once its leave notice is out.")
    }
}
