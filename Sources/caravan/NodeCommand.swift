import API
import ArgumentParser

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Inspect the cluster's nodes.", subcommands: [Status.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status", abstract: "Every node's status, eligibility, capacity and what is allocated on it.")
        @OptionGroup var client: ClientOptions
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let nodes: [NodeView]
            do { nodes = try await client.client().nodes() } catch let e as ClientError { throw CLIError.from(e) }
            if json { return try printJSON(nodes) }
            printTable(["ID", "ADDRESS", "STATUS", "ELIGIBILITY", "ALLOCS", "CPU USED/TOTAL", "MEMORY USED/TOTAL"], nodes.map {
                [$0.id, $0.address, $0.status + ($0.draining ? " (draining)" : ""), $0.eligibility, "\($0.allocations)",
                 "\($0.allocated.cpuMillicores)m/\($0.capacity.cpuMillicores)m", "\($0.allocated.memoryMiB)Mi/\($0.capacity.memoryMiB)Mi"]
            })
        }
    }
}
