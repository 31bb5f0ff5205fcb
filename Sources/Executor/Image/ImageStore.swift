import CaravanModel
import Dispatch
import FoundationEssentials
import NIOSSL
#if canImport(Glibc)
import Glibc
#endif

/// This machine as images and constraints name it.
public enum HostPlatform {
    /// The CPU architecture in Go/OCI spelling (`amd64`, `arm64`), as image indexes and Nomad's
    /// `cpu.arch` use it.
    public static var architecture: String {
        var u = utsname()
        uname(&u)
        let m = withUnsafeBytes(of: u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch m {
        case "x86_64": return "amd64"
        case "aarch64": return "arm64"
        default: return m
        }
    }
}

/// The parts of an image's config a task needs.
public struct ImageConfig: Codable, Sendable, Equatable {
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var env: [String]?
    public var workingDir: String?
    public var user: String?
}

/// A pulled, unpacked image.
public struct PulledImage: Sendable, Equatable {
    /// The manifest digest (`sha256:…`).
    public var digest: String
    /// The unpacked root, shared read-only by every task of this image (each task writes to its own overlay).
    public var rootfs: String
    public var config: ImageConfig
}

/// Pulls images through the OCI distribution API and keeps them on disk:
///
///     <data-dir>/images/blobs/sha256/<hex>   every blob, verified against its digest
///     <data-dir>/images/rootfs/<hex>/        the layers of manifest <hex> applied in order
///     <data-dir>/images/rootfs/<hex>.json    its config
///
/// Registries are spoken to over HTTPS (port 443 unless named), their certificate checked
/// against the system's trust roots plus the CA file named for that registry (`registryCAs`,
/// "HOST:PORT" → PEM file); plain HTTP is used for loopback registries and those on the insecure
/// list, unless a CA file or a client certificate is named for them.
public actor ImageStore {
    public let root: String
    public let insecure: Set<String>
    public let registryCAs: [String: String]
    public let registryClientCertificates: [String: RegistryClientCertificate]
    public let limits: ImageLimits
    private var inFlight: [String: Task<PulledImage, any Error>] = [:]

    /// Opens the store under `root` (one agent's data directory) and removes what an interrupted
    /// pull left: half-unpacked roots and partial downloads.
    public init(root: String, insecureRegistries: [String] = [], registryCAs: [String: String] = [:],
                registryClientCertificates: [String: RegistryClientCertificate] = [:], limits: ImageLimits = .standard) {
        self.root = root
        self.insecure = Set(insecureRegistries)
        self.registryCAs = registryCAs
        self.registryClientCertificates = registryClientCertificates
        self.limits = limits
        mkdirAll(root + "/blobs/sha256")
        mkdirAll(root + "/rootfs")
        mkdirAll(root + "/tags")
        Self.removeInterruptedPulls(root)
    }

    /// Half-unpacked roots (`rootfs/.tmp-…`) and partial blobs (`….part-…`) of a process that is
    /// gone: a pull in this process or another live one is left alone.
    static func removeInterruptedPulls(_ root: String) {
        func ownerGone(_ name: String) -> Bool {
            // The writer's pid is the second-to-last "-" field: NAME-PID-RANDOM.
            let fields = name.split(separator: "-")
            guard fields.count >= 3, let pid = Int32(fields[fields.count - 2]) else { return true }
            return pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH
        }
        for n in listDirectory(root + "/rootfs") where n.hasPrefix(".tmp-") && ownerGone(n) {
            removeTree(root + "/rootfs/" + n)
        }
        for n in listDirectory(root + "/blobs/sha256") where n.contains(".part-") && ownerGone(n) {
            unlink(root + "/blobs/sha256/" + n)
        }
    }

    static let manifestTypes = [
        "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    ]

    /// The image, pulled unless already here; one pull at a time per reference.
    public func pull(_ text: String, auth: RegistryAuth?, progress: @escaping @Sendable (String) -> Void = { _ in }) async throws(ImageError) -> PulledImage {
        let ref = try ImageReference(text)
        let key = ref.description
        let task: Task<PulledImage, any Error>
        if let t = inFlight[key] { task = t } else {
            let root = self.root, insecure = self.insecure, cas = self.registryCAs, certs = self.registryClientCertificates, limits = self.limits
            task = Task {
                try await Self.fetch(ref, auth: auth, root: root, insecure: insecure, registryCAs: cas, clientCertificates: certs,
                                     limits: limits, progress: progress)
            }
            inFlight[key] = task
        }
        defer { inFlight[key] = nil }
        do { return try await task.value } catch let e as ImageError { throw e } catch { throw ImageError("\(error)") }
    }

    typealias Descriptor = ImageDescriptor
    typealias Manifest = ImageManifest
    typealias ConfigBlob = ImageConfigBlob

    static func fetch(_ ref: ImageReference, auth: RegistryAuth?, root: String, insecure: Set<String>, registryCAs: [String: String] = [:],
                      clientCertificates: [String: RegistryClientCertificate] = [:], limits: ImageLimits = .standard,
                      progress: @Sendable (String) -> Void) async throws(ImageError) -> PulledImage {
        let loopback = ref.host == "localhost" || ref.host.hasPrefix("127.") || ref.host == "[::1]" || ref.host == "::1"
        let ca = registryCAs[ref.registry] ?? registryCAs[ref.host]
        let certificate = clientCertificates[ref.registry] ?? clientCertificates[ref.host]
        let plain = ca == nil && certificate == nil && (loopback || insecure.contains(ref.registry) || insecure.contains(ref.host))
        var client = RegistryClient(ref: ref, auth: auth, tls: plain ? nil : try RegistryTLS.context(caFile: ca, client: certificate))
        client.maxBlobBytes = limits.maxBlobBytes
        let tagFile = root + "/tags/" + SHA256.hex(Array(ref.description.utf8))
        // The manifest, by digest if given, else by tag (then an index is narrowed to this platform).
        var manifestBytes: [UInt8]
        var digest: String
        do {
            (manifestBytes, digest) = try await client.manifest(ref.digest ?? ref.tag)
        } catch {
            // Unreachable registry: a tag pulled before still runs.
            if ref.digest == nil, let known = readSmallFile(tagFile), ImageDigest.isValid(known), let cached = cachedImage(root, known) {
                progress("registry unreachable (\(error.description)); using the image pulled before (\(known.prefix(19)))")
                markUsed(root, known)
                return cached
            }
            throw error
        }
        var manifest = try decode(Manifest.self, manifestBytes, what: "manifest")
        if let list = manifest.manifests {
            let arch = HostPlatform.architecture
            guard let pick = list.first(where: { $0.platform?.os == "linux" && $0.platform?.architecture == arch }) else {
                throw ImageError("image \(ref) has no linux/\(arch) variant (it has \(list.compactMap { $0.platform.map { "\($0.os)/\($0.architecture)" } }.joined(separator: ", ")))")
            }
            try ImageDigest.check(pick.digest, "the index entry for linux/\(arch) of \(ref)")
            (manifestBytes, digest) = try await client.manifest(pick.digest)
            manifest = try decode(Manifest.self, manifestBytes, what: "manifest")
        }
        if let cached = cachedImage(root, digest) {
            try? writeFile(tagFile, digest)
            markUsed(root, digest)
            return cached
        }
        guard manifest.schemaVersion == 2, let configDesc = manifest.config, let layers = manifest.layers else {
            throw ImageError("image \(ref): unsupported manifest (only OCI and Docker v2 schema 2 images)")
        }
        try ImageDigest.check(configDesc.digest, "the config of \(ref)")
        for l in layers { try ImageDigest.check(l.digest, "a layer of \(ref)") }
        // The whole image is bounded too, not only each layer.
        guard layers.count <= limits.maxLayers else {
            throw ImageError("image \(ref) has \(layers.count) layers; the limit is \(limits.maxLayers)")
        }
        guard Set(layers.map(\.digest)).count == layers.count else { throw ImageError("image \(ref) lists the same layer twice; refusing it") }
        let declared = layers.reduce(0) { $0 &+ max(0, $1.size ?? 0) }
        guard declared <= limits.maxBlobBytes else {
            throw ImageError("image \(ref)'s layers add up to \(declared) bytes; the limit is \(limits.maxBlobBytes)")
        }
        if let size = configDesc.size, size > 8 << 20 { throw ImageError("image \(ref)'s config is \(size) bytes; the limit is 8 MiB") }
        let configBytes = try await client.blob(configDesc, root: root)
        let cfg = try decode(ConfigBlob.self, readBytes(configBytes), what: "image config").config
        var paths: [String] = []
        for (i, l) in layers.enumerated() {
            if let t = l.mediaType, t.contains("zstd") { throw ImageError("image \(ref): zstd-compressed layers are not supported") }
            progress("layer \(i + 1)/\(layers.count) \(l.digest.prefix(19))")
            paths.append(try await client.blob(l, root: root))
        }
        // Unpack into a temporary directory, then rename: a half-unpacked image is never used.
        let hex = String(digest.dropFirst(7))
        let final = root + "/rootfs/" + hex
        let tmp = root + "/rootfs/.tmp-\(hex)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdirAll(tmp)
        do {
            // On a thread of its own: an unpack takes as long as the layers are big, and must not
            // hold one of the few threads every other task of the agent runs on.
            let unpacker = LayerUnpacker(root: tmp, limits: limits)
            let layerPaths = paths
            try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
                DispatchQueue.global().async {
                    do {
                        for p in layerPaths { try unpacker.apply(layer: p) }
                        done.resume()
                    } catch { done.resume(throwing: error) }
                }
            }
        } catch {
            removeTree(tmp)
            throw (error as? ImageError) ?? ImageError("\(error)")
        }
        let config = ImageConfig(entrypoint: cfg?.Entrypoint, cmd: cfg?.Cmd, env: cfg?.Env, workingDir: cfg?.WorkingDir, user: cfg?.User)
        let json = (try? JSONEncoder().encode(config)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        if rename(tmp, final) != 0 {
            removeTree(tmp)
            if errno != ENOTEMPTY && errno != EEXIST { throw ImageError("cannot store image: \(String(cString: strerror(errno)))") }
        }
        try writeFileImage(final + ".json", json)
        // The blobs this image needs, so a collection keeps them while the image is kept.
        try? writeFile(final + ".blobs", ([digest, configDesc.digest] + layers.map(\.digest)).joined(separator: "\n"))
        try? writeFile(tagFile, digest)
        return PulledImage(digest: digest, rootfs: final, config: config)
    }

    /// Records that an image was used now (its config file's modification time).
    static func markUsed(_ root: String, _ digest: String) {
        _ = utimensat(AT_FDCWD, root + "/rootfs/\(digest.dropFirst(7)).json", nil, 0)
    }

    /// Frees disk: removes every image no task runs on (no overlay is mounted on it) beyond the
    /// `keepUnused` most recently used ones, their tags, and every blob no kept image needs.
    /// Returns what was removed. Nothing is collected while a pull is under way.
    public func collect(keepUnused: Int = 3) -> (images: [String], blobs: Int) {
        guard inFlight.isEmpty else { return ([], 0) }
        let rootfs = root + "/rootfs"
        let mounts = readSmallFile("/proc/self/mounts", limit: 64 << 20) ?? ""
        let images = listDirectory(rootfs).filter { !$0.hasPrefix(".") && !$0.contains(".") }
        func lastUsed(_ hex: String) -> Int {
            var st = stat()
            return stat(rootfs + "/\(hex).json", &st) == 0 ? Int(st.st_mtim.tv_sec) : 0
        }
        let inUse = Set(images.filter { mounts.contains("lowerdir=\(rootfs)/\($0),") || mounts.contains("lowerdir=\(rootfs)/\($0) ") })
        let unused = images.filter { !inUse.contains($0) }.sorted { (lastUsed($0), $0) > (lastUsed($1), $1) }
        let kept = inUse.union(unused.prefix(max(0, keepUnused)))
        let removed = unused.dropFirst(max(0, keepUnused))
        for hex in removed {
            removeTree(rootfs + "/" + hex)
            unlink(rootfs + "/\(hex).json")
            unlink(rootfs + "/\(hex).blobs")
        }
        let gone = Set(removed.map { "sha256:" + $0 })
        for tag in listDirectory(root + "/tags") where gone.contains(readSmallFile(root + "/tags/" + tag) ?? "") {
            unlink(root + "/tags/" + tag)
        }
        // Blobs: only when every kept image says which it needs (images pulled before this was
        // recorded keep everything).
        var needed = Set<String>()
        for hex in kept {
            guard let list = readSmallFile(rootfs + "/\(hex).blobs") else { return (removed.map { "sha256:" + $0 }, 0) }
            for d in list.split(separator: "\n") { needed.insert(String(d.dropFirst(7))) }
        }
        var blobs = 0
        for blob in listDirectory(root + "/blobs/sha256") where !needed.contains(blob) {
            if unlink(root + "/blobs/sha256/" + blob) == 0 { blobs += 1 }
        }
        return (removed.map { "sha256:" + $0 }, blobs)
    }

    static func cachedImage(_ root: String, _ digest: String) -> PulledImage? {
        let hex = String(digest.dropFirst(7))
        guard let json = readSmallFile(root + "/rootfs/\(hex).json"),
              let config = try? JSONDecoder().decode(ImageConfig.self, from: Data(json.utf8)) else { return nil }
        return PulledImage(digest: digest, rootfs: root + "/rootfs/" + hex, config: config)
    }

    static func decode<T: Decodable>(_ t: T.Type, _ bytes: [UInt8], what: String) throws(ImageError) -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch { throw ImageError("the registry sent an invalid \(what)") }
    }

    static func readBytes(_ path: String) throws(ImageError) -> [UInt8] {
        guard let s = readSmallFile(path, limit: 8 << 20) else { throw ImageError("cannot read \(path)") }
        return Array(s.utf8)
    }

    static func writeFileImage(_ path: String, _ text: String) throws(ImageError) {
        do { try writeFile(path, text) } catch { throw ImageError(error.description) }
    }
}

/// The registry conversation for one image: manifests and blobs, with anonymous or
/// credentialed bearer tokens and basic auth as the registry asks (`WWW-Authenticate`).
struct RegistryClient {
    let ref: ImageReference
    let auth: RegistryAuth?
    /// TLS towards the registry (nil: plain HTTP); also used for redirects and token services.
    let tls: NIOSSLContext?
    var authorization: String?
    /// The largest blob downloaded (`ImageLimits.maxBlobBytes`).
    var maxBlobBytes = ImageLimits.standard.maxBlobBytes

