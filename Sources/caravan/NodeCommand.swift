import API
import ArgumentParser

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Inspect and steer the cluster's nodes.", subcommands: [Status.self, Drain.self, Eligibility.self])

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drain", abstract: "Move a node's allocations elsewhere (migrate.maxParallel at a time) and take no new ones.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The node id.") var id: String
        @Flag(name: .long, help: "Stop draining (the node stays ineligible until `node eligibility --enable`).") var disable = false

        func run() async throws {
            let api = try client.client()
            try await cli { () async throws(ClientError) in try await api.drainNode(id, enable: !disable) }
            print(disable ? "Node \(id) is no longer draining" : "Node \(id) is draining")
        }
    }

    struct Eligibility: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "eligibility", abstract: "Allow or forbid new placements on a node.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The node id.") var id: String
        @Flag(name: .long, help: "Allow new placements.") var enable = false
        @Flag(name: .long, help: "Forbid new placements.") var disable = false

        func validate() throws {
            guard enable != disable else { throw ValidationError("give exactly one of --enable or --disable") }
        }

        func run() async throws {
            let api = try client.client()
            try await cli { () async throws(ClientError) in try await api.setEligibility(id, eligible: enable) }
            print("Node \(id) is \(enable ? "eligible" : "ineligible")")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status", abstract: "Every node's status, eligibility, capacity and what is allocated on it.")
        @OptionGroup var client: ClientOptions
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let nodes: [NodeView]
            do { nodes = try await client.client().nodes() } catch let e as ClientError { throw CLIError.from(e) }
            if json { return try printJSON(nodes) }
            printTable(["ID", "ADDRESS", "STATUS", "ELIGIBILITY", "ALLOCS", "CPU USED/TOTAL", "MEMORY USED/TOTAL", "DRIVERS"], nodes.map {
                [$0.id, $0.address, $0.status + ($0.draining ? " (draining)" : ""), $0.eligibility, "\($0.allocations)",
                 "\($0.allocated.cpuMillicores)m/\($0.capacity.cpuMillicores)m", "\($0.allocated.memoryMiB)Mi/\($0.capacity.memoryMiB)Mi",
                 $0.drivers.joined(separator: ",")]
            })
        }
    }
}
