import API
import Foundation
import Testing

/// schemathesis (a real OpenAPI fuzzer, installed from PyPI by Deploy/test.sh into
/// .build/schemathesis) against a live agent with Docs/openapi.yaml: every operation with
/// generated valid and invalid input, every check (server errors, undocumented statuses, response
/// schemas and headers, valid input refused, invalid input accepted, undeclared methods). The
/// exceptions are in Docs/schemathesis.toml, each with its reason. The agent must still serve
/// afterwards.
@Suite struct OpenAPIConformanceTests {
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    @Test func schemathesisFindsNothingAndTheAgentServesAfter() async throws {
        let python = Self.repository.appendingPathComponent(".build/schemathesis/bin/python").path
        try #require(FileManager.default.isExecutableFile(atPath: python),
                     "schemathesis is not installed at .build/schemathesis: run Deploy/test.sh (it installs it from PyPI)")
        let c = try await LocalCluster(subnet: 91)
        // Blocking reads end within 2 s, so a generated ?index=…&wait=… never outlasts a request.
        try c.start(0, extra: ["--bootstrap-expect", "1", "--max-query-wait", "2", "--log-level", "warning"])
        _ = try await RaftEndToEndTests.agreedLeader(c, [0])
        let docs = Self.repository.appendingPathComponent("Docs").path
        // One worker: with two, Python 3.11 sometimes fails inside schemathesis (an ast.parse
        // "recursion depth mismatch" between threads); the higher limit is for deep schemas.
        let script = """
            import sys; sys.setrecursionlimit(20000)
            from schemathesis.cli import schemathesis
            sys.argv = ["st"] + sys.argv[1:]
            sys.exit(schemathesis())
            """
        let run = try await LocalCluster.runAsync(
            ["-c", script, "--config-file", docs + "/schemathesis.toml", "run", docs + "/openapi.yaml",
             "--url", "http://\(c.ip(0)):4680", "--max-examples", "10", "--request-timeout", "5",
             "--generation-deterministic", "--workers", "1", "--no-color"],
            executable: python, limit: .seconds(480))
        // The failures and errors sections (each with its curl reproduction), then the summary.
        let lines = run.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let first = lines.firstIndex { $0.contains("= FAILURES =") || $0.contains("= ERRORS =") } ?? max(0, lines.count - 40)
        let summary = lines[first...].prefix(200).joined(separator: "\n")
        #expect(run.status == 0, "schemathesis found problems:\n\(summary)\n\(run.stderr.suffix(2000))")
        #expect(run.stdout.contains("generated"), "\(summary)")
        // The agent is alive and still answers.
        let me = try await c.agent(0).api.agentSelf()
        #expect(me.member.name == "agent-0")
        #expect(c.agent(0).process.isRunning)
    }
}
