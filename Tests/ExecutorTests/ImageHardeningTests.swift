@testable import Executor
import Foundation
import HTTPTypes
import Hummingbird
import Testing

/// Layers and registries are untrusted input: each example here trapped the agent, deleted
/// files outside the image or used a registry's text as a path before the unpacker was hardened.
@Suite("Executor: hostile images") struct ImageHardeningTests {
    /// One raw 512-byte tar header; `fields` overwrite byte ranges after the defaults are set,
    /// and the checksum is computed last.
    static func header(name: String, type: Character = "0", size: Int = 0, fields: [(Int, [UInt8])] = []) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], _ at: Int) { for (i, b) in bytes.enumerated() { h[at + i] = b } }
        func octal(_ v: Int, _ len: Int) -> [UInt8] {
            let s = String(v, radix: 8)
            return Array((String(repeating: "0", count: max(0, len - 1 - s.count)) + s).utf8)
        }
        put(Array(name.utf8.prefix(100)), 0)
        put(octal(0o644, 8), 100)
        put(octal(0, 8), 108); put(octal(0, 8), 116)
        put(octal(size, 12), 124)
        put(octal(0, 12), 136)
        h[156] = type.asciiValue!
        put(Array("ustar".utf8), 257); put(Array("00".utf8), 263)
        for (at, bytes) in fields { put(bytes, at) }
        for i in 148..<156 { h[i] = 0x20 }
        let sum = h.reduce(0) { $0 + Int($1) }
        put(octal(sum, 7), 148)
        return h
    }

    static func padded(_ body: [UInt8]) -> [UInt8] { body + [UInt8](repeating: 0, count: (512 - body.count % 512) % 512) }
    static let end = [UInt8](repeating: 0, count: 1024)
    /// A GNU base-256 field: high bit set, then the value big-endian.
    static func base256(_ v: UInt64, length: Int, negative: Bool = false) -> [UInt8] {
        var out = [UInt8](repeating: negative ? 0xFF : 0, count: length)
        var x = v
        for i in stride(from: length - 1, to: 0, by: -1) { out[i] = UInt8(x & 0xFF); x >>= 8 }
        out[0] = negative ? 0xFF : 0x80
        return out
    }

    func layer(_ bytes: [UInt8]) throws -> String {
        let p = tempDir("hostile-layer") + "/layer.tar"
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func refused(_ bytes: [UInt8], mentioning: String, limits: ImageLimits = .standard, root: String? = nil) throws {
        let u = LayerUnpacker(root: root ?? tempDir("hostile-root"), limits: limits)
        do {
            try u.apply(layer: try layer(bytes))
            Issue.record("the layer was applied; expected a refusal mentioning \(mentioning)")
        } catch let error as ImageError {
            #expect(error.description.contains(mentioning), "\(error.description)")
        }
    }

    @Test func aPAXRecordThatIsOnlyALengthIsRefused() throws {
        let pax = Array("2 ".utf8)
        try refused(Self.header(name: "pax", type: "x", size: pax.count) + Self.padded(pax) + Self.header(name: "a") + Self.end,
                    mentioning: "malformed PAX")
        // A length past the record, and a record with no '='.
        for text in ["99 path=a\n", "8 path\n\n", "-5 a=b\n"] {
            let b = Array(text.utf8)
            try refused(Self.header(name: "pax", type: "x", size: b.count) + Self.padded(b) + Self.header(name: "a") + Self.end,
                        mentioning: "malformed PAX")
        }
        // PAX numbers out of range.
        for text in ["19 size=-1\n", "29 size=99999999999999999999\n", "19 uid=4294967296\n"] {
            let b = Array(text.utf8)
            let fixed = Array((String(b.count) + text.drop { $0 != " " }).utf8)
            try refused(Self.header(name: "pax", type: "x", size: fixed.count) + Self.padded(fixed) + Self.header(name: "a") + Self.end,
                        mentioning: "invalid PAX")
        }
    }

    @Test func hugeNegativeAndOverflowingNumbersAreRefused() throws {
        // base-256 size of Int.max, a negative size on an 'L' entry, a uid of 2^32.
        try refused(Self.header(name: "big", fields: [(124, Self.base256(UInt64(Int.max), length: 12))]) + Self.end, mentioning: "size")
        try refused(Self.header(name: "big", fields: [(124, Self.base256(UInt64.max, length: 12))]) + Self.end, mentioning: "size")
        try refused(Self.header(name: "././@LongLink", type: "L", fields: [(124, Self.base256(5, length: 12, negative: true))]) + Self.end,
                    mentioning: "size")
        try refused(Self.header(name: "u", fields: [(108, Self.base256(1 << 32, length: 8))]) + Self.end, mentioning: "uid")
        try refused(Self.header(name: "m", fields: [(124, Array("9999999999x".utf8))]) + Self.end, mentioning: "size")
    }

    @Test func aWhiteoutCanOnlyHideWhatIsInsideItsDirectory() throws {
        // The image root sits beside another image; `.wh...` at the top would remove their parent.
        let store = tempDir("whiteout-store")
        let root = store + "/mine"
        mkdirAll(root)
        mkdirAll(store + "/sibling")
        try Data("keep".utf8).write(to: URL(fileURLWithPath: store + "/sibling/file"))
        for name in [".wh...", ".wh..", "etc/.wh..."] {
            try refused(Self.header(name: name) + Self.end, mentioning: "not a valid whiteout", root: root)
        }
        #expect(readSmallFile(store + "/sibling/file") == "keep")
        #expect(access(root, F_OK) == 0)
        // aufs metadata whiteouts are ignored, not applied.
        try LayerUnpacker(root: root).apply(layer: try layer(Self.header(name: ".wh..wh.plnk") + Self.end))
        #expect(access(store + "/sibling/file", F_OK) == 0)
    }

    /// `..` followed by a NUL is `..` to every system call: it must be refused, not compared as
    /// a longer name (it let an image chmod and chown the directory of all images).
    @Test func aNULInANameIsRefused() throws {
        let store = tempDir("nul-store")
        let root = store + "/mine"
        mkdirAll(root)
        var before = stat()
        stat(store, &before)
        for (key, value) in [("path", "..\u{0}"), ("path", "etc/\u{0}x"), ("linkpath", "a\u{0}")] {
            let record = " \(key)=\(value)\n"
            var n = record.utf8.count + 2
            if String(n).count + record.utf8.count != n { n += 1 }
            let pax = Array((String(n) + record).utf8)
            try refused(Self.header(name: "pax", type: "x", size: pax.count) + Self.padded(pax)
                        + Self.header(name: "d", type: key == "linkpath" ? "2" : "5", fields: [(100, Array("0000777".utf8))]) + Self.end,
                        mentioning: "NUL", root: root)
        }
        var after = stat()
        stat(store, &after)
        #expect(after.st_mode == before.st_mode && after.st_uid == before.st_uid)
    }

    /// Links full of `a/../` make every lookup long; a layer's lookups are bounded.
    @Test func longLinkChainsAreBounded() throws {
        let root = tempDir("link-chain")
        let detour = String(repeating: "a/../", count: 800)
        var entries = Self.header(name: "a", type: "5")
        for i in 0..<39 { entries += Self.header(name: "l\(i)", type: "2", fields: [(157, Array(("l\(i + 1)/" + detour).utf8.prefix(99)))]) }
        // Names past PATH_MAX are refused outright.
        let long = Array(String(repeating: "a/", count: 3000).utf8)
        let record = " path=" + String(decoding: long, as: UTF8.self) + "\n"
        var n = record.utf8.count + 4
        if String(n).count + record.utf8.count != n { n = String(n).count + record.utf8.count }
        let pax = Array((String(n) + record).utf8)
        try refused(Self.header(name: "pax", type: "x", size: pax.count) + Self.padded(pax) + Self.header(name: "f") + Self.end,
                    mentioning: "longer than 4096", root: root)
        let start = ContinuousClock.now
        try? LayerUnpacker(root: tempDir("link-chain-2")).apply(layer: try layer(entries + Self.end))
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test func tooManyEntriesAndGzipBombsAreRefused() throws {
        var many: [UInt8] = []
        for i in 0..<5 { many += Self.header(name: "f\(i)") }
        var limits = ImageLimits()
        limits.maxEntries = 3
        try refused(many + Self.end, mentioning: "more than 3 entries", limits: limits)

        // 64 MiB of zeros in one file, gzipped to ~64 KiB.
        let size = 64 << 20
        let tar = tempDir("bomb") + "/bomb.tar"
        var bytes = Self.header(name: "zeros", size: size)
        bytes += [UInt8](repeating: 0, count: size) + Self.end
        try Data(bytes).write(to: URL(fileURLWithPath: tar))
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-f", tar]
        try gzip.run()
        gzip.waitUntilExit()
        let gz = try Data(contentsOf: URL(fileURLWithPath: tar + ".gz"))
        #expect(gz.count < 1 << 20)
        var bomb = ImageLimits()
        bomb.expansionAllowance = 8 << 20
        bomb.expansionRatio = 10
        let root = tempDir("bomb-root")
        do {
            try LayerUnpacker(root: root, limits: bomb).apply(layer: tar + ".gz")
            Issue.record("the gzip bomb was unpacked")
        } catch {
            #expect(error.description.contains("expands to more than"), "\(error.description)")
        }
        // The standard limits let an honest layer of the same shape through.
        try LayerUnpacker(root: tempDir("bomb-ok")).apply(layer: tar + ".gz")
    }

    @Test func digestsAreCheckedBeforeTheyNameFiles() {
        #expect(ImageDigest.isValid("sha256:" + String(repeating: "ab", count: 32)))
        let traversal = "sha256:" + "../../../../../../../../../../../etc/passwd" + String(repeating: "a", count: 21)
        #expect(traversal.count == 71)
        #expect(!ImageDigest.isValid(traversal))
        #expect(!ImageDigest.isValid("sha256:" + String(repeating: "A", count: 64)))
        #expect(!ImageDigest.isValid("sha512:" + String(repeating: "a", count: 64)))
        #expect(!ImageDigest.isValid("sha256:" + String(repeating: "é", count: 32)))
    }

    @Test func aStoreRemovesWhatAnInterruptedPullLeft() throws {
        let root = tempDir("interrupted") + "/images"
        _ = ImageStore(root: root)
        let gone = Int32.max
        mkdirAll(root + "/rootfs/.tmp-abc-\(gone)-7/usr")
        mkdirAll(root + "/rootfs/.tmp-def-\(getpid())-8")
        try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/blobs/sha256/abc.part-\(gone)-9"))
        _ = ImageStore(root: root)
        #expect(access(root + "/rootfs/.tmp-abc-\(gone)-7", F_OK) != 0)
        #expect(access(root + "/blobs/sha256/abc.part-\(gone)-9", F_OK) != 0)
        // A pull of a live process (here: this one) is left alone.
        #expect(access(root + "/rootfs/.tmp-def-\(getpid())-8", F_OK) == 0)
    }

    /// A registry that answers with hostile manifests and blobs, through the real pull path.
    @Test func aHostileRegistryFailsThePullAndWritesNothingOutsideTheStore() async throws {
        let port = Int.random(in: 41000...49000)
        let evilDigest = "sha256:" + "../../../../../../../../../../../tmp/caravan-evil" + String(repeating: "a", count: 15)
        let config = Array(#"{"config":{}}"#.utf8)
        let configDigest = "sha256:" + SHA256.hex(config)
        func manifest(_ layers: String) -> String {
            #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"\#(configDigest)","size":\#(config.count)},"layers":[\#(layers)]}"#
        }
        let answers: [String: String] = [
            "/v2/traversal/manifests/latest": manifest(#"{"digest":"\#(evilDigest)","size":10}"#),
            "/v2/huge/manifests/latest": manifest(#"{"digest":"sha256:\#(String(repeating: "b", count: 64))","size":1099511627776}"#),
            "/v2/liar/manifests/latest": manifest(#"{"digest":"sha256:\#(String(repeating: "c", count: 64))"}"#),
        ]
        let router = Router()
        router.get("/v2/**") { request, _ -> Response in
            let path = request.uri.path
            if let m = answers[path] {
                return Response(status: .ok, headers: [.contentType: "application/vnd.oci.image.manifest.v1+json"],
                                body: .init(byteBuffer: ByteBuffer(string: m)))
            }
            if path.hasSuffix(configDigest) { return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: config))) }
            if path.contains("/liar/blobs/") {
                return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: [UInt8](repeating: 1, count: 3 << 20))))
            }
            return Response(status: .notFound)
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
        let server = Task { try await app.runService(gracefulShutdownSignals: []) }
        defer { server.cancel() }
        for _ in 0..<200 {
            if (try? await RegistryHTTP.get(host: "127.0.0.1", port: port, path: "/v2/none/manifests/x", headers: [], timeout: .seconds(1))) != nil { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        var limits = ImageLimits()
        limits.maxBlobBytes = 1 << 20
        let storeRoot = tempDir("hostile-registry") + "/images"
        let store = ImageStore(root: storeRoot, limits: limits)
        for (repo, expected) in [("traversal", "not sha256: and 64 lowercase hex digits"), ("huge", "the limit is"), ("liar", "larger than")] {
            do {
                _ = try await store.pull("127.0.0.1:\(port)/\(repo):latest", auth: nil)
                Issue.record("\(repo): the pull succeeded")
            } catch {
                #expect(error.description.contains(expected), "\(repo): \(error.description)")
            }
        }
        #expect(access("/tmp/caravan-evil" + String(repeating: "a", count: 15), F_OK) != 0)
        #expect(listDirectory(storeRoot + "/blobs/sha256").allSatisfy { !$0.contains(".part-") })
    }
}

/// A client that reads an exec session's output slowly holds the command back; the agent does
/// not buffer what the client has not taken.
@Suite("Executor: exec output back-pressure") struct ExecBackPressureTests {
    @Test func aSlowReaderBlocksTheCommandInsteadOfFillingMemory() async throws {
        let dir = tempDir("exec-backpressure")
        let marker = dir + "/done"
        // 256 MiB to stdout, then a marker: without back-pressure this ends in well under a second.
        let script = "dd if=/dev/zero bs=65536 count=4096 status=none; touch \(marker)"
        let session = try await ExecSession.start(InteractiveCommand(path: "/bin/sh", arguments: ["sh", "-c", script], environment: [],
                                                                     directory: dir), tty: false)
        var output = session.output().makeAsyncIterator()
        _ = await output.next()
        try await Task.sleep(for: .seconds(1))
        #expect(access(marker, F_OK) != 0, "the command wrote everything although nobody read it")
        // Reading on lets it finish; everything arrives.
        var total = 0
        while let (_, bytes) = await output.next() { total += bytes.count }
        #expect(await session.wait().code == 0)
        session.finish()
        #expect(total + 65536 >= 256 << 20)
        #expect(access(marker, F_OK) == 0)
    }

    /// A consumer that goes away with chunks unread (a client disconnecting mid-output) must not
    /// bring the agent down: the readers stop, the session ends.
    @Test func aConsumerThatLeavesMidOutputIsHarmless() async throws {
        for _ in 0..<3 {
            let session = try await ExecSession.start(InteractiveCommand(path: "/bin/sh", arguments: ["sh", "-c", "head -c 50000000 /dev/zero"],
                                                                         environment: [], directory: "/"), tty: false)
            do {
                var output = session.output().makeAsyncIterator()
                for _ in 0..<5 { _ = await output.next() }
            }
            session.terminate()
            _ = await session.wait()
            session.finish()
        }
        // Still alive: the semaphores of the abandoned streams were freed without a trap.
        try await Task.sleep(for: .milliseconds(500))
    }
}
