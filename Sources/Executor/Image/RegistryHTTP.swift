import CSodium
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// A streaming SHA-256 (libsodium), for verifying every blob against its digest.
struct SHA256 {
    private var state = crypto_hash_sha256_state()
    init() {
        _ = sodium_init()
        crypto_hash_sha256_init(&state)
    }
    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        crypto_hash_sha256_update(&state, base.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
    }
    mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
    mutating func hex() -> String {
        var out = [UInt8](repeating: 0, count: 32)
        crypto_hash_sha256_final(&state, &out)
        return out.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
    static func hex(_ bytes: [UInt8]) -> String {
        var h = SHA256()
        h.update(bytes)
        return h.hex()
    }
}

/// A client certificate (and its private key), PEM files, that a registry asks for (mutual TLS).
public struct RegistryClientCertificate: Sendable, Equatable {
    public var certificate: String
    public var key: String
    public init(certificate: String, key: String) {
        self.certificate = certificate
        self.key = key
    }
}

/// TLS towards registries: the system's trust roots plus, per registry, a CA file the operator
/// named (`caravan agent --registry-ca HOST:PORT=FILE`), and a client certificate when the
/// registry asks for one (`--registry-client-cert HOST:PORT=CERT,KEY`). Contexts are built once
/// per combination.
enum RegistryTLS {
    private static let contexts = Mutex<[String: NIOSSLContext]>([:])

