import API
import FoundationEssentials
import SwiftASN1
import X509

/// The checks an agent's TLS files must pass before it starts, so a wrong file stops it with its
/// name instead of failing every client later: the certificate chains to the configured CA, is
/// valid now, may serve (serverAuth) and names the server role (`server.caravan`) — the name
/// agents and the CLI check.
enum AgentCertificate {
    static func certificates(_ path: String, _ what: String) throws -> [Certificate] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw AgentError("\(what) \(path): cannot read it", usage: true)
        }
        do {
            let certs = try PEMDocument.parseMultiple(pemString: text).filter { $0.discriminator == "CERTIFICATE" }.map { try Certificate(pemDocument: $0) }
            guard !certs.isEmpty else { throw AgentError("\(what) \(path): no certificate in it", usage: true) }
            return certs
        } catch let e as AgentError { throw e } catch {
            throw AgentError("\(what) \(path): not a PEM certificate (\(error))", usage: true)
        }
    }

    static func check(_ t: AgentTLS) async throws {
        let ca = try certificates(t.caFile, "tls.caFile")
        let chain = try certificates(t.certFile, "tls.certFile")
        let leaf = chain[0]
        let now = Date()
        guard leaf.notValidBefore <= now else { throw AgentError("tls.certFile \(t.certFile): not valid before \(leaf.notValidBefore)", usage: true) }
        guard leaf.notValidAfter > now else { throw AgentError("tls.certFile \(t.certFile): expired on \(leaf.notValidAfter)", usage: true) }
        var verifier = Verifier(rootCertificates: CertificateStore(ca)) { RFC5280Policy(validationTime: now) }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(Array(chain.dropFirst())))
        guard case .validCertificate = result else {
            throw AgentError("tls.certFile \(t.certFile) is not signed by the CA in \(t.caFile)", usage: true)
        }
        if let bc = (try? leaf.extensions.basicConstraints).flatMap({ $0 }), case .isCertificateAuthority = bc {
            throw AgentError("tls.certFile \(t.certFile) is a CA certificate: an agent must not hold a CA's key; make an agent's with `caravan tls cert create --server`", usage: true)
        }
        let usages = (try? leaf.extensions.extendedKeyUsage).flatMap { $0 }
        if !(usages?.contains(.serverAuth) ?? false) {
            throw AgentError("tls.certFile \(t.certFile) may not serve TLS (no serverAuth): make an agent's with `caravan tls cert create --server`", usage: true)
        }
        let names = ((try? leaf.extensions.subjectAlternativeNames).flatMap { $0 }) ?? SubjectAlternativeNames([])
        guard names.contains(.dnsName(ClientTLS.serverRole)) else {
            throw AgentError("tls.certFile \(t.certFile) does not name \(ClientTLS.serverRole), the name agents and clients check: make one with `caravan tls cert create --server`", usage: true)
        }
    }
}
