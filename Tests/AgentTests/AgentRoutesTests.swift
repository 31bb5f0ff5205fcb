import API
import CaravanModel
import ClusterState
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Keyring
import Logging
import Metrics
import Raft
import CaravanTesting
import Synchronization
import Testing
@testable import Agent

/// The `/v1/agent` routes through the router, without an HTTP socket (gossip binds on loopback).
@Suite(.serialized) struct AgentRoutesTests {
    static func agent(_ ip: String, key: SecretKey? = nil, limits: ClusterLimits = ClusterLimits()) async throws -> Agent {
        let dir = NSTemporaryDirectory() + "caravan-routes-\(ip)-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        var config = AgentConfiguration(name: "routes", bind: ip, dataDir: dir)
        config.encryptKey = key
        config.dev = key == nil
        config.limits = limits
        config.enableRawExec = true
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
                #expect(r.status == .conflict)
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

    /// A one-agent Raft group (the services that would bootstrap it do not run in router tests).
    static func leader(_ ip: String, key: SecretKey? = nil, limits: ClusterLimits = ClusterLimits()) async throws -> Agent {
        let agent = try await Self.agent(ip, key: key, limits: limits)
        try await agent.raft.bootstrap(Configuration(servers: [.init(id: ServerID("routes"), address: "\(ip):4681", voter: true)]))
        let deadline = ContinuousClock.now + .seconds(60)
        while await agent.raft.status().role != .leader {
            guard ContinuousClock.now < deadline else { throw AgentError("no leader") }
            try await Task.sleep(for: .milliseconds(20))
        }
        return agent
    }

    static let job = """
        id: web
        groups:
          - name: g
            tasks:
              - name: t
                driver: raw_exec
                config: {command: /bin/true}
        """

    @Test func clusterReadsCarryTheirIndexAndBlockUntilSomethingNewer() async throws {
        let agent = try await Self.leader("127.0.62.5")
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            var evaluation = ""
            try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: Self.job)) { r in
                #expect(r.status == .ok)
                let reg = try JSONDecoder().decode(JobRegisterView.self, from: Data(buffer: r.body))
                evaluation = reg.evaluationID ?? ""
            }
            var index: UInt64 = 0
            try await client.execute(uri: "/v1/job/web", method: .get) { r in
                #expect(r.status == .ok)
                index = UInt64(r.headers[ClusterRead.indexHeader] ?? "") ?? 0
                #expect(r.headers[HTTPField.Name("X-Caravan-KnownLeader")!] == "true")
                #expect(r.headers[HTTPField.Name("X-Caravan-LastContact")!] == "0")
            }
            #expect(index > 0)
            let base = index
            // The registration's evaluation is listed under the job, pending (no leader loop runs here).
            try await client.execute(uri: "/v1/job/web/evaluations", method: .get) { r in
                let evals = try JSONDecoder().decode([EvaluationView].self, from: Data(buffer: r.body))
                #expect(evals.map(\.id) == [evaluation] && evals.first?.triggeredBy == "job-register" && evals.first?.status == "pending")
            }
            // One evaluation by a prefix of its id, as `caravan eval status` asks.
            try await client.execute(uri: "/v1/evaluation/\(evaluation.prefix(8))", method: .get) { r in
                let e = try JSONDecoder().decode(EvaluationView.self, from: Data(buffer: r.body))
                #expect(e.id == evaluation && e.jobID == "web")
            }
            try await client.execute(uri: "/v1/evaluation/ffffffff", method: .get) { r in
                #expect(r.status == .notFound)
                let c = try Self.code(r)
                #expect(c == "evaluation_not_found")
            }
            // Nothing changes: the read waits its time and answers with the same index.
            let start = ContinuousClock.now
            try await client.execute(uri: "/v1/job/web?index=\(index)&wait=300ms", method: .get) { r in
                #expect(r.status == .ok)
                #expect(r.headers[ClusterRead.indexHeader] == String(index))
            }
            #expect(ContinuousClock.now - start >= .milliseconds(290))
            // A change while a read waits: it answers with the newer index, well before its wait.
            async let woken: (UInt64, Duration) = {
                let t0 = ContinuousClock.now
                var got: UInt64 = 0
                try await client.execute(uri: "/v1/job/web?index=\(base)&wait=60s", method: .get) { r in
                    got = UInt64(r.headers[ClusterRead.indexHeader] ?? "") ?? 0
                }
                return (got, ContinuousClock.now - t0)
            }()
            try await Task.sleep(for: .milliseconds(200))
            try await client.execute(uri: "/v1/job/web", method: .delete) { r in #expect(r.status == .ok) }
            let (newer, took) = try await woken
            #expect(newer > base)
            #expect(took < .seconds(30))
            // A stale read from this agent's copy says so in its headers.
            try await client.execute(uri: "/v1/jobs?stale", method: .get) { r in
                #expect(r.status == .ok && r.headers[ClusterRead.indexHeader] == String(newer))
            }
            // Bad parameters are refused by name; unknown things are 404s with their own codes.
            for (uri, code) in [("/v1/job/web?index=abc", "invalid_parameter"), ("/v1/jobs?index=5&wait=soon", "invalid_parameter")] {
                try await client.execute(uri: uri, method: .get) { r in
                    #expect(r.status == .badRequest)
                    let c = try Self.code(r)
                    #expect(c == code)
                }
            }
            for (uri, code) in [("/v1/node/nowhere", "node_not_found"), ("/v1/job/nope/evaluations", "job_not_found"),
                                ("/v1/allocation/ffffffff", "allocation_not_found")] {
                try await client.execute(uri: uri, method: .get) { r in
                    #expect(r.status == .notFound)
                    let c = try Self.code(r)
                    #expect(c == code)
                }
            }
            // A job file under another job's path is refused, and nothing is registered.
            try await client.execute(uri: "/v1/job/other", method: .post, body: ByteBuffer(string: Self.job)) { r in
                #expect(r.status == .badRequest)
                #expect(String(buffer: r.body).contains("the path names job other"))
            }
            try await client.execute(uri: "/v1/job/other", method: .get) { r in #expect(r.status == .notFound) }
            // The scheduler configuration: binpack until changed, validated, read back.
            try await client.execute(uri: "/v1/operator/scheduler/configuration", method: .get) { r in
                let c = try JSONDecoder().decode(SchedulerConfigView.self, from: Data(buffer: r.body))
                #expect(c.algorithm == "binpack" && c.modifyIndex == 0)
            }
            try await client.execute(uri: "/v1/operator/scheduler/configuration", method: .put, body: ByteBuffer(string: #"{"algorithm": "fastest"}"#)) { r in
                #expect(r.status == .badRequest)
                #expect(String(buffer: r.body).contains("binpack, spread"))
            }
            try await client.execute(uri: "/v1/operator/scheduler/configuration", method: .put, body: ByteBuffer(string: #"{"algorithm": "spread"}"#)) { r in
                #expect(r.status == .ok)
            }
            try await client.execute(uri: "/v1/operator/scheduler/configuration", method: .get) { r in
                let c = try JSONDecoder().decode(SchedulerConfigView.self, from: Data(buffer: r.body))
                #expect(c.algorithm == "spread" && c.modifyIndex > 0)
            }
            // A wait too large for any clock is the longest wait, never an overflow.
            for wait in ["9223372036854775807h", "9223372036854775807", "99999999999999999999s"] {
                try await client.execute(uri: "/v1/jobs?wait=\(wait)", method: .get) { r in
                    #expect(r.status == .ok || r.status == .badRequest, "\(wait): \(r.status)")
                }
            }
        }
    }

    /// `POST /v1/job/{id}/promote` promotes the canaries waiting beside a job's old instances,
    /// and refuses clearly when none wait.
    @Test func promoteNeedsCanariesWaiting() async throws {
        let agent = try await Self.leader("127.0.62.8")
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        @Sendable func job(_ command: String) -> String {
            """
            id: web
            update: {canary: 1}
            groups:
              - name: g
                tasks: [{name: t, driver: raw_exec, config: {command: \(command)}}]
            """
        }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: job("/bin/v0"))) { r in #expect(r.status == .ok) }
            // Its instance, as the leader loop and the node would commit it (neither runs here).
            var n = Node(id: "n1", address: "127.0.0.1", cpuMillicores: 1000, memoryMiB: 1024, diskMiB: 1024)
            n.drivers = ["raw_exec"]
            let a = Allocation(id: "a1", jobID: "web", jobVersion: 0, group: "g", name: "web.g[0]", nodeID: "n1", cpuMillicores: 100, memoryMiB: 300, diskMiB: 300)
            for c in [Command.upsertNode(n), .applyPlan(allocations: [a], evaluations: []),
                      .clientUpdate([.init(allocationID: "a1", clientStatus: .running, description: "")])] {
                _ = try await agent.raft.apply(c.encode())
            }
            try await client.execute(uri: "/v1/job/web/promote", method: .post) { r in
                #expect(r.status == .badRequest)
                let c = try Self.code(r)
                #expect(c == "nothing_to_promote")
            }
            try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: job("/bin/v1"))) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/v1/job/web", method: .get) { r in
                let st = try JSONDecoder().decode(JobStatusView.self, from: Data(buffer: r.body))
                #expect(st.version == 1 && st.awaitingPromotion)
            }
            try await client.execute(uri: "/v1/job/web/promote", method: .post) { r in
                #expect(r.status == .ok)
                let reg = try JSONDecoder().decode(JobRegisterView.self, from: Data(buffer: r.body))
                #expect(reg.version == 1)
            }
            try await client.execute(uri: "/v1/job/web", method: .get) { r in
                let st = try JSONDecoder().decode(JobStatusView.self, from: Data(buffer: r.body))
                #expect(!st.awaitingPromotion)
            }
            try await client.execute(uri: "/v1/job/web/promote?version=x", method: .post) { r in
                #expect(r.status == .badRequest)
            }
            try await client.execute(uri: "/v1/job/nope/promote", method: .post) { r in
                #expect(r.status == .notFound)
                let c = try Self.code(r)
                #expect(c == "job_not_found")
            }
        }
    }

    @Test func metricsArePrometheusTextWithEveryLayer() async throws {
        AgentMetrics.bootstrap()
        let agent = try await Self.agent("127.0.62.6")
        defer { Task { await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/agent/members", method: .get) { _ in }
            try await client.execute(uri: "/v1/no/route", method: .get) { _ in }
            try await client.execute(uri: "/v1/metrics", method: .get) { r in
                #expect(r.status == .ok)
                #expect(r.headers[.contentType]?.hasPrefix("text/plain") == true)
                let text = String(buffer: r.body)
                for needle in ["caravan_http_requests_total{method=\"GET\",route=\"/v1/agent/members\",status=\"200\"} ",
                               "caravan_http_request_errors_total{route=\"unmatched\",status=\"404\"}",
                               "caravan_http_request_seconds_bucket", "caravan_gossip_members{status=\"alive\"} 1",
                               "caravan_gossip_probes_total ", "caravan_raft_term ", "caravan_raft_commit_index ",
                               "caravan_executor_tasks{state=\"running\"} 0", "caravan_state_jobs 0"] {
                    #expect(text.contains(needle), "missing \(needle)")
                }
                // Every sample line is `name{labels} value`.
                for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                    let parts = line.split(separator: " ")
                    #expect(parts.count == 2 && Double(parts[1]) != nil && parts[0].first!.isLetter, "bad sample line: \(line)")
                }
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

    /// The job files the docs show: every ```yaml / ```json block of `Docs/*.md` that is a job,
    /// and every file in `Deploy/examples/`.
    static func documentedJobs() throws -> [(String, String)] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
        var out: [(String, String)] = []
        let examples = root.appendingPathComponent("Deploy/examples")
        for name in try FileManager.default.contentsOfDirectory(atPath: examples.path).sorted() {
            out.append(("Deploy/examples/" + name, try String(contentsOf: examples.appendingPathComponent(name), encoding: .utf8)))
        }
        let docs = root.appendingPathComponent("Docs")
        for name in try FileManager.default.contentsOfDirectory(atPath: docs.path).sorted() where name.hasSuffix(".md") {
            let text = try String(contentsOf: docs.appendingPathComponent(name), encoding: .utf8)
            var block: [Substring]?
            var n = 0
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                if block == nil, line == "```yaml" || line == "```json" { block = [] } else if line == "```", let b = block {
                    n += 1
                    let body = b.joined(separator: "\n")
                    if body.contains("groups") && (body.hasPrefix("id:") || body.hasPrefix("{")) { out.append(("Docs/\(name) block \(n)", body)) }
                    block = nil
                } else if block != nil { block!.append(line) }
            }
        }
        return out
    }

    /// Every documented example and a hundred generated jobs (every field and operator) go
    /// through `POST /v1/jobs` and come back from `GET /v1/job/{id}/versions` as the same job.
    @Test func everyDocumentedAndGeneratedJobGoesThroughTheAPIAndBack() async throws {
        let agent = try await Self.leader("127.0.62.9")
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        var jobs = try Self.documentedJobs()
        #expect(jobs.contains { $0.0.hasPrefix("Docs/jobspec.md") } && jobs.count >= 7, "\(jobs.map(\.0))")
        for seed in 0..<UInt64(100) {
            var gen = JobGenerator(seed: 10_000 + seed)
            var job = gen.job()
            job.id = "gen-\(seed)"
            jobs.append(("generated job \(seed)", JobFile.render(job)))
        }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { [jobs] client in
            for (source, text) in jobs {
                let sent = try JobFile.parse(text, file: source)
                if sent.namespace != "default" {
                    try await client.execute(uri: "/v1/namespace/\(sent.namespace)", method: .put, body: ByteBuffer(string: "{}")) { r in
                        #expect(r.status == .ok, "\(source): \(String(buffer: r.body))")
                    }
                }
                try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: text)) { r in
                    #expect(r.status == .ok, "\(source): \(String(buffer: r.body))")
                }
                let ns = sent.namespace == "default" ? "" : "?namespace=\(sent.namespace)"
                try await client.execute(uri: "/v1/job/\(sent.id)/versions\(ns)", method: .get) { r in
                    #expect(r.status == .ok, "\(source): \(String(buffer: r.body))")
                    guard r.status == .ok else { return }
                    let versions = try JSONDecoder().decode([JobVersionView].self, from: Data(buffer: r.body))
                    let stored = try #require(versions.first, "\(source)")
                    // Every field comes back, but for registry passwords, which views withhold.
                    #expect(try JobFile.parse(stored.job, file: "stored") == JobFile.parse(JobFile.redacted(text) ?? "", file: "redacted"), "\(source)")
                    #expect(try JobFile.parse(stored.job, file: "stored") == sent || text.contains("password"), "\(source)")
                    // ... and the cluster keeps them whole.
                    #expect(agent.store.current.jobs[.init(sent.namespace, sent.id)].map { try? JobFile.parse($0.text, file: "kept") } == sent, "\(source)")
                }
            }
        }
    }

    /// `X-Caravan-Write-ID`: a register or variable write sent again with the same id is applied
    /// once and answered as the first time; a malformed id is refused.
    @Test func aWriteRetriedWithItsWriteIDIsAppliedOnce() async throws {
        let agent = try await Self.leader("127.0.62.10")
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            func post(_ text: String, id: String) async throws -> (HTTPResponse.Status, String) {
                try await client.execute(uri: "/v1/jobs", method: .post, headers: [HTTPField.Name(WriteID.header)!: id],
                                         body: ByteBuffer(string: text)) { r in (r.status, String(buffer: r.body)) }
            }
            let v0 = Self.job, v1 = Self.job.replacingOccurrences(of: "/bin/true", with: "/bin/false")
            let (s1, first) = try await post(v0, id: "1700000000000-t1/1")
            let (_, second) = try await post(v1, id: "1700000000000-t1/2")
            let (s3, retried) = try await post(v0, id: "1700000000000-t1/1")
            #expect(s1 == .ok && s3 == .ok)
            let a = try JSONDecoder().decode(JobRegisterView.self, from: Data(first.utf8))
            let c = try JSONDecoder().decode(JobRegisterView.self, from: Data(retried.utf8))
            #expect(a.index == c.index && a.evaluationID == c.evaluationID, "\(first) vs \(retried)")
            try await client.execute(uri: "/v1/job/web/versions", method: .get) { r in
                let versions = try JSONDecoder().decode([JobVersionView].self, from: Data(buffer: r.body))
                // v0 then v1; the retry of v0 did not make a third version over v1.
                #expect(versions.count == 2, "\(second) \(versions.map(\.version))")
            }
            for (n, value) in ["one", "two"].enumerated() {
                try await client.execute(uri: "/v1/var/app/x", method: .put, headers: [HTTPField.Name(WriteID.header)!: "1700000000000-t2/\(n + 1)"],
                                         body: ByteBuffer(string: #"{"value": "\#(value)"}"#)) { r in #expect(r.status == .ok) }
            }
            try await client.execute(uri: "/v1/var/app/x", method: .put, headers: [HTTPField.Name(WriteID.header)!: "1700000000000-t2/1"],
                                     body: ByteBuffer(string: #"{"value": "one"}"#)) { r in #expect(r.status == .ok) }
            try await client.execute(uri: "/v1/var/app/x", method: .get) { r in
                let v = try JSONDecoder().decode(VariableView.self, from: Data(buffer: r.body))
                #expect(v.value == "two")
            }
            try await client.execute(uri: "/v1/var/app/y", method: .put, headers: [HTTPField.Name(WriteID.header)!: "not an id"],
                                     body: ByteBuffer(string: #"{"value": "z"}"#)) { r in
                #expect(r.status == .badRequest)
                let c = try Self.code(r)
                #expect(c == "invalid_header")
            }
        }
    }

    /// Past a cap, a write is refused with 429 naming the limit; what is stored stays, updates
    /// of what exists still go through.
    @Test func jobAndVariableCapsAreRefusedWith429() async throws {
        var limits = ClusterLimits()
        limits.maxJobs = 2
        limits.maxVariables = 2
        limits.maxVariableBytes = 100
        let agent = try await Self.leader("127.0.62.11", limits: limits)
        defer { Task { await agent.raft.shutdown(); await agent.gossip.shutdown() } }
        let app = Application(router: agent.makeRouter())
        try await app.test(.router) { client in
            for id in ["a", "b", "c", "a"] {
                let text = Self.job.replacingOccurrences(of: "id: web", with: "id: \(id)")
                try await client.execute(uri: "/v1/jobs", method: .post, body: ByteBuffer(string: text)) { r in
                    if id == "c" {
                        #expect(r.status == .tooManyRequests)
                        let code = try Self.code(r)
                        #expect(code == "limit_reached")
                        #expect(String(buffer: r.body).contains("2 jobs"))
                    } else {
                        #expect(r.status == .ok, "\(id): \(String(buffer: r.body))")
                    }
                }
            }
            for (path, value, status) in [("x", "1", HTTPResponse.Status.ok), ("y", "2", .ok), ("z", "3", .tooManyRequests), ("x", "4", .ok),
                                          ("y", String(repeating: "v", count: 120), .tooManyRequests)] {
                try await client.execute(uri: "/v1/var/\(path)", method: .put, body: ByteBuffer(string: #"{"value": "\#(value)"}"#)) { r in
                    #expect(r.status == status, "\(path): \(String(buffer: r.body))")
                }
            }
            for (path, value) in [("x", "4"), ("y", "2")] {
                try await client.execute(uri: "/v1/var/\(path)", method: .get) { r in
                    let v = try JSONDecoder().decode(VariableView.self, from: Data(buffer: r.body))
                    #expect(v.value == value)
                }
            }
        }
    }

    /// Exec sessions and follows: the slot past the limit is refused with 429 and freed ones
    /// are used again.
    @Test func concurrencyLimitsRefuseThePastTheLimitAndReuseFreedSlots() throws {
        let l = ConcurrencyLimit(2, "exec sessions")
        try l.acquire(); try l.acquire()
        do { try l.acquire(); Issue.record("a third slot was given") } catch let e as APIError {
            #expect(e.status == .tooManyRequests && e.message.contains("2 exec sessions"))
        }
        l.release()
        try l.acquire()
        #expect(l.current == 2)
        // A streamed answer's slot: freed when the answer is dropped, even if its body never ran
        // (the client left before the head went out), and then what it started is stopped.
        let follows = ConcurrencyLimit(1, "log follows")
        let stopped = Mutex(0)
        do { _ = try follows.hold(whenDropped: { stopped.withLock { $0 += 1 } }) }
        #expect(follows.current == 0 && stopped.withLock { $0 } == 1)
        do {
            let slot = try follows.hold(whenDropped: { stopped.withLock { $0 += 1 } })
            slot.take()
            #expect(follows.current == 1)
        }
        #expect(follows.current == 0 && stopped.withLock { $0 } == 1)
    }
}