    static func context(caFile: String?, client: RegistryClientCertificate? = nil) throws(ImageError) -> NIOSSLContext {
        let key = [caFile ?? "", client?.certificate ?? "", client?.key ?? ""].joined(separator: "\u{0}")
        if let known = contexts.withLock({ $0[key] }) { return known }
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv12
        if let caFile {
            guard access(caFile, R_OK) == 0 else { throw ImageError("registry CA file \(caFile) cannot be read") }
            config.additionalTrustRoots = [.file(caFile)]
        }
        if let client {
            do {
                config.certificateChain = try NIOSSLCertificate.fromPEMFile(client.certificate).map { .certificate($0) }
                config.privateKey = .privateKey(try NIOSSLPrivateKey(file: client.key, format: .pem))
            } catch {
                throw ImageError("registry client certificate \(client.certificate) with key \(client.key) cannot be used: \(error)")
            }
        }
        let context: NIOSSLContext
        do { context = try NIOSSLContext(configuration: config) } catch {
            throw ImageError("cannot set up TLS\(caFile.map { " with CA file \($0)" } ?? ""): \(error)")
        }
        contexts.withLock { $0[key] = context }
        return context
    }
}

/// One HTTP/1.1 GET against a registry, over TLS when given a context, else plain HTTP: headers
/// in, status/headers/body out; the body goes to memory (bounded) or straight to a file, hashed
/// on the way.
struct RegistryHTTP {
    struct Result {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        var bytesWritten: Int
        var sha256: String
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    static func get(host: String, port: Int, path: String, headers: [(String, String)], toFile: String? = nil, tls: NIOSSLContext? = nil,
                    maxMemory: Int = 4 << 20, maxFile: Int = ImageLimits.standard.maxBlobBytes,
                    timeout: Duration = .seconds(120)) async throws(ImageError) -> Result {
        let address: SocketAddress
        do { address = try SocketAddress.makeAddressResolvingHost(host, port: port) } catch {
            throw ImageError("cannot resolve registry host \(host)")
        }
        var fd: Int32 = -1
        if let toFile {
            fd = open(toFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ImageError("cannot write \(toFile): \(String(cString: strerror(errno)))") }
        }
        defer { if fd >= 0 { close(fd) } }
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: Result.self)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
        head.headers.add(name: "Host", value: port == (tls == nil ? 80 : 443) ? host : "\(host):\(port)")
        // A name is checked against the certificate (and sent as SNI); an address is checked
        // against the certificate's IP entries.
        let serverName = host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "User-Agent", value: "caravan")
        for (k, v) in headers { head.headers.add(name: k, value: v) }
        let sink = fd
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(5))
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        if let tls {
                            try ch.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: serverName))
                        }
                        try ch.pipeline.syncOperations.addHTTPClientHandlers()
                        try ch.pipeline.syncOperations.addHandler(Collector(promise: promise, fd: sink, maxMemory: maxMemory, maxFile: maxFile))
                    }
                }
                .connect(to: address).get()
            channel.writeAndFlush(HTTPClientRequestPart.head(head), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout / .nanoseconds(1)))) {
                promise.fail(ImageError("registry \(host):\(port) did not answer within \(timeout)", transient: true))
                channel.close(promise: nil)
            }
            defer { timer.cancel() }
            let r = try await promise.futureResult.get()
            channel.close(promise: nil)
            return r
        } catch let e as ImageError {
            promise.fail(e)
            throw e
        } catch {
            promise.fail(error)
            if let io = error as? IOError { throw ImageError("cannot reach registry \(host):\(port): \(String(cString: strerror(io.errnoCode)).lowercased())", transient: true) }
            throw ImageError("cannot reach registry \(host):\(port): connection failed", transient: true)
        }
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<Result>
        let fd: Int32
        let maxMemory: Int
        let maxFile: Int
        var result = Result(status: 0, headers: [], body: [], bytesWritten: 0, sha256: "")
        var hash = SHA256()
        var failed = false

        init(promise: EventLoopPromise<Result>, fd: Int32, maxMemory: Int, maxFile: Int) {
            self.promise = promise
            self.fd = fd
            self.maxMemory = maxMemory
            self.maxFile = maxFile
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !failed else { return }
            switch unwrapInboundIn(data) {
            case .head(let h):
                result.status = Int(h.status.code)
                result.headers = h.headers.map { ($0.name, $0.value) }
            case .body(let b):
                // Error bodies stay in memory; only a 200's body goes to the file.
                b.withUnsafeReadableBytes { bytes in
                    if fd >= 0 && result.status == 200 {
                        if result.bytesWritten + bytes.count > maxFile { fail(context, "registry sent a blob larger than \(maxFile) bytes; refusing it"); return }
                        hash.update(bytes)
                        var off = 0
                        while off < bytes.count {
                            let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
                            if n < 0 { if errno == EINTR { continue }; fail(context, "cannot write the blob: \(String(cString: strerror(errno)))"); return }
                            off += n
                        }
                        result.bytesWritten += bytes.count
                    } else {
                        if result.body.count + bytes.count > maxMemory { fail(context, "registry answer larger than \(maxMemory) bytes"); return }
                        hash.update(bytes)
                        result.body.append(contentsOf: bytes)
                    }
                }
            case .end:
                result.sha256 = hash.hex()
                promise.succeed(result)
            }
        }

        func fail(_ context: ChannelHandlerContext, _ why: String) {
            failed = true
            promise.fail(ImageError(why))
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(ImageError("the registry closed the connection before the answer was complete"))
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if let e = error as? NIOSSLError, case .handshakeFailed(let why) = e {
                promise.fail(ImageError("TLS handshake with the registry failed (is its certificate trusted? --registry-ca HOST:PORT=FILE names a CA): \(why)"))
            } else if error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError {
                let text = "\(error)"
                if text.contains("ALERT_BAD_CERTIFICATE") || text.contains("CERTIFICATE_REQUIRED") || text.contains("ALERT_UNKNOWN_CA") {
                    promise.fail(ImageError("the registry refused this agent's TLS connection: it asks for a client certificate it trusts "
                                            + "(--registry-client-cert HOST:PORT=CERT,KEY) — \(text)"))
                } else {
                    promise.fail(ImageError("TLS with the registry failed: \(text)"))
                }
            } else {
                promise.fail(ImageError("registry connection failed: \(error)"))
            }
            context.close(promise: nil)
        }
    }
}
