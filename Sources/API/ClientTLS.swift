import NIOCore
import NIOSSL

/// TLS for a client of the HTTP API (the CLI, and agents relaying to each other): the CA that
/// signed the agents' certificates, this client's certificate and key when the agent asks for
/// one (mutual TLS), and the name the agent's certificate must carry.
public struct ClientTLS: Sendable {
    /// The name every agent certificate made by `caravan tls cert create --server` carries.
    public static let serverRole = "server.caravan"

    public var caFile: String
    public var certFile: String?
    public var keyFile: String?
    /// The name checked in the agent's certificate; default ``serverRole`` for an IP address, the
    /// host name otherwise.
    public var serverName: String?
    let context: NIOSSLContext

    /// Reads the files now: a missing or unreadable one is an error that names it.
    public init(caFile: String, certFile: String? = nil, keyFile: String? = nil, serverName: String? = nil) throws(ClientError) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.serverName = serverName
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv12
        config.certificateVerification = .fullVerification
        do {
            config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        } catch {
            throw ClientError(.badAddress, "cannot read the CA certificate \(caFile): \(error)")
        }
        switch (certFile, keyFile) {
        case (let cert?, let key?):
            do { config.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) } } catch {
                throw ClientError(.badAddress, "cannot read the client certificate \(cert): \(error)")
            }
            do { config.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)) } catch {
                throw ClientError(.badAddress, "cannot read the client key \(key): \(error)")
            }
        case (nil, nil): break
        default: throw ClientError(.badAddress, "a client certificate needs both its file and its key")
        }
        do { context = try NIOSSLContext(configuration: config) } catch {
            throw ClientError(.badAddress, "the client certificate \(certFile ?? "") and key \(keyFile ?? "") do not belong together, or cannot be used: \(error)")
        }
    }

    /// The name to check for `host`.
    func name(for host: String) -> String {
        if let serverName { return serverName }
        let isIP = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        return isIP ? Self.serverRole : host
    }

    /// The TLS handler for a connection to `host`. When the name to check is the server role, the
    /// certificate must carry it as a DNS name (an IP address in it matching the peer is not
    /// enough: it would let any serving certificate from the CA pose as an agent).
    func handler(for host: String) throws -> NIOSSLClientHandler {
        let name = name(for: host)
        guard name == Self.serverRole else { return try NIOSSLClientHandler(context: context, serverHostname: name) }
        return try NIOSSLClientHandler._makeSSLClientHandler(context: context, serverHostname: name) { cert, channel in
            let role = Array(Self.serverRole.utf8)
            let named = cert._subjectAlternativeNames().contains { $0.nameType == .dnsName && Array($0.contents) == role }
            return named ? channel.eventLoop.makeSucceededVoidFuture()
                : channel.eventLoop.makeFailedFuture(ClientError(.unreachable, "the agent's certificate does not name \(Self.serverRole)"))
        }
    }
}