    init(ref: ImageReference, auth: RegistryAuth?, tls: NIOSSLContext? = nil) {
        self.ref = ref
        self.auth = auth
        self.tls = tls
    }

    mutating func manifest(_ reference: String) async throws(ImageError) -> (bytes: [UInt8], digest: String) {
        let r = try await get("/v2/\(ref.repository)/manifests/\(reference)", accept: ImageStore.manifestTypes.joined(separator: ", "))
        guard r.status == 200 else { throw statusError(r, "manifest \(reference)") }
        let digest = "sha256:" + r.sha256
        if reference.hasPrefix("sha256:") && digest != reference {
            throw ImageError("manifest digest mismatch for \(ref): expected \(reference), got \(digest)")
        }
        return (r.body, digest)
    }

    /// Downloads a blob into the content-addressed cache (unless there) and returns its path.
    mutating func blob(_ d: ImageStore.Descriptor, root: String) async throws(ImageError) -> String {
        try ImageDigest.check(d.digest, "a blob of \(ref)")
        if let size = d.size, size < 0 || size > maxBlobBytes {
            throw ImageError("blob \(d.digest.prefix(19)) of \(ref) is \(size) bytes by its manifest; the limit is \(maxBlobBytes)")
        }
        let path = root + "/blobs/sha256/" + d.digest.dropFirst(7)
        if access(path, F_OK) == 0 { return path }
        let part = path + ".part-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(part) }
        var r = try await get("/v2/\(ref.repository)/blobs/\(d.digest)", accept: "*/*", toFile: part)
        var redirects = 0
        while (r.status == 307 || r.status == 302 || r.status == 301 || r.status == 303), let location = r.header("Location"), redirects < 5 {
            redirects += 1
            r = try await follow(location, toFile: part)
        }
        guard r.status == 200 else { throw statusError(r, "blob \(d.digest.prefix(19))") }
        guard "sha256:" + r.sha256 == d.digest else {
            throw ImageError("blob digest mismatch for \(ref): expected \(d.digest), got sha256:\(r.sha256); the download was discarded")
        }
        if let size = d.size, size != r.bytesWritten {
            throw ImageError("blob \(d.digest.prefix(19)) of \(ref) is \(r.bytesWritten) bytes, the manifest says \(size)")
        }
        guard rename(part, path) == 0 else { throw ImageError("cannot store blob: \(String(cString: strerror(errno)))") }
        return path
    }

