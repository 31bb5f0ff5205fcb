// The image types that take untrusted text (references, digests, limits, errors), kept free of
// networking imports so the fuzz targets (Fuzz/) compile them with the layer unpacker.

import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Why an image could not be pulled or unpacked; the message is the task event users see.
public struct ImageError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The registry could not be reached: trying again later may work.
    public var transient: Bool
    public init(_ description: String, transient: Bool = false) {
        self.description = description
        self.transient = transient
    }
}

/// How much an image may take: a registry or an image is untrusted input, so every size is
/// bounded and a pull that exceeds one fails with the limit named (the agent carries on).
public struct ImageLimits: Sendable, Equatable {
    /// The largest blob (layer, config) downloaded.
    public var maxBlobBytes: Int = 8 << 30
    /// The most entries one layer may hold.
    public var maxEntries: Int = 1_000_000
    /// A layer may expand (gunzip) to `expansionRatio` times its compressed size, and always to
    /// `expansionAllowance` bytes, but never beyond `maxLayerBytes`.
    public var expansionRatio: Int = 100
    public var expansionAllowance: Int = 1 << 30
    public var maxLayerBytes: Int = 32 << 30
    /// The most layers one image may have (the blob limit also bounds their sum).
    public var maxLayers: Int = 128

    public static let standard = ImageLimits()
    public init() {}

    func maxExpandedBytes(compressed: Int) -> Int {
        let (ratio, overflow) = max(0, compressed).multipliedReportingOverflow(by: expansionRatio)
        return min(maxLayerBytes, max(expansionAllowance, overflow ? Int.max : ratio))
    }
}

/// Content digests as image manifests carry them: only `sha256:` and 64 lowercase hex digits
/// are accepted, since the hex part names files in the store.
enum ImageDigest {
    static func isValid(_ d: String) -> Bool {
        let u = Array(d.utf8)
        return u.count == 71 && d.hasPrefix("sha256:") && u[7...].allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    static func check(_ d: String, _ what: String) throws(ImageError) {
        guard isValid(d) else {
            throw ImageError("\(what) has digest \(d.prefix(80)), which is not sha256: and 64 lowercase hex digits; refusing the image")
        }
    }
}

/// `registry[:port]/repository[:tag][@sha256:digest]`.
public struct ImageReference: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var repository: String
    public var tag: String
    public var digest: String?

    public init(_ text: String) throws(ImageError) {
        var rest = Substring(text)
        if let at = rest.firstIndex(of: "@") {
            let d = String(rest[rest.index(after: at)...])
            guard ImageDigest.isValid(d) else {
                throw ImageError("image \(text): the digest must be sha256: and 64 lowercase hex digits")
            }
            digest = d
            rest = rest[..<at]
        }
        guard let slash = rest.firstIndex(of: "/"),
              rest[..<slash].contains(where: { $0 == "." || $0 == ":" }) || rest[..<slash] == "localhost" else {
            throw ImageError("image \(text) names no registry: write it as REGISTRY/REPOSITORY:TAG, e.g. 127.0.0.1:5000/busybox:1.36")
        }
        let hostPort = rest[..<slash]
        var path = rest[rest.index(after: slash)...]
        if let colon = path.lastIndex(of: ":") {
            tag = String(path[path.index(after: colon)...])
            path = path[..<colon]
            guard !tag.isEmpty, tag.count <= 128, tag.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else {
                throw ImageError("image \(text): invalid tag \(tag)")
            }
        } else {
            tag = "latest"
        }
        guard !path.isEmpty, path.allSatisfy({ ($0.isLowercase || $0.isNumber || "._/-".contains($0)) && $0.isASCII }) else {
            throw ImageError("image \(text): invalid repository name \(path) (lowercase letters, digits, . _ - /)")
        }
        repository = String(path)
        // HOST[:PORT] or [IPV6][:PORT]; a name is ASCII letters, digits, '.' and '-'.
        var portText: Substring?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]"), hostPort.index(after: hostPort.startIndex) < close,
                  hostPort[hostPort.index(after: hostPort.startIndex)..<close].allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw ImageError("image \(text): invalid registry address \(hostPort)")
            }
            host = String(hostPort[...close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw ImageError("image \(text): invalid registry address \(hostPort)") }
                portText = after.dropFirst()
            }
        } else {
            let colon = hostPort.lastIndex(of: ":")
            host = String(colon.map { hostPort[..<$0] } ?? hostPort)
            portText = colon.map { hostPort[hostPort.index(after: $0)...] }
            guard !host.isEmpty, host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") }) else {
                throw ImageError("image \(text): invalid registry host \(host)")
            }
        }
        if let portText {
            guard portText.allSatisfy({ $0.isASCII && $0.isNumber }), let p = Int(portText), (1...65535).contains(p) else {
                throw ImageError("image \(text): invalid registry port")
            }
            port = p
        } else {
            port = 443
        }
    }

    public var description: String { "\(host):\(port)/\(repository)" + (digest.map { "@" + $0 } ?? ":" + tag) }
    var registry: String { "\(host):\(port)" }
    /// The host to connect to (an IPv6 address without its brackets).
    var address: String { host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host }
}


/// An image manifest or index as registries send it (OCI and Docker schema 2).
struct ImageDescriptor: Codable {
    var mediaType: String?
    var digest: String
    var size: Int?
    var platform: ImagePlatform?
}
struct ImagePlatform: Codable {
    var architecture: String
    var os: String
}
struct ImageManifest: Codable {
    var schemaVersion: Int?
    var mediaType: String?
    var config: ImageDescriptor?
    var layers: [ImageDescriptor]?
    var manifests: [ImageDescriptor]?
}
struct ImageConfigBlob: Codable {
    struct Inner: Codable {
        var Entrypoint: [String]?
        var Cmd: [String]?
        var Env: [String]?
        var WorkingDir: String?
        var User: String?
    }
    var config: Inner?
}

/// What the fuzz targets (Fuzz/run.sh layer|manifest) and their corpus replay in the tests run.
public enum ImageFuzzing {
    /// Limits small enough that each input is quick; the checks are the same at any size.
    static let limits: ImageLimits = {
        var l = ImageLimits()
        l.maxEntries = 2000
        l.expansionAllowance = 8 << 20
        l.maxLayerBytes = 8 << 20
        return l
    }()

    /// Applies the bytes as a layer (plain or gzipped tar) under `scratch`, then removes it:
    /// any input fails cleanly or unpacks, and nothing lands outside `scratch/root`.
    public static func layer(_ bytes: [UInt8], scratch: String) {
        let file = scratch + "/layer", root = scratch + "/root"
        removeTree(root)
        _ = mkdirAll(root)
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            off += n
        }
        close(fd)
        try? LayerUnpacker(root: root, limits: limits).apply(layer: file)
        removeTree(root)
    }

    /// Reads the bytes as a manifest or index and as an image reference.
    public static func manifest(_ bytes: [UInt8]) {
        if let m = try? JSONDecoder().decode(ImageManifest.self, from: Data(bytes)) {
            for d in (m.layers ?? []) + (m.manifests ?? []) + (m.config.map { [$0] } ?? []) { _ = ImageDigest.isValid(d.digest) }
        }
        if let ref = try? ImageReference(String(decoding: bytes, as: UTF8.self)) {
            // What a reference prints reads back as the same image (with a digest, the tag plays
            // no part and is not printed).
            let again = try? ImageReference(ref.description)
            precondition(again?.description == ref.description && again?.registry == ref.registry, "reference round trip: \(ref)")
        }
    }
}
