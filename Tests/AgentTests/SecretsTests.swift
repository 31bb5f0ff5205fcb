import API
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
}
