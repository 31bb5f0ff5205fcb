import API
import Keyring
import CaravanModel
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import Agent

/// Secrets stay secret: registry passwords never in a view, the data directory private.
@Suite(.serialized) struct SecretsTests {
    static let job = """
        id: private
        groups:
          - name: g
            tasks:
              - name: t
                driver: container
                config: {image: "127.0.0.1:5999/app:1", auth: {username: deploy, password: hunter2-secret}}
        """

    @Test func registryPasswordsAreRedactedInVersionsButKeptForRevert() async throws {
        let agent = try await AgentRoutesTests.leader("127.0.62.14")
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        var st = stat()
        #expect(stat(agent.config.dataDir, &st) == 0 && st.st_mode & 0o777 == 0o700, "the data directory is the agent's alone")
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            for text in [Self.job, Self.job.replacingOccurrences(of: "app:1", with: "app:2")] {
                try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: text)) { r in #expect(r.status == .ok) }
            }
            let body = try await client.execute(uri: "/v1/job/private/versions", method: .get) { r in String(buffer: r.body) }
            #expect(!body.contains("hunter2-secret") && body.contains("redacted"), "\(body)")
            #expect(body.contains("deploy"))
            for uri in ["/v1/job/private", "/v1/jobs", "/v1/allocations", "/v1/evaluations"] {
                let text = try await client.execute(uri: uri, method: .get) { r in String(buffer: r.body) }
                #expect(!text.contains("hunter2"), "\(uri): \(text)")
            }
            // Reverting registers the stored definition, password and all.
            try await client.execute(uri: "/v1/job/private/revert?version=0", method: .post) { r in #expect(r.status == .ok, "\(String(buffer: r.body))") }
            let stored = agent.store.current.jobs[.init("default", "private")]?.text ?? ""
            #expect(stored.contains("hunter2-secret") && stored.contains("app:1"))
        }
    }

    /// Every file under `dir`, read whole.
    static func files(under dir: String) -> [(String, Data)] {
        let e = FileManager.default.enumerator(atPath: dir)
        var out: [(String, Data)] = []
        while let f = e?.nextObject() as? String {
            if let d = FileManager.default.contents(atPath: dir + "/" + f) { out.append((f, d)) }
        }
        return out
    }

    @Test func variablesAreCiphertextInTheLogAndSnapshotsAndSurviveKeyRotation() async throws {
        let k1 = SecretKey.generate()
        let agent = try await AgentRoutesTests.leader("127.0.62.15", key: k1)
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        let secret = "p4ss-\(UInt64.random(in: 1_000_000...9_999_999))"
        try await app.test(.router) { client in
            func put(_ path: String, _ value: String) async throws {
                try await client.execute(uri: "/v1/var/" + path, method: .put, body: ByteBuffer(string: #"{"value": "\#(value)"}"#)) { r in
                    #expect(r.status == .ok, "\(String(buffer: r.body))")
                    #expect(String(buffer: r.body).contains(value))
                }
            }
            func get(_ path: String) async throws -> String {
                try await client.execute(uri: "/v1/var/" + path, method: .get) { r in
                    (try? JSONDecoder().decode(VariableView.self, from: Data(buffer: r.body)))?.value ?? String(buffer: r.body)
                }
            }
            try await put("db/password", secret)
            #expect(try await get("db/password") == secret)
            let list = try await client.execute(uri: "/v1/vars?prefix=db/", method: .get) { r in String(buffer: r.body) }
            #expect(list.contains(secret))
            // The replicated state, a snapshot and every file of the data directory hold ciphertext.
            let stored = try agent.store.query(VariableStore.get("db/password"))
            #expect(!String(decoding: stored, as: UTF8.self).contains(secret) && String(decoding: stored, as: UTF8.self).contains(VariableCipher.prefix))
            #expect(!String(decoding: agent.store.snapshot(), as: UTF8.self).contains(secret))
            for (f, d) in Self.files(under: agent.config.dataDir) {
                #expect(d.range(of: Data(secret.utf8)) == nil, "\(f) holds the plaintext")
            }
            // Rotate the cluster key: the data key follows the primary, the old key goes, the
            // values still read.
            let k2 = SecretKey.generate()
            for (op, key) in [("install", k2), ("use", k2), ("remove", k1)] {
                try await client.execute(uri: "/v1/operator/keyring/" + op, method: .post,
                                         body: ByteBuffer(string: #"{"key": "\#(key.base64)"}"#)) { r in
                    #expect(r.status == .ok, "\(op): \(String(buffer: r.body))")
                }
            }
            #expect(try await agent.cipher.sealingKeyID(agent.raft) == k2.id)
            #expect(try await get("db/password") == secret)
            // A snapshot restored elsewhere keeps the sealed data key with the values.
            let copy = ClusterStore()
            try copy.restore(agent.store.snapshot())
            #expect(try copy.query(VariableStore.dataKeyQuery) == (try agent.store.query(VariableStore.dataKeyQuery)))
            #expect(try copy.query(VariableStore.get("db/password")) == stored)
        }
    }
}
