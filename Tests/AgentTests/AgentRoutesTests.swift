import API
import Foundation
import Hummingbird
import HummingbirdTesting
import Keyring
import Logging
import Testing
@testable import Agent

/// The `/v1/agent` routes through the router, without an HTTP socket (gossip binds on loopback).
@Suite(.serialized) struct AgentRoutesTests {
    static func agent(_ ip: String, key: SecretKey? = nil) async throws -> Agent {
        let dir = NSTemporaryDirectory() + "caravan-routes-\(ip)-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        var config = AgentConfiguration(name: "routes", bind: ip, dataDir: dir)
        config.encryptKey = key
        config.tags = ["zone": "a"]
        return try await Agent.start(config, logger: Logger(label: "test"))
    }

    @Test func membersAndSelfAnswerJSON() async throws {
        let agent = try await Self.agent("127.0.62.2", key: .generate())
        defer { Task { await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/agent/members", method: .get) { r in
                #expect(r.status == .ok)
                let ms = try JSONDecoder().decode([MemberView].self, from: Data(buffer: r.body))
                #expect(ms.map(\.name) == ["routes"])
                #expect(ms[0].status == "alive" && ms[0].tags == ["zone": "a"] && ms[0].capacity != nil)
            }
            try await client.execute(uri: "/v1/agent/self", method: .get) { r in
                let me = try JSONDecoder().decode(AgentSelfView.self, from: Data(buffer: r.body))
                #expect(me.encrypted && me.name == "routes")
            }
        }
    }

    @Test func badRequestsGetJSONErrorsWithStableCodes() async throws {
        let key = SecretKey.generate()
        let agent = try await Self.agent("127.0.62.3", key: key)
        defer { Task { await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/agent/keyring/install", method: .post, body: ByteBuffer(string: "{not json")) { r in
                #expect(r.status == .badRequest)
                let c = try Self.code(r)
                #expect(c == "invalid_body")
            }
            try await client.execute(uri: "/v1/agent/keyring/install", method: .post, body: ByteBuffer(string: #"{"key": "abc"}"#)) { r in
                #expect(r.status == .badRequest)
                let c = try Self.code(r)
                #expect(c == "invalid_key")
            }
            try await client.execute(uri: "/v1/agent/keyring/remove", method: .post,
                                     body: ByteBuffer(string: #"{"key": "\#(key.base64)"}"#)) { r in
                #expect(r.status == .badRequest)
                let c = try Self.code(r)
                #expect(c == "removing_primary_key")
                #expect(!String(buffer: r.body).contains(key.base64))
            }
            try await client.execute(uri: "/v1/agent/keyring/explode", method: .post, body: ByteBuffer(string: "{}")) { r in
                #expect(r.status == .notFound)
            }
            try await client.execute(uri: "/v1/no/such/route", method: .get) { r in
                #expect(r.status == .notFound)
                let c = try Self.code(r)
                #expect(c == "not_found")
            }
            let big = ByteBuffer(repeating: UInt8(ascii: "a"), count: (1 << 20) + 10)
            try await client.execute(uri: "/v1/agent/keyring/install", method: .post, body: big) { r in
                #expect(r.status == .contentTooLarge)
                let c = try Self.code(r)
                #expect(c == "request_too_large")
            }
            // Nothing stored was lost: the keyring is as it was.
            try await client.execute(uri: "/v1/agent/keyring", method: .get) { r in
                let v = try JSONDecoder().decode(KeyringView.self, from: Data(buffer: r.body))
                #expect(v.keys == [key.idString: 1])
            }
        }
    }

    @Sendable static func code(_ r: TestResponse) throws -> String {
        try JSONDecoder().decode(ErrorBody.self, from: Data(buffer: r.body)).error.code
    }

    @Test func keyringNeedsEncryption() async throws {
        let agent = try await Self.agent("127.0.62.4")
        defer { Task { await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/agent/keyring", method: .get) { r in
                #expect(r.status == .badRequest)
                #expect(String(buffer: r.body).contains("encryption_disabled"))
            }
        }
    }

    @Test func nodeMetadataRoundTripsAndRejectsGarbage() {
        let m = NodeMetadata(role: "agent", version: "0.1.0",
                             capacity: CapacityView(cpuCores: 2, cpuMHz: 2600, cpuMillicores: 2000, memoryMiB: 24000, diskMiB: 80000),
                             free: ResourcesView(cpuMillicores: 1500, memoryMiB: 20000, diskMiB: 70000), tags: ["rack": "r1", "zone": "a"],
                             httpPort: 5000, rpcPort: 5001, raft: .member, raftIntent: 77)
        #expect(NodeMetadata.decode(m.encode()) == m)
        #expect(NodeMetadata.decode([]) == nil)
        #expect(NodeMetadata.decode(Array(m.encode().dropLast())) == nil)
        #expect(NodeMetadata.decode([9, 9, 9]) == nil)
    }
}
