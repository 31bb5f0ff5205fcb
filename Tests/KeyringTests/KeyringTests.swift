import Foundation
import PropertyBased
import Testing
@testable import Keyring

@Suite struct KeyringTests {
    @Test func sealThenOpenReturnsThePayload() throws {
        let ring = Keyring(primary: .generate())
        let payload = Array("hello caravan".utf8)
        let frame = ring.seal(payload)
        #expect(frame.count == payload.count + ring.overhead)
        #expect(try ring.open(frame).get() == payload)
    }

    @Test func everySealUsesAFreshNonce() {
        let ring = Keyring(primary: .generate())
        #expect(ring.seal([1, 2, 3]) != ring.seal([1, 2, 3]))
    }

    @Test func aWrongKeyIsRefusedNotCrashed() {
        let a = Keyring(primary: .generate())
        let b = Keyring(primary: .generate())
        #expect(throws: OpenFailure.unknownKey) { try b.open(a.seal([1])).get() }
    }

    @Test func aForgedHeaderOrBodyIsRefused() {
        let ring = Keyring(primary: .generate())
        var frame = ring.seal(Array(repeating: 7, count: 40))
        frame[frame.count - 1] ^= 1
        #expect(throws: OpenFailure.forged) { try ring.open(frame).get() }
        // The header is authenticated: a changed version byte is not accepted either.
        var other = ring.seal([1, 2])
        other[1] = 0x02
        #expect(throws: OpenFailure.unsupportedVersion) { try ring.open(other).get() }
    }

    @Test func anAgentWithAKeyRefusesPlaintextAndViceVersa() throws {
        let plain = Keyring()
        let sealed = Keyring(primary: .generate())
        #expect(throws: OpenFailure.plaintextRefused) { try sealed.open(plain.seal([1])).get() }
        #expect(throws: OpenFailure.sealedButNoKeys) { try plain.open(sealed.seal([1])).get() }
        #expect(try plain.open(plain.seal([9])).get() == [9])
    }

    @Test func rotationInstallUseRemove() throws {
        let k1 = SecretKey.generate(), k2 = SecretKey.generate()
        var old = Keyring(primary: k1)
        let sealedWithOld = old.seal([1])
        try old.install(k2)
        // Installing does not change which key seals.
        #expect(old.primary == k1)
        try old.use(k2)
        #expect(try old.open(sealedWithOld).get() == [1])
        #expect(throws: KeyringError.self) { try old.remove(k2) }
        try old.remove(k1)
        #expect(old.keys == [k2])
        #expect(throws: OpenFailure.unknownKey) { try old.open(sealedWithOld).get() }
    }

    @Test func usingAKeyThatIsNotInstalledIsRefused() {
        var ring = Keyring(primary: .generate())
        let error = #expect(throws: KeyringError.self) { try ring.use(.generate()) }
        #expect(error?.code == .keyNotInstalled)
    }

    @Test func keysRoundTripThroughBase64AndNeverPrint() throws {
        let k = SecretKey.generate()
        #expect(try SecretKey(base64: k.base64) == k)
        #expect(!"\(k)".contains(k.base64))
        #expect(throws: KeyringError.self) { try SecretKey(base64: "not base64!") }
        #expect(throws: KeyringError.self) { try SecretKey(base64: "AAAA") }
    }

    @Test func keyringFileRoundTripsAndRejectsGarbage() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kr-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var ring = Keyring(primary: .generate())
        try ring.install(.generate())
        let path = dir + "/keyring.json"
        try KeyringFile.save(ring, path: path)
        #expect(try KeyringFile.load(path: path) == ring)
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        try Data("{\"primary\": 3}".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: KeyringError.self) { try KeyringFile.load(path: path) }
        #expect(throws: KeyringError.self) { try KeyringFile.load(path: dir + "/missing.json") }
    }

    @Test func openIsTotalOnArbitraryBytes() async {
        let ring = Keyring(primary: .generate())
        await propertyCheck(count: 2000, input: Gen.uint8().array(of: 0...120)) { bytes in
            var frame = bytes
            // Half of the inputs carry a valid header so the decrypt path is exercised too.
            if frame.count > 6, frame[0] & 1 == 0 {
                frame[0] = Keyring.magic
                frame[1] = Keyring.sealedVersion
            }
            _ = ring.open(frame)
        }
    }
}
