import CaravanModel
@testable import Executor
import Foundation
import HTTPTypes
import Hummingbird
import Synchronization
import Testing

/// A registry front that demands a bearer token from its own token service (which itself may
/// demand basic credentials), passing authorised requests on to the real registry fixture.
struct AuthenticatingRegistry {
    /// Each front its own port (two tests' fronts on one random port answered each other's pulls:
    /// the anonymous one served the test that expects a refusal without credentials).
    private static let nextPort = Mutex(41000 + Int(getpid() % 4000))
    let port = AuthenticatingRegistry.nextPort.withLock { p in defer { p += 1 }; return p }
    let upstream: String
    let credentials: String?

    func run() async throws {
        let port = self.port, credentials = self.credentials
        let up = upstream.split(separator: ":")
        let upHost = String(up[0]), upPort = Int(up[1])!
        let router = Router()
        router.get("/token") { request, _ -> Response in
            if let credentials, request.headers[.authorization] != "Basic " + Data(credentials.utf8).base64EncodedString() {
                return Response(status: .unauthorized)
            }
            let scope = request.uri.queryParameters.get("scope") ?? ""
            guard scope == "repository:busybox:pull" else { return Response(status: .forbidden) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"token":"t0k3n"}"#)))
        }
        router.get("/v2/**") { request, _ -> Response in
            guard request.headers[.authorization] == "Bearer t0k3n" else {
                return Response(status: .unauthorized, headers: [
                    .wwwAuthenticate: "Bearer realm=\"http://127.0.0.1:\(port)/token\",service=\"test-registry\",scope=\"repository:busybox:pull\"",
                ])
            }
            let r = try await RegistryHTTP.get(host: upHost, port: upPort, path: request.uri.path,
                                               headers: [("Accept", request.headers[.accept] ?? "*/*")], maxMemory: 64 << 20)
            var headers: HTTPFields = [:]
            if let t = r.header("Content-Type") { headers[.contentType] = t }
            return Response(status: .init(code: r.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: r.body)))
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
        try await app.runService(gracefulShutdownSignals: [])
    }

    func waitReady() async throws {
        for _ in 0..<200 {
            if let r = try? await RegistryHTTP.get(host: "127.0.0.1", port: port, path: "/v2/busybox/manifests/none", headers: [], timeout: .seconds(1)), r.status == 401 { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ImageError("the test registry did not start")
    }
}

@Suite("Executor: registry authentication", .enabled(if: canRunContainers)) struct RegistryAuthTests {
    @Test("an anonymous bearer token is fetched from the realm the registry names")
    func anonymousToken() async throws {
        let reg = RegistryFixture.shared
        try #require(reg.ready, "registry fixture: \(reg.problem)")
        let front = AuthenticatingRegistry(upstream: reg.address, credentials: nil)
        let server = Task { try await front.run() }
        defer { server.cancel() }
        try await front.waitReady()
        let images = ImageStore(root: tempDir("token") + "/images")
        let image = try await images.pull("127.0.0.1:\(front.port)/busybox:1.36", auth: nil)
        #expect(access(image.rootfs + "/bin/busybox", X_OK) == 0)
    }

    @Test("a private registry's token service takes the task's credentials, and refuses without them")
    func credentials() async throws {
        let reg = RegistryFixture.shared
        try #require(reg.ready, "registry fixture: \(reg.problem)")
        let front = AuthenticatingRegistry(upstream: reg.address, credentials: "robot:s3cret")
        let server = Task { try await front.run() }
        defer { server.cancel() }
        try await front.waitReady()
        let root = tempDir("basic")
        let refused = ImageStore(root: root + "/a")
        do {
            _ = try await refused.pull("127.0.0.1:\(front.port)/busybox:1.36", auth: nil)
            Issue.record("pulled without credentials")
        } catch {
            #expect(error.description.contains("refused (HTTP 401)") && error.description.contains("config.auth"), "\(error)")
        }
        let wrong = try? await ImageStore(root: root + "/b").pull("127.0.0.1:\(front.port)/busybox:1.36", auth: RegistryAuth(username: "robot", password: "no"))
        #expect(wrong == nil)
        let image = try await ImageStore(root: root + "/c").pull("127.0.0.1:\(front.port)/busybox:1.36", auth: RegistryAuth(username: "robot", password: "s3cret"))
        #expect(access(image.rootfs + "/bin/busybox", X_OK) == 0)
    }
}
