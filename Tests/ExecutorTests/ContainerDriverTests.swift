import CaravanModel
@testable import Executor
import Foundation
import Synchronization
import Testing

let registryFixtureDir = NSTemporaryDirectory() + "caravan-registry-\(getpid())"

/// A real docker-registry on loopback holding busybox:1.36 (built by Deploy/registry.sh),
/// stopped when the test process exits.
final class RegistryFixture: @unchecked Sendable {
    static let shared = RegistryFixture()
    let address = "127.0.0.1:\(5190 + Int(getpid() % 50))"
    let dir = registryFixtureDir
    let ready: Bool
    let problem: String

    init() {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Deploy/registry.sh").standardized.path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [script, "up", address, dir]
        // Errors to a file, not a pipe: a task spawned meanwhile could inherit a pipe and hold it open.
        let errPath = NSTemporaryDirectory() + "caravan-registry-fixture-\(getpid()).err"
        FileManager.default.createFile(atPath: errPath, contents: nil)
        let err = FileHandle(forWritingAtPath: errPath)
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        do { try p.run(); p.waitUntilExit() } catch {}
        try? err?.close()
        ready = p.terminationStatus == 0
        problem = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: errPath)
        atexit {
            for file in ["registry.pid", "registry-tls.pid", "registry-mtls.pid"] {
                if let pid = (try? String(contentsOfFile: registryFixtureDir + "/" + file, encoding: .utf8)).flatMap({ Int32($0.filter(\.isNumber)) }) {
                    kill(pid, SIGTERM)
                }
            }
            try? FileManager.default.removeItem(atPath: registryFixtureDir)
        }
    }

    /// The same images over HTTPS (Deploy/registry.sh tls), started on first use; nil if it
    /// cannot start (`tlsProblem` says why). With `clientAuth`, a second one that also asks for
    /// a client certificate.
    private let tls = Mutex<[Bool: (address: String?, problem: String)]>([:])
    func tlsProblem(clientAuth: Bool = false) -> String { tls.withLock { $0[clientAuth]?.problem ?? "" } }

    func tlsAddress(clientAuth: Bool = false) -> String? {
        tls.withLock { state in
            if let known = state[clientAuth] { return known.address }
            let address = "127.0.0.1:\((clientAuth ? 5400 : 5350) + Int(getpid() % 40))"
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Deploy/registry.sh").standardized.path
            let errPath = dir + "/tls-fixture-\(clientAuth).err"
            FileManager.default.createFile(atPath: errPath, contents: nil)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/bash")
            p.arguments = [script, "tls", address, dir] + (clientAuth ? ["client-auth"] : [])
            let err = FileHandle(forWritingAtPath: errPath)
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            do { try p.run(); p.waitUntilExit() } catch {}
            try? err?.close()
            let ok = p.terminationStatus == 0
            state[clientAuth] = (ok ? address : nil, (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
            return state[clientAuth]!.address
        }
    }

    /// The storage file of a blob, to corrupt it.
    func blobData(_ digest: String) -> String {
        let hex = digest.dropFirst(7)
        return "\(dir)/storage/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data"
    }
}

@Suite("Executor: container (OCI images through runc)", .enabled(if: canRunContainers), .serialized)
struct ContainerDriverTests {
    func executor(_ root: String, _ log: ReportLog) -> (Executor, ImageStore) {
        let images = ImageStore(root: root + "/images")
        let ex = Executor(root: root + "/alloc", nodeName: "n1",
                          drivers: [ContainerDriver(images: images, stateRoot: root + "/runc")], report: log.sink)
        return (ex, images)
    }

    func container(_ name: String, image: String, command: String? = nil, args: [String] = [], memory: Int = 64) -> TaskSpec {
        var t = TaskSpec(name: name, driver: .container, config: DriverConfig(image: image, command: command, args: args))
        t.resources = Resources(cpuMillicores: 100, memoryMiB: memory)
        t.killTimeout = .seconds(2)
        return t
    }

    static let once = RestartPolicy(attempts: 0, interval: .seconds(60), delay: .milliseconds(10), mode: .fail)

    @Test("an image is pulled from the registry, verified, unpacked and run with its config merged with the task's")
    func pullsAndRuns() async throws {
        let reg = RegistryFixture.shared
        try #require(reg.ready, "registry fixture: \(reg.problem)")
        let root = tempDir("container")
        let log = ReportLog()
        let (ex, images) = executor(root, log)
        var t = container("web", image: "\(reg.address)/busybox:1.36", command: "sh",
                          args: ["-c", "cat /www/index.html; echo path=$PATH greeting=$GREETING dir=$CARAVAN_TASK_DIR; id -u; touch /bin/x && echo writable"])
        t.env = ["GREETING": "hi"]
        await ex.sync([assignment("c1", type: .batch, tasks: [t], restart: Self.once)])
        try await log.wait("complete", { $0?.clientStatus == .complete || $0?.clientStatus == .failed }, id: "c1")
        let files = try #require(await ex.logFiles(allocation: "c1", task: "web", stderr: false))
        let out = String(decoding: LogRotation.read(files, offset: 0, length: 4096).bytes, as: UTF8.self)
        #expect(out == "hello from a caravan container\npath=/bin greeting=hi dir=/local\n0\nwritable\n", "\(String(describing: log.report("c1")))")
        let ev = try #require(log.report("c1")?.taskStates["web"]?.events)
        #expect(ev.contains { $0.type == "Image Pulled" })
        // The task's writes went to its own layer, not the shared image.
        let image = try await images.pull("\(reg.address)/busybox:1.36", auth: nil)
        #expect(access(image.rootfs + "/bin/x", F_OK) != 0)
        // The image's own command runs when the task gives none.
        await ex.sync([assignment("c2", type: .batch, tasks: [container("plain", image: "\(reg.address)/busybox:1.36@\(image.digest)", args: ["echo", "by", "args"])],
                                  restart: Self.once)])
        try await log.wait("complete", { $0?.clientStatus == .complete }, id: "c2")
        let f2 = try #require(await ex.logFiles(allocation: "c2", task: "plain", stderr: false))
        #expect(String(decoding: LogRotation.read(f2, offset: 0, length: 100).bytes, as: UTF8.self) == "by args\n")
    }

    @Test("unused images are collected beyond the most recently used, an image a task runs on never, shared blobs stay")
    func collectsUnusedImages() async throws {
        let reg = RegistryFixture.shared
        try #require(reg.ready, "registry fixture: \(reg.problem)")
        let root = tempDir("collect")
        let log = ReportLog()
        let (ex, images) = executor(root, log)
        // A task runs on the OCI image; the Docker v2s2 one (same layers, its own manifest and rootfs) is unused.
        await ex.sync([assignment("g1", tasks: [container("web", image: "\(reg.address)/busybox:1.36", command: "sleep", args: ["60"])])])
        try await log.wait("running", { $0?.clientStatus == .running }, id: "g1")
        let used = try await images.pull("\(reg.address)/busybox:1.36", auth: nil)
        let spare = try await images.pull("\(reg.address)/busybox:1.36-v2s2", auth: nil)
        let blobs = Set(listDirectory(root + "/images/blobs/sha256"))
        #expect(await images.collect(keepUnused: 1).images.isEmpty, "one unused image may stay")
        let first = await images.collect(keepUnused: 0)
        #expect(first.images == [spare.digest], "only the unused image goes")
        #expect(access(spare.rootfs, F_OK) != 0 && access(used.rootfs + "/bin/busybox", X_OK) == 0)
        // The two share their layers (and config): every blob the kept image needs stays.
        let needed = Set((readSmallFile(used.rootfs + ".blobs") ?? "").split(separator: "\n").map { String($0.dropFirst(7)) })
        #expect(!needed.isEmpty && blobs.intersection(needed) == Set(listDirectory(root + "/images/blobs/sha256")).intersection(needed))
        #expect(first.blobs == blobs.subtracting(needed).count)
        // Once the task is gone, so is its image; pulling it again works.
        await ex.sync([])
        for _ in 0..<500 {
            _ = await images.collect(keepUnused: 0)  // collects once the task's overlay is unmounted
            if access(used.rootfs, F_OK) != 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(access(used.rootfs, F_OK) != 0 && listDirectory(root + "/images/blobs/sha256").isEmpty)
        let again = try await images.pull("\(reg.address)/busybox:1.36", auth: nil)
        #expect(again.digest == used.digest && access(again.rootfs + "/bin/busybox", X_OK) == 0)
    }

    @Test("Docker v2 schema 2 manifests and OCI image indexes resolve to the same runnable image")
    func manifestKinds() async throws {
        let reg = RegistryFixture.shared
        try #require(reg.ready, "registry fixture: \(reg.problem)")
        let images = ImageStore(root: tempDir("manifests") + "/images")
        let oci = try await images.pull("\(reg.address)/busybox:1.36", auth: nil)
        let multi = try await images.pull("\(reg.address)/busybox:1.36-multi", auth: nil)
        #expect(multi.digest == oci.digest, "the index resolves to this platform's manifest")
        let v2 = try await images.pull("\(reg.address)/busybox:1.36-v2s2", auth: nil)
        #expect(v2.digest != oci.digest)
        #expect(access(v2.rootfs + "/bin/busybox", X_OK) == 0)
        #expect(v2.config.cmd == ["sh"])
        // Pulled by digest, the manifest is verified against it.
        let byDigest = try await images.pull("\(reg.address)/busybox@\(oci.digest)", auth: nil)
        #expect(byDigest.rootfs == oci.rootfs)
    }

    @Test("a container over its 32 MiB limit is OOM-killed and reported so")
    func oom() async throws {
        let reg = RegistryFixture.shared
        try #require(reg.ready, "registry fixture: \(reg.problem)")
        let log = ReportLog()
        let (ex, _) = executor(tempDir("container-oom"), log)
        await ex.sync([assignment("c3", type: .batch, tasks: [container("hog", image: "\(reg.address)/busybox:1.36", command: "dd",
                                                                         args: ["if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"], memory: 32)],
                                  restart: Self.once)])
        try await log.wait("failed", { $0?.clientStatus == .failed }, id: "c3")
        let st = try #require(log.report("c3")?.taskStates["hog"])
        #expect(st.exitCode == 137 && st.events.contains { $0.type == "OOM Killed" }, "\(st.events)")
    }

    @Test("unknown image, unreachable registry and a corrupted blob each fail their task with a clear event")
    func badImages() async throws {
        let reg = RegistryFixture.shared
        try #require(reg.ready, "registry fixture: \(reg.problem)")
        let root = tempDir("container-bad")
        let log = ReportLog()
        let (ex, _) = executor(root, log)
        await ex.sync([
            assignment("b1", type: .batch, tasks: [container("t", image: "\(reg.address)/nosuch:1.0", command: "true")], restart: Self.once),
            assignment("b2", type: .batch, tasks: [container("t", image: "127.0.0.1:1/busybox:1.36", command: "true")], restart: Self.once),
            assignment("b3", type: .batch, tasks: [container("t", image: "busybox:1.36", command: "true")], restart: Self.once),
        ])
        func event(_ id: String) -> String { log.report(id)?.taskStates["t"]?.events.first { $0.type == "Image Pull Failed" }?.message ?? "" }
        for id in ["b1", "b2", "b3"] { try await log.wait("failed", { $0?.clientStatus == .failed }, id: id) }
        #expect(event("b1").contains("not found in registry"), "\(event("b1"))")
        #expect(event("b2").contains("cannot reach registry 127.0.0.1:1"), "\(event("b2"))")
        #expect(event("b3").contains("names no registry"), "\(event("b3"))")

        // A blob whose bytes do not match its digest is refused and not kept.
        let images = ImageStore(root: root + "/images2")
        var client = RegistryClient(ref: try ImageReference("\(reg.address)/busybox:1.36"), auth: nil)
        let (bytes, _) = try await client.manifest("1.36")
        let manifest = try JSONDecoder().decode(ImageStore.Manifest.self, from: Data(bytes))
        let layer = try #require(manifest.layers?.first)
        let data = reg.blobData(layer.digest)
        let original = try Data(contentsOf: URL(fileURLWithPath: data))
        var corrupted = original
        corrupted[corrupted.count / 2] ^= 0xff
        try corrupted.write(to: URL(fileURLWithPath: data))
        defer { try? original.write(to: URL(fileURLWithPath: data)) }
        await #expect(throws: ImageError.self) { _ = try await images.pull("\(reg.address)/busybox:1.36", auth: nil) }
        do { _ = try await images.pull("\(reg.address)/busybox:1.36", auth: nil) } catch {
            #expect(error.description.contains("digest mismatch"), "\(error)")
        }
        #expect(access(root + "/images2/blobs/sha256/" + layer.digest.dropFirst(7), F_OK) != 0)
    }

    @Test("an image is pulled over HTTPS from a registry whose CA is named; an untrusted certificate is a clear error")
    func pullsOverHTTPS() async throws {
        let reg = RegistryFixture.shared
        try #require(reg.ready, "registry fixture: \(reg.problem)")
        let tls = try #require(reg.tlsAddress(), "TLS registry: \(reg.tlsProblem())")
        let root = tempDir("container-tls")
        let image = "\(tls)/busybox:1.36"
        let trusted = ImageStore(root: root + "/a", registryCAs: [tls: reg.dir + "/tls/ca.pem"])
        let overTLS = try await trusted.pull(image, auth: nil)
        let overHTTP = try await ImageStore(root: root + "/b").pull("\(reg.address)/busybox:1.36", auth: nil)
        #expect(overTLS.digest == overHTTP.digest, "the same image over both")
        #expect(access(overTLS.rootfs + "/bin/busybox", X_OK) == 0)

        // Signed by a CA this agent was not told to trust: refused during the handshake.
        let untrusted = ImageStore(root: root + "/c", registryCAs: [tls: reg.dir + "/tls/other-ca.pem"])
        do { _ = try await untrusted.pull(image, auth: nil); Issue.record("an untrusted certificate was accepted") } catch {
            #expect(error.description.contains("TLS handshake with the registry failed"), "\(error)")
        }
        #expect(FileManager.default.enumerator(atPath: root + "/c/blobs/sha256")?.nextObject() == nil, "nothing was stored")
        // A CA file that cannot be read is named.
        do { _ = try await ImageStore(root: root + "/d", registryCAs: [tls: "/nonexistent/ca.pem"]).pull(image, auth: nil) } catch {
            #expect(error.description == "registry CA file /nonexistent/ca.pem cannot be read", "\(error)")
        }
        // A registry that asks for a client certificate: refused without one, served with it.
        let mtls = try #require(reg.tlsAddress(clientAuth: true), "mutual-TLS registry: \(reg.tlsProblem(clientAuth: true))")
        let ca = reg.dir + "/tls/ca.pem"
        do { _ = try await ImageStore(root: root + "/e", registryCAs: [mtls: ca]).pull("\(mtls)/busybox:1.36", auth: nil)
             Issue.record("a registry asking for a client certificate served a client without one") } catch {
            #expect(error.description.contains("asks for a client certificate"), "\(error)")
        }
        let certificate = RegistryClientCertificate(certificate: reg.dir + "/tls/client.pem", key: reg.dir + "/tls/client.key")
        let withCertificate = ImageStore(root: root + "/f", registryCAs: [mtls: ca], registryClientCertificates: [mtls: certificate])
        #expect(try await withCertificate.pull("\(mtls)/busybox:1.36", auth: nil).digest == overHTTP.digest)
        do {
            _ = try await ImageStore(root: root + "/g", registryCAs: [mtls: ca],
                                     registryClientCertificates: [mtls: .init(certificate: "/nonexistent.pem", key: "/nonexistent.key")])
                .pull("\(mtls)/busybox:1.36", auth: nil)
        } catch {
            #expect(error.description.hasPrefix("registry client certificate /nonexistent.pem with key /nonexistent.key cannot be used"), "\(error)")
        }
        // Redirects and token services may point to any host over HTTPS, over plain HTTP only to loopback.
        let client = RegistryClient(ref: try ImageReference("10.1.2.3:5000/x:1"), auth: nil)
        #expect(throws: ImageError.self) { try client.allowed("http://203.0.113.9/blob", what: "redirected to") }
        #expect(try client.allowed("https://cdn.example.net/blob?sig=1", what: "redirected to").port == 443)
        #expect(try client.allowed("http://127.0.0.1:9/t", what: "token at").tls == false)
    }
}

/// Layers are applied with whiteouts honoured and nothing written outside the root.
@Suite("Executor: layer unpacking") struct LayerUnpackerTests {
    /// A tar archive built by hand (ustar headers with checksums).
    static func tar(_ entries: [(name: String, type: Character, body: String, link: String)]) -> [UInt8] {
        var out: [UInt8] = []
        for e in entries {
            var h = [UInt8](repeating: 0, count: 512)
            func put(_ s: String, _ at: Int, _ len: Int) { for (i, b) in s.utf8.prefix(len).enumerated() { h[at + i] = b } }
            func octal(_ v: Int, _ at: Int, _ len: Int) {
                let s = String(v, radix: 8)
                put(String(repeating: "0", count: max(0, len - 1 - s.count)) + s, at, len - 1)
            }
            put(e.name, 0, 100)
            octal(e.type == "5" ? 0o755 : 0o644, 100, 8)
            octal(0, 108, 8); octal(0, 116, 8)
            octal(e.body.utf8.count, 124, 12)
            octal(0, 136, 12)
            h[156] = UInt8(e.type.asciiValue!)
            put(e.link, 157, 100)
            put("ustar", 257, 6); put("00", 263, 2)
            for i in 148..<156 { h[i] = 0x20 }
            let sum = h.reduce(0) { $0 + Int($1) }
            octal(sum, 148, 7)
            out += h
            var body = Array(e.body.utf8)
            while body.count % 512 != 0 { body.append(0) }
            out += body
        }
        return out + [UInt8](repeating: 0, count: 1024)
    }

    func layer(_ bytes: [UInt8]) throws -> String {
        let p = tempDir("layer") + "/layer.tar"
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    @Test func whiteoutsRemoveLowerFiles() throws {
        let root = tempDir("rootfs")
        let u = LayerUnpacker(root: root)
        try u.apply(layer: try layer(Self.tar([("etc/", "5", "", ""), ("etc/a", "0", "A", ""), ("etc/b", "0", "B", ""), ("keep/", "5", "", ""), ("keep/x", "0", "X", "")])))
        try u.apply(layer: try layer(Self.tar([("etc/.wh.a", "0", "", ""), ("keep/.wh..wh..opq", "0", "", ""), ("keep/y", "0", "Y", "")])))
        #expect(access(root + "/etc/a", F_OK) != 0)
        #expect(readSmallFile(root + "/etc/b") == "B")
        #expect(access(root + "/keep/x", F_OK) != 0)
        #expect(readSmallFile(root + "/keep/y") == "Y")
    }

    @Test func pathsThatEscapeTheRootAreRefused() throws {
        let root = tempDir("rootfs-escape")
        let u = LayerUnpacker(root: root)
        #expect(throws: ImageError.self) { try u.apply(layer: try layer(Self.tar([("../escaped", "0", "bad", "")]))) }
        #expect(access(root + "/../escaped", F_OK) != 0)
        // A symlink to / followed by a file under it lands inside the root, not on the host.
        let marker = "caravan-unpack-test-\(getpid())"
        try u.apply(layer: try layer(Self.tar([("up", "2", "", "/"), ("up/tmp/\(marker)", "0", "inside", ""), ("rel", "2", "", "../../.."), ("rel/tmp/\(marker)2", "0", "inside", "")])))
        #expect(access("/tmp/\(marker)", F_OK) != 0 && access("/tmp/\(marker)2", F_OK) != 0)
        #expect(readSmallFile(root + "/tmp/\(marker)") == "inside")
        #expect(readSmallFile(root + "/tmp/\(marker)2") == "inside")
    }

    @Test func imageReferencesAreParsedOrRefusedClearly() throws {
        let r = try ImageReference("127.0.0.1:5000/library/busybox:1.36")
        #expect(r.host == "127.0.0.1" && r.port == 5000 && r.repository == "library/busybox" && r.tag == "1.36" && r.digest == nil)
        let d = try ImageReference("localhost:5000/busybox@sha256:" + String(repeating: "a", count: 64))
        #expect(d.digest?.count == 71 && d.tag == "latest")
        #expect(throws: ImageError.self) { try ImageReference("busybox") }
        #expect(throws: ImageError.self) { try ImageReference("127.0.0.1:5000/BusyBox") }
        #expect(throws: ImageError.self) { try ImageReference("127.0.0.1:5000/busybox@sha256:12") }
        // An IPv6 registry with its port (found by the fuzzer: the port was taken for part of the host).
        let v6 = try ImageReference("[::1]:5000/x:y")
        #expect(v6.host == "[::1]" && v6.port == 5000 && v6.address == "::1" && v6.description == "[::1]:5000/x:y")
        #expect(try ImageReference("[::1]/x").port == 443)
        for bad in ["[::1:5000/x", "[zz]:5000/x", "a b.c/x", "127.0.0.1:+5/x", "127.0.0.1:5000/x:tä"] {
            #expect(throws: ImageError.self, "\(bad)") { try ImageReference(bad) }
        }
    }
}
