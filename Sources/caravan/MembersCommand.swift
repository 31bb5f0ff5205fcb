import API
import ArgumentParser

struct MembersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "members", abstract: "List the cluster's members as this agent sees them.")

    @OptionGroup var client: ClientOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        let members: [MemberView]
        do { members = try await client.client().members() } catch let e as ClientError { throw CLIError.from(e) }
        if json { return try printJSON(members) }
        printTable(["NAME", "ADDRESS", "STATUS", "ROLE", "CPU", "MEMORY", "DISK", "TAGS"], members.map { m in
            [m.name, m.address, m.status, m.role,
             m.capacity.map { "\($0.cpuCores)x\($0.cpuMHz)MHz" } ?? "-",
             m.capacity.map { "\($0.memoryMiB)Mi" } ?? "-",
             m.capacity.map { "\($0.diskMiB)Mi" } ?? "-",
             m.tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")]
        })
    }
}
