import API
import ArgumentParser
import CaravanModel
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

struct ACLCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "acl", abstract: "Access control: bootstrap, policies and tokens.",
        discussion: """
            ACLs are off until `caravan acl bootstrap`, which turns them on for the whole cluster and
            prints the first management token's secret (once). From then on every call needs a token
            (`--token` or $CARAVAN_TOKEN) whose policies allow it; calls without one get the rules of
            the policy named `anonymous`, if there is one.
            """,
        subcommands: [Bootstrap.self, PolicyCommand.self, TokenCommand.self])

    static func printToken(_ t: ACLTokenView) {
        print("Accessor ID  = \(t.accessorID)")
        if let s = t.secretID { print("Secret ID    = \(s)") }
        print("Name         = \(t.name)")
        print("Type         = \(t.type)")
        print("Policies     = \(t.policies.isEmpty ? "-" : t.policies.joined(separator: ", "))")
        print("Created      = \(Self.time(t.createTime))")
        print("Expires      = \(t.expiryTime.map(Self.time) ?? "never")\(t.expired ? " (expired)" : "")")
    }

    static func time(_ ms: Int64) -> String {
        let d = Date(timeIntervalSince1970: Double(ms) / 1000)
        return d.formatted(.iso8601)
    }

    struct Bootstrap: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bootstrap", abstract: "Turn ACLs on for the cluster and print the first management token (once).")
        @OptionGroup var client: ClientOptions
        @Flag(name: .long, help: "Print JSON.") var json = false
        @Option(help: "Also write the token's secret to this file (mode 0600).") var secretFile: String?

        func run() async throws {
            let t = try await client.call(.POST, "/v1/acl/bootstrap", as: ACLTokenView.self)
            if let secretFile, let secret = t.secretID {
                let fd = open(secretFile, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600)
                guard fd >= 0 else { throw CLIError.failed("cannot write \(secretFile): \(String(cString: strerror(errno)))") }
                let bytes = Array((secret + "\n").utf8)
                _ = bytes.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count) }
                close(fd)
            }
            if json { return try printJSON(t) }
            ACLCommand.printToken(t)
            print("\nKeep the secret: it is shown only now. Use it with --token or CARAVAN_TOKEN.")
        }
    }

    struct PolicyCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "policy", abstract: "ACL policies: named rule sets tokens refer to.",
                                                        subcommands: [Apply.self, List.self, Info.self, Delete.self])

        struct Apply: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "apply", abstract: "Create or replace policy NAME from a YAML or JSON rules file.",
                discussion: """
                    namespaces: {default: [read-job, submit-job, read-logs], "team-*": [read]}
                    node: read            # read, write or deny; likewise agent, operator, keyring
                    variables: {"app/": write, "app/secret/": deny}

                    Namespace capabilities: read-job, submit-job, read-logs, alloc-exec, alloc-lifecycle,
                    scale; `read` stands for read-job, `write` for all of them, `deny` refuses the
                    namespace whatever other policies grant.
                    """)
            @OptionGroup var client: ClientOptions
            @Argument(help: "The policy's name.") var name: String
            @Argument(help: "The rules file (YAML or JSON).") var file: String
            @Option(help: "A description.") var description: String?
            @Flag(name: .long, help: "Print JSON.") var json = false

            func run() async throws {
                var rules = try PolicyFile.load(file)
                if let description { rules.description = description }
                let v = try await client.call(.PUT, "/v1/acl/policy/" + name, body: rules, as: ACLPolicyView.self)
                if json { return try printJSON(v) }
                print("policy \(v.name) applied (index \(v.modifyIndex))")
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List the policies.")
            @OptionGroup var client: ClientOptions
            @Flag(name: .long, help: "Print JSON.") var json = false

            func run() async throws {
                let all = try await client.call(.GET, "/v1/acl/policies", as: [ACLPolicyView].self)
                if json { return try printJSON(all) }
                printTable(["NAME", "DESCRIPTION"], all.map { [$0.name, $0.rules.description ?? ""] })
            }
        }

        struct Info: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "info", abstract: "Show a policy's rules.")
            @OptionGroup var client: ClientOptions
            @Argument(help: "The policy's name.") var name: String

            func run() async throws {
                try printJSON(try await client.call(.GET, "/v1/acl/policy/" + name, as: ACLPolicyView.self))
            }
        }

        struct Delete: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a policy (tokens naming it lose its rules).")
            @OptionGroup var client: ClientOptions
            @Argument(help: "The policy's name.") var name: String

            func run() async throws {
                _ = try await client.call(.DELETE, "/v1/acl/policy/" + name, as: [String: Bool].self)
                print("policy \(name) deleted")
            }
        }
    }

    struct TokenCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "token", abstract: "ACL tokens.",
                                                        subcommands: [Create.self, List.self, Info.self, Update.self, Delete.self, Self_.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "create", abstract: "Make a token and print its secret (once).")
            @OptionGroup var client: ClientOptions
            @Option(help: "A name for the token.") var name: String?
            @Option(help: "client (default) or management.") var type: String?
            @Option(help: "A policy the token carries. Repeatable.") var policy: [String] = []
            @Option(help: "Expire after this long: 90s, 30m, 24h, 7d.") var ttl: String?
            @Flag(name: .long, help: "Print JSON.") var json = false

            func run() async throws {
                let t = try await client.call(.POST, "/v1/acl/tokens",
                                                 body: ACLTokenRequest(name: name, type: type, policies: policy, ttl: ttl), as: ACLTokenView.self)
                if json { return try printJSON(t) }
                ACLCommand.printToken(t)
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List the tokens (never their secrets).")
            @OptionGroup var client: ClientOptions
            @Flag(name: .long, help: "Print JSON.") var json = false

            func run() async throws {
                let all = try await client.call(.GET, "/v1/acl/tokens", as: [ACLTokenView].self)
                if json { return try printJSON(all) }
                printTable(["ACCESSOR", "NAME", "TYPE", "POLICIES", "EXPIRES"],
                           all.map { [$0.accessorID, $0.name, $0.type, $0.policies.joined(separator: ","),
                                      $0.expired ? "expired" : $0.expiryTime.map(ACLCommand.time) ?? "never"] })
            }
        }

        struct Info: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "info", abstract: "Show a token by accessor id.")
            @OptionGroup var client: ClientOptions
            @Argument(help: "The token's accessor id.") var accessor: String
            @Flag(name: .long, help: "Print JSON.") var json = false

            func run() async throws {
                let t = try await client.call(.GET, "/v1/acl/token/" + accessor, as: ACLTokenView.self)
                if json { return try printJSON(t) }
                ACLCommand.printToken(t)
            }
        }

        struct Update: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "update", abstract: "Change a token's name, policies or expiry.")
            @OptionGroup var client: ClientOptions
            @Argument(help: "The token's accessor id.") var accessor: String
            @Option(help: "A new name.") var name: String?
            @Option(help: "The policies the token carries from now on (replacing its list). Repeatable.") var policy: [String] = []
            @Option(help: "Expire this long from now: 90s, 30m, 24h, 7d.") var ttl: String?
            @Flag(name: .long, help: "Print JSON.") var json = false

            func run() async throws {
                let body = ACLTokenRequest(name: name, policies: policy.isEmpty ? nil : policy, ttl: ttl)
                let t = try await client.call(.PUT, "/v1/acl/token/" + accessor, body: body, as: ACLTokenView.self)
                if json { return try printJSON(t) }
                ACLCommand.printToken(t)
            }
        }

        struct Delete: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "delete", abstract: "Revoke a token by accessor id.")
            @OptionGroup var client: ClientOptions
            @Argument(help: "The token's accessor id.") var accessor: String

            func run() async throws {
                _ = try await client.call(.DELETE, "/v1/acl/token/" + accessor, as: [String: Bool].self)
                print("token \(accessor) deleted")
            }
        }

        struct Self_: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "self", abstract: "Show the token this command runs with.")
            @OptionGroup var client: ClientOptions
            @Flag(name: .long, help: "Print JSON.") var json = false

            func run() async throws {
                let t = try await client.call(.GET, "/v1/acl/token/self", as: ACLTokenView.self)
                if json { return try printJSON(t) }
                ACLCommand.printToken(t)
            }
        }
    }
}

