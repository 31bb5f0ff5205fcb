import API
import ArgumentParser
import Crypto
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SwiftASN1
import X509

struct TLSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tls", abstract: "Make the cluster's certificate authority and the agents' and clients' certificates (PEM, ECDSA P-256).",
        discussion: """
            caravan tls ca create                               # caravan-ca.pem, caravan-ca-key.pem
            caravan tls cert create --server --ip 10.0.0.11     # caravan-server.pem and -key.pem, for an agent
            caravan tls cert create --client                    # caravan-client.pem and -key.pem, for the CLI

            Agent certificates name the server role (server.caravan): agents and the CLI check it, so a
            client certificate cannot pose as an agent. Keep caravan-ca-key.pem off the agents.
            """,
        subcommands: [CA.self, Cert.self])

    static func write(_ text: String, to path: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw CLIError.failed(errno == EEXIST ? "\(path) exists; not overwriting it" : "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard bytes.withUnsafeBufferPointer({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count else {
            throw CLIError.failed("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Refuses before writing anything when either file of a pair exists (a key without its
    /// certificate, or the reverse, is worse than nothing).
    static func ensureFree(_ paths: String...) throws {
        for p in paths where access(p, F_OK) == 0 { throw CLIError.failed("\(p) exists; not overwriting it") }
    }

    static func read(_ path: String, what: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw CLIError.usage("cannot read the \(what) \(path) (make one with `caravan tls ca create`)")
        }
        return text
    }

    static func serial() -> Certificate.SerialNumber {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        bytes[0] &= 0x7F
        return Certificate.SerialNumber(bytes: bytes[...])
    }

    struct CA: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ca", abstract: "The certificate authority.", subcommands: [Create.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "create", abstract: "Make a CA certificate and key in this directory.")
            @Option(help: "Days the CA is valid (default 1825).") var days = 1825
            @Option(help: "The CA's common name.") var commonName = "Caravan CA"
            @Option(help: "File name prefix (default caravan-ca: caravan-ca.pem and caravan-ca-key.pem).") var out = "caravan-ca"

            func run() async throws {
                guard (1...36_500).contains(days) else { throw CLIError.usage("--days: \(days) must be 1 to 36500") }
                let key = P256.Signing.PrivateKey()
                let privateKey = Certificate.PrivateKey(key)
                let name = try DistinguishedName { CommonName(commonName); OrganizationName("Caravan") }
                let now = Date()
                let cert = try Certificate(
                    version: .v3, serialNumber: TLSCommand.serial(), publicKey: privateKey.publicKey,
                    notValidBefore: now - 60, notValidAfter: now + Double(days) * 86_400, issuer: name, subject: name,
                    extensions: try Certificate.Extensions {
                        Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                        Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                        SubjectKeyIdentifier(hash: privateKey.publicKey)
                    },
                    issuerPrivateKey: privateKey)
                try TLSCommand.ensureFree(out + "-key.pem", out + ".pem")
                try TLSCommand.write(try privateKey.serializeAsPEM().pemString + "\n", to: out + "-key.pem", mode: 0o600)
                try TLSCommand.write(try cert.serializeAsPEM().pemString + "\n", to: out + ".pem", mode: 0o644)
                print("==> CA certificate \(out).pem, key \(out)-key.pem (keep the key off the agents)")
            }
        }
    }

    struct Cert: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "cert", abstract: "Agent and client certificates.", subcommands: [Create.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "create", abstract: "Make a certificate signed by the CA: --server for an agent, --client for the CLI.")
            @Flag(help: "An agent's certificate (names server.caravan and localhost; serves and calls other agents).") var server = false
            @Flag(help: "A client's certificate (names client.caravan).") var client = false
            @Option(help: "Another DNS name an agent's certificate carries (for clients that reach it by that name). Repeatable.") var dns: [String] = []
            @Option(help: "An IP address an agent's certificate carries. Repeatable.") var ip: [String] = []
            @Option(help: "The CA certificate (default caravan-ca.pem).") var ca = "caravan-ca.pem"
            @Option(help: "The CA key (default caravan-ca-key.pem).") var caKey = "caravan-ca-key.pem"
            @Option(help: "Days it is valid (default 365).") var days = 365
            @Option(help: "File name prefix (default caravan-server or caravan-client).") var out: String?

            func run() async throws {
                guard server != client else { throw CLIError.usage("give one of --server and --client") }
                // A client certificate names only the client role: one carrying an agent's name or
                // address could pose as that agent.
                guard server || (dns.isEmpty && ip.isEmpty) else { throw CLIError.usage("--dns and --ip are for --server certificates") }
                guard (1...36_500).contains(days) else { throw CLIError.usage("--days: \(days) must be 1 to 36500") }
                let caCert: Certificate, caKeyValue: Certificate.PrivateKey
                do { caCert = try Certificate(pemEncoded: try TLSCommand.read(ca, what: "CA certificate")) } catch let e as CLIError { throw e } catch {
                    throw CLIError.usage("\(ca) is not a PEM certificate: \(error)")
                }
                do { caKeyValue = try Certificate.PrivateKey(pemEncoded: try TLSCommand.read(caKey, what: "CA key")) } catch let e as CLIError { throw e } catch {
                    throw CLIError.usage("\(caKey) is not a PEM private key: \(error)")
                }
                guard caKeyValue.publicKey == caCert.publicKey else { throw CLIError.usage("\(caKey) is not the key of \(ca)") }
                var names: [GeneralName] = [.dnsName(server ? ClientTLS.serverRole : "client.caravan")]
                if server { names.append(.dnsName("localhost")) }
                for d in dns {
                    guard !d.isEmpty, d.utf8.count <= 253, d.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-.*".contains($0)) }) else {
                        throw CLIError.usage("--dns: \"\(d)\" is not a DNS name")
                    }
                    names.append(.dnsName(d))
                }
                for a in ip + (server ? ["127.0.0.1"] : []) {
                    guard let bytes = Self.ipBytes(a) else { throw CLIError.usage("--ip: \"\(a)\" is not an IP address") }
                    names.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...])))
                }
                let key = P256.Signing.PrivateKey()
                let privateKey = Certificate.PrivateKey(key)
                let role = server ? "server" : "client"
                let subject = try DistinguishedName { CommonName("\(role).caravan"); OrganizationName("Caravan") }
                let now = Date()
                let cert = try Certificate(
                    version: .v3, serialNumber: TLSCommand.serial(), publicKey: privateKey.publicKey,
                    notValidBefore: now - 60, notValidAfter: now + Double(days) * 86_400, issuer: caCert.subject, subject: subject,
                    extensions: try Certificate.Extensions {
                        Critical(BasicConstraints.notCertificateAuthority)
                        Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                        try ExtendedKeyUsage(server ? [.serverAuth, .clientAuth] : [.clientAuth])
                        SubjectAlternativeNames(names)
                        SubjectKeyIdentifier(hash: privateKey.publicKey)
                    },
                    issuerPrivateKey: caKeyValue)
                let prefix = out ?? "caravan-\(role)"
                try TLSCommand.ensureFree(prefix + "-key.pem", prefix + ".pem")
                try TLSCommand.write(try privateKey.serializeAsPEM().pemString + "\n", to: prefix + "-key.pem", mode: 0o600)
                try TLSCommand.write(try cert.serializeAsPEM().pemString + "\n", to: prefix + ".pem", mode: 0o644)
                print("==> \(role) certificate \(prefix).pem, key \(prefix)-key.pem")
            }

            /// An IPv4 or IPv6 address as its bytes.
            static func ipBytes(_ s: String) -> [UInt8]? {
                var v4 = in_addr()
                if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
                var v6 = in6_addr()
                if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
                return nil
            }
        }
    }
}