    func statusError(_ r: RegistryHTTP.Result, _ what: String) -> ImageError {
        let body = String(decoding: r.body.prefix(300), as: UTF8.self)
        switch r.status {
        case 404: return ImageError("image \(ref) not found in registry \(ref.registry) (\(what))")
        case 401, 403: return ImageError("registry \(ref.registry) refused access to \(ref.repository) (HTTP \(r.status))")
        default: return ImageError("registry \(ref.registry) answered HTTP \(r.status) for \(what): \(body)")
        }
    }

    mutating func get(_ path: String, accept: String, toFile: String? = nil) async throws(ImageError) -> RegistryHTTP.Result {
        var headers = [("Accept", accept)]
        if let a = authorization { headers.append(("Authorization", a)) }
        var r = try await RegistryHTTP.get(host: ref.address, port: ref.port, path: path, headers: headers, toFile: toFile, tls: tls,
                                           maxFile: maxBlobBytes)
        if r.status == 401, authorization == nil || r.header("WWW-Authenticate")?.contains("error=") == true,
           let challenge = r.header("WWW-Authenticate") {
            authorization = try await authorize(challenge)
            headers = [("Accept", accept), ("Authorization", authorization!)]
            r = try await RegistryHTTP.get(host: ref.address, port: ref.port, path: path, headers: headers, toFile: toFile, tls: tls,
                                           maxFile: maxBlobBytes)
        }
        return r
    }

