import API
import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Keyring

struct KeyringCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyring",
        abstract: "Manage the cluster's gossip keys on every member at once.",
        discussion: """
            Rotate a key without downtime: `install NEW`, then `use NEW`, then `remove OLD`.
            Keys are shown by an 8-digit identifier, never in full. Pass `-` as KEY to read it from stdin.
            """,
        subcommands: [List.self, Install.self, Use.self, Remove.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show which keys the members hold.")
        @OptionGroup var client: ClientOptions
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let view: KeyringView
            do { view = try await client.client().keyringList() } catch let e as ClientError { throw CLIError.from(e) }
            try report(view, json: json)
        }
    }

    struct Install: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Install a key on every member (it opens, it does not seal yet).")
        @OptionGroup var options: KeyOperationOptions
        func run() async throws { try await options.operate("install") }
    }

    struct Use: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make an installed key the one every member seals with.")
        @OptionGroup var options: KeyOperationOptions
        func run() async throws { try await options.operate("use") }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a key from every member (not the primary).")
        @OptionGroup var options: KeyOperationOptions
        func run() async throws { try await options.operate("remove") }
    }
}

/// What `keyring install|use|remove` share: the agent, the key, the output format.
struct KeyOperationOptions: ParsableArguments {
    @OptionGroup var client: ClientOptions
    @Argument(help: "The base64 key (or - for stdin).") var key: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func operate(_ op: String) async throws {
        var text = key
        if key == "-" { text = readLine(strippingNewline: true) ?? "" }
        let secret: SecretKey
        do { secret = try SecretKey(base64: text) } catch { throw CLIError.usage("KEY: \(error.message)") }
        let view: KeyringView
        do { view = try await client.client().keyring(op, key: secret.base64) } catch let e as ClientError { throw CLIError.from(e) }
        try report(view, json: json, key: secret)
    }
}

func report(_ view: KeyringView, json: Bool, key: SecretKey? = nil) throws {
    if json {
        try printJSON(view)
    } else if view.operation == "list" {
        print("Keys on \(view.succeeded)/\(view.nodes) nodes:")
        for (id, count) in view.keys.sorted(by: { $0.key < $1.key }) {
            let primary = view.primaryKeys[id].map { ", primary on \($0)/\(view.nodes)" } ?? ""
            print("  \(id)  installed on \(count)/\(view.nodes) nodes\(primary)")
        }
    } else {
        let verb = ["install": "Installed", "use": "Now sealing with", "remove": "Removed"][view.operation] ?? view.operation
        print("\(verb) key \(key?.idString ?? "") on \(view.succeeded)/\(view.nodes) nodes")
    }
    for r in view.results where r.error != nil {
        printError("  \(r.node): \(r.error!)")
    }
    for n in view.unreachable {
        printError("  \(n): no answer")
    }
    if view.succeeded < view.nodes {
        throw CLIError.failed("\(view.operation) did not succeed on \(view.nodes - view.succeeded) of \(view.nodes) nodes")
    }
}
