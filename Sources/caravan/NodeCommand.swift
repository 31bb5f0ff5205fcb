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
        @Flag(name: .long, help: "Start draining (the default).") var enable = false
        @Flag(name: .long, help: "Stop draining (the node stays ineligible until `node eligibility --enable`).") var disable = false

        func validate() throws {
            guard !(enable && disable) else { throw ValidationError("give --enable or --disable, not both") }
        }
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            let r = try await cli { () async throws(ClientError) in try await api.drainNode(id, enable: !disable) }
            if json { return try printJSON(r) }
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
        @Flag(name: .long, help: "Print JSON.") var json = false

        func validate() throws {
            guard enable != disable else { throw ValidationError("give exactly one of --enable or --disable") }
        }

        func run() async throws {
            let api = try client.client()
            let r = try await cli { () async throws(ClientError) in try await api.setEligibility(id, eligible: enable) }
            if json { return try printJSON(r) }
            print("Node \(id) is \(enable ? "eligible" : "ineligible")")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status",
            abstract: "Every node's status, eligibility, capacity, what is allocated and what is free; or one node in detail.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "A node id: its attributes and allocations.") var id: String?
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            if let id {
                let d: NodeDetailView = try await cli { () async throws(ClientError) in try await api.node(id) }
                if json { return try printJSON(d) }
                let n = d.node
                print("ID          = \(n.id)\nAddress     = \(n.address)\nStatus      = \(n.status)\(n.draining ? " (draining)" : "")")
                print("Eligibility = \(n.eligibility)\nDrivers     = \(n.drivers.joined(separator: ", "))\n")
                printTable(["RESOURCE", "CAPACITY", "ALLOCATED", "FREE"], Self.resources(n))
                print("\nAttributes:")
                printTable(["NAME", "VALUE"], d.attributes.sorted { $0.key < $1.key }.map { [$0.key, $0.value] }
                    + d.meta.sorted { $0.key < $1.key }.map { ["meta.\($0.key)", $0.value] })
                print("")
                printAllocations(d.allocations)
                return
            }
            let nodes: [NodeView] = try await cli { () async throws(ClientError) in try await api.nodes() }
            if json { return try printJSON(nodes) }
            printTable(["ID", "ADDRESS", "STATUS", "ELIGIBILITY", "ALLOCS", "CPU USED/TOTAL", "CPU FREE", "MEMORY USED/TOTAL", "MEMORY FREE", "DRIVERS"], nodes.map {
                [$0.id, $0.address, $0.status + ($0.draining ? " (draining)" : ""), $0.eligibility, "\($0.allocations)",
                 "\($0.allocated.cpuMillicores)m/\($0.capacity.cpuMillicores)m", "\($0.capacity.cpuMillicores - $0.allocated.cpuMillicores)m",
                 "\($0.allocated.memoryMiB)Mi/\($0.capacity.memoryMiB)Mi", "\($0.capacity.memoryMiB - $0.allocated.memoryMiB)Mi",
                 $0.drivers.joined(separator: ",")]
            })
        }

        static func resources(_ n: NodeView) -> [[String]] {
            let c = n.capacity, a = n.allocated
            return [["cpu", "\(c.cpuMillicores)m", "\(a.cpuMillicores)m", "\(c.cpuMillicores - a.cpuMillicores)m"],
                    ["memory", "\(c.memoryMiB)Mi", "\(a.memoryMiB)Mi", "\(c.memoryMiB - a.memoryMiB)Mi"],
                    ["disk", "\(c.diskMiB)Mi", "\(a.diskMiB)Mi", "\(c.diskMiB - a.diskMiB)Mi"]]
        }
    }
}
