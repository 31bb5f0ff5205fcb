import API
import ArgumentParser

struct VarCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "var", abstract: "Read and write variables in the replicated store.",
        subcommands: [Put.self, Get.self, List.self, Delete.self])

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "put", abstract: "Set PATH to VALUE (committed through Raft).")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Path such as app/db/url.") var path: String
        @Argument(help: "The value.") var value: String
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let v: VariableView
            do { v = try await client.client().putVariable(path, value) } catch let e as ClientError { throw CLIError.from(e) }
            if json { return try printJSON(v) }
            print("\(v.path) = \(v.value) (index \(v.modifyIndex))")
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "get", abstract: "Print the value at PATH.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Path to read.") var path: String
        @Flag(name: .long, help: "Answer from this agent's copy, which may lag the leader.") var stale = false
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let v: VariableView
            do { v = try await client.client().variable(path, stale: stale) } catch let e as ClientError { throw CLIError.from(e) }
            if json { return try printJSON(v) }
            print(v.value)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List variables under PREFIX.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Path prefix.") var prefix: String = ""
        @Flag(name: .long, help: "Answer from this agent's copy, which may lag the leader.") var stale = false
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let vs: [VariableView]
            do { vs = try await client.client().variables(prefix: prefix, stale: stale) } catch let e as ClientError { throw CLIError.from(e) }
            if json { return try printJSON(vs) }
            printTable(["PATH", "VALUE", "MODIFY INDEX"], vs.map { [$0.path, $0.value, "\($0.modifyIndex)"] })
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete the variable at PATH.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Path to delete.") var path: String
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            let r: [String: Bool] = try await cli { () async throws(ClientError) in try await api.deleteVariable(path) }
            if json { return try printJSON(r) }
            print("deleted \(path)")
        }
    }
}
