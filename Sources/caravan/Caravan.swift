import API
import ArgumentParser
import FoundationEssentials
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

@main
struct Caravan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caravan",
        abstract: "A masterless cluster scheduler: one agent on every machine.",
        version: "0.2.0",
        subcommands: [AgentCommand.self, MembersCommand.self, StatusCommand.self, OperatorCommand.self, VarCommand.self, JobCommand.self, AllocCommand.self, NodeCommand.self, EvalCommand.self,
                      LeaveCommand.self, KeygenCommand.self, KeyringCommand.self, ACLCommand.self, TLSCommand.self, NamespaceCommand.self]
    )

    /// Parses and runs a command; exit status 0 on success, 1 on a failed operation, 2 on bad usage or input.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch let e as CLIError {
            printError("error: \(e.message)")
            Glibc.exit(e.exitCode)
        } catch let e as ExitCode where e.rawValue != 0 {
            // A status handed through as it is (`alloc exec` ends with its command's).
            Glibc.exit(e.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                // --help and --version.
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            let message = fullMessage(for: error)
            printError(message.isEmpty ? "error: \(error)" : message)
            // Everything ArgumentParser rejects is bad usage.
            Glibc.exit(2)
        }
    }
}

/// Writes one line to standard error.
func printError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBufferPointer { Glibc.write(2, $0.baseAddress, $0.count) }
}

/// An error the CLI reports as one line, with the exit status it calls for.
struct CLIError: Error {
    let message: String
    let exitCode: Int32

    static func usage(_ m: String) -> CLIError { CLIError(message: m, exitCode: 2) }
    static func failed(_ m: String) -> CLIError { CLIError(message: m, exitCode: 1) }

    static func from(_ e: ClientError) -> CLIError {
        e.isBadInput ? .usage(e.message) : .failed(e.message)
    }
}

/// `--address` / `$CARAVAN_ADDR` for every command that talks to an agent.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: "The agent's HTTP API (default $CARAVAN_ADDR or http://127.0.0.1:4680).")
    var address: String?
    @Option(name: .long, help: "The ACL token's secret (default $CARAVAN_TOKEN; prefer the variable: flags show in `ps`).")
    var token: String?
    @Option(name: .long, help: "For https:// addresses: the CA certificate that signed the agents' (default $CARAVAN_CACERT).")
    var caCert: String?
    @Option(name: .long, help: "A client certificate for agents that ask for one (default $CARAVAN_CLIENT_CERT).")
    var clientCert: String?
    @Option(name: .long, help: "Its key (default $CARAVAN_CLIENT_KEY).")
    var clientKey: String?
    @Option(name: .long, help: "The name the agent's certificate must carry (default server.caravan for an IP address; $CARAVAN_TLS_SERVER_NAME).")
    var tlsServerName: String?
    @Option(name: .long, help: "The namespace of the jobs, allocations and evaluations named (default $CARAVAN_NAMESPACE or default; * lists every one).")
    var namespace: String?

    func client() throws -> CaravanClient {
        let env = ProcessInfo.processInfo.environment
        let a = address ?? env["CARAVAN_ADDR"] ?? "http://127.0.0.1:4680"
        var client: CaravanClient
        do {
            var tls: ClientTLS?
            // TLS options with a plain address would send the token in the clear: say so.
            if !a.hasPrefix("https://"), caCert != nil || clientCert != nil || clientKey != nil {
                throw ClientError(.badAddress, "--ca-cert/--client-cert/--client-key are given but \(a) is plain http: use https://")
            }
            if a.hasPrefix("https://"), let ca = caCert ?? env["CARAVAN_CACERT"] {
                tls = try ClientTLS(caFile: ca, certFile: clientCert ?? env["CARAVAN_CLIENT_CERT"], keyFile: clientKey ?? env["CARAVAN_CLIENT_KEY"],
                                    serverName: tlsServerName ?? env["CARAVAN_TLS_SERVER_NAME"])
            }
            client = try CaravanClient(address: a, tls: tls)
        } catch let e as ClientError { throw CLIError.usage(e.message) }
        client.token = token ?? env["CARAVAN_TOKEN"]
        client.namespace = namespace ?? env["CARAVAN_NAMESPACE"]
        return client
    }
}

extension ClientOptions {
    /// One API call with this command's client (`write`: tagged and retried as `CaravanClient.write`
    /// does); a failure becomes the CLI's one-line error and exit status.
    func call<T: Decodable>(_ method: HTTPMethod, _ path: String, body: (some Encodable)? = Optional<String>.none,
                            as: T.Type = T.self, write: Bool = false) async throws -> T {
        let api = try client()
        return try await cli { () async throws(ClientError) in try await api.request(method, path, body: body, as: T.self, write: write) }
    }

    /// A GET whose 404 is an answer (nil), not a failure; every other failure still is one.
    func find<T: Decodable>(_ path: String, as: T.Type = T.self) async throws -> T? {
        let api = try client()
        return try await cli { () async throws(ClientError) -> T? in
            do throws(ClientError) { return try await api.request(.GET, path, body: Optional<String>.none, as: T.self) } catch {
                if case .api(status: 404, _) = error.code { return nil }
                throw error
            }
        }
    }
}

func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Prints rows as aligned columns.
func printTable(_ header: [String], _ rows: [[String]]) {
    print(TextTable.render(header, rows), terminator: "")
}