/// An ACL policy's rules file, YAML or JSON, read with the job files' parser; every problem names
/// the file, the line and the key.
enum PolicyFile {
    static func load(_ path: String) throws -> ACLPolicyRules {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw CLIError.usage("cannot read \(path)")
        }
        let root: DocumentNode
        do { root = try YAMLSubsetParser.parse(text) } catch { throw CLIError.usage("\(path):\(error.line): \(error.message)") }
        guard case .mapping(let entries, _) = root else { throw CLIError.usage("\(path):\(root.line): expected a mapping of rules") }
        func fail(_ key: String, _ n: DocumentNode, _ m: String) -> CLIError { CLIError.usage("\(path):\(n.line): \(key): \(m)") }
        func scalar(_ key: String, _ n: DocumentNode) throws -> String {
            guard case .scalar(let s, _, _) = n else { throw fail(key, n, "expected a value, found \(n.kindName)") }
            return s
        }
        func map(_ key: String, _ n: DocumentNode) throws -> [(String, DocumentNode)] {
            guard case .mapping(let es, _) = n else { throw fail(key, n, "expected a mapping, found \(n.kindName)") }
            return es.map { ($0.key, $0.value) }
        }
        var rules = ACLPolicyRules()
        for e in entries {
            switch e.key {
            case "description": rules.description = try scalar(e.key, e.value)
            case "node": rules.node = try scalar(e.key, e.value)
            case "agent": rules.agent = try scalar(e.key, e.value)
            case "operator": rules.operator = try scalar(e.key, e.value)
            case "keyring": rules.keyring = try scalar(e.key, e.value)
            case "variables":
                var v: [String: String] = [:]
                for (k, n) in try map(e.key, e.value) { v[k] = try scalar("variables.\(k)", n) }
                rules.variables = v
            case "namespaces":
                var ns: [String: [String]] = [:]
                for (k, n) in try map(e.key, e.value) {
                    switch n {
                    case .scalar(let s, _, _): ns[k] = [s]
                    case .sequence(let items, _): ns[k] = try items.map { try scalar("namespaces.\(k)", $0) }
                    default: throw fail("namespaces.\(k)", n, "expected a list of capabilities")
                    }
                }
                rules.namespaces = ns
            default:
                throw CLIError.usage("\(path):\(e.line): \(e.key): unknown key (description, namespaces, node, agent, operator, keyring, variables)")
            }
        }
        return rules
    }
}