    func follow(_ location: String, toFile: String) async throws(ImageError) -> RegistryHTTP.Result {
        if location.hasPrefix("/") {
            return try await RegistryHTTP.get(host: ref.address, port: ref.port, path: location, headers: [], toFile: toFile, tls: tls,
                                                maxFile: maxBlobBytes)
        }
        let u = try allowed(location, what: "registry redirected to")
        // Blobs are verified against their digest wherever they come from.
        return try await RegistryHTTP.get(host: u.host, port: u.port, path: u.path, headers: [], toFile: toFile, tls: try context(for: u),
                                           maxFile: maxBlobBytes)
    }

    /// TLS for a URL the registry pointed to: the registry's own context (its CA file added to
    /// the system's roots), or the system's roots when the registry itself is plain HTTP.
    func context(for u: URLParts) throws(ImageError) -> NIOSSLContext? {
        guard u.tls else { return nil }
        if let tls { return tls }
        return try RegistryTLS.context(caFile: nil)
    }

    /// A URL the registry pointed to (a redirect, a token service): HTTPS to any host, plain
    /// HTTP only to loopback or to the registry's own host.
    func allowed(_ url: String, what: String) throws(ImageError) -> URLParts {
        guard let u = URLParts(url) else { throw ImageError("\(what) \(url), which is not an http:// or https:// URL") }
        guard u.tls || u.host == "localhost" || u.host.hasPrefix("127.") || u.host == ref.host else {
            throw ImageError("\(what) \(u.host) over plain HTTP, which is not on loopback; refusing")
        }
        return u
    }

    func basic() -> String? {
        guard let auth else { return nil }
        return "Basic " + Data("\(auth.username):\(auth.password)".utf8).base64EncodedString()
    }

    /// Answers a `WWW-Authenticate` challenge: Basic with the task's credentials, or a Bearer
    /// token from the realm (anonymous, or with the credentials).
    func authorize(_ challenge: String) async throws(ImageError) -> String {
        let lower = challenge.lowercased()
        if lower.hasPrefix("basic") {
            guard let b = basic() else { throw ImageError("registry \(ref.registry) needs credentials: set config.auth {username, password}") }
            return b
        }
        guard lower.hasPrefix("bearer") else { throw ImageError("registry \(ref.registry) asks for unsupported authentication: \(challenge)") }
        var params: [String: String] = [:]
        for part in challenge.dropFirst(6).split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { continue }
            params[kv[0].filter { $0 != " " }.lowercased()] = String(kv[1].filter { $0 != "\"" })
        }
        guard let realm = params["realm"] else { throw ImageError("registry \(ref.registry) gave no token realm") }
        let u = try allowed(realm, what: "registry \(ref.registry) sent for a token to")
        var query: [String] = []
        if let s = params["service"] { query.append("service=" + Self.escape(s)) }
        query.append("scope=" + Self.escape(params["scope"] ?? "repository:\(ref.repository):pull"))
        let path = u.path + (u.path.contains("?") ? "&" : "?") + query.joined(separator: "&")
        var headers: [(String, String)] = []
        if let b = basic() { headers.append(("Authorization", b)) }
        let r = try await RegistryHTTP.get(host: u.host, port: u.port, path: path, headers: headers,
                                           tls: try context(for: u))
        guard r.status == 200 else {
            throw ImageError("token service for \(ref.registry) refused (HTTP \(r.status))\(auth == nil ? "; set config.auth if the image is private" : "")")
        }
        struct Token: Decodable { var token: String?; var access_token: String? }
        guard let t = try? JSONDecoder().decode(Token.self, from: Data(r.body)), let token = t.token ?? t.access_token else {
            throw ImageError("token service for \(ref.registry) sent no token")
        }
        return "Bearer " + token
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Character(Unicode.Scalar(b))
            if c.isASCII && (c.isLetter || c.isNumber || "-._~:".contains(c)) { out.append(c) } else {
                out += "%" + (b < 16 ? "0" : "") + String(b, radix: 16, uppercase: true)
            }
        }
        return out
    }
}

/// `http[s]://host[:port]/path?query` split up.
struct URLParts {
    var tls: Bool
    var host: String
    var port: Int
    var path: String
    init?(_ s: String) {
        if s.hasPrefix("https://") { tls = true } else if s.hasPrefix("http://") { tls = false } else { return nil }
        let rest = s.dropFirst(tls ? 8 : 7)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let hostPort = rest[..<slash]
        path = slash == rest.endIndex ? "/" : String(rest[slash...])
        if let c = hostPort.lastIndex(of: ":"), !hostPort.hasSuffix("]"), let p = Int(hostPort[hostPort.index(after: c)...]) {
            host = String(hostPort[..<c]); port = p
        } else {
            host = String(hostPort); port = tls ? 443 : 80
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, (1...65535).contains(port) else { return nil }
    }
}
