import API
import Foundation
import Hummingbird
import Testing
@testable import Agent

/// `Docs/openapi.yaml` stays true: it lists exactly the routes the agent serves, and each
/// view's JSON fields are exactly the properties its schema names.
@Suite struct OpenAPITests {
    static let document: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("Docs/openapi.yaml"), encoding: .utf8)) ?? ""
    }()

    /// "METHOD /path" for every operation under `paths:` (paths at two spaces, methods at four).
    static func documentedOperations() -> Set<String> {
        var out = Set<String>()
        var inPaths = false, path = ""
        for line in document.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" ") && !line.isEmpty { inPaths = line == "paths:"; continue }
            guard inPaths else { continue }
            if line.hasPrefix("  /") && !line.hasPrefix("   ") { path = String(line.dropFirst(2).dropLast()); continue }
            for m in ["get", "post", "put", "delete", "patch"] where line == "    \(m):" { out.insert("\(m.uppercased()) \(path)") }
        }
        return out
    }

    /// The property names of a schema under `components: schemas:`.
    static func properties(of schema: String) -> Set<String> {
        var out = Set<String>()
        var inSchemas = false, current = "", inProps = false
        for line in document.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "  schemas:" { inSchemas = true; continue }
            guard inSchemas else { continue }
            if line.hasPrefix("  ") && !line.hasPrefix("   ") { break }
            if line.hasPrefix("    ") && !line.hasPrefix("     ") { current = String(line.dropFirst(4).dropLast()); inProps = false; continue }
            guard current == schema else { continue }
            if line == "      properties:" { inProps = true; continue }
            if line.hasPrefix("      ") && !line.hasPrefix("       ") { inProps = false; continue }
            if inProps, line.hasPrefix("        ") && !line.hasPrefix("         "), let colon = line.firstIndex(of: ":") {
                out.insert(line[line.index(line.startIndex, offsetBy: 8)..<colon].trimmingCharacters(in: .whitespaces))
            }
        }
        return out
    }

    @Test func everyRouteIsDocumentedAndEveryDocumentedRouteExists() async throws {
        #expect(!Self.document.isEmpty, "Docs/openapi.yaml not found")
        let agent = try await AgentRoutesTests.agent("127.0.62.7")
        defer { Task { await agent.gossip.shutdown() } }
        let served = Set(agent.makeRouter().routes.map { r -> String in
            // `:id` and `{id}` captures as OpenAPI writes them; the variable store's `**` is its path.
            let path = "\(r.path)".split(separator: "/").map { seg -> String in
                if seg == "**" { return "{path}" }
                if seg.hasPrefix(":") { return "{\(seg.dropFirst())}" }
                return String(seg)
            }.joined(separator: "/")
            return "\(r.method) /\(path)"
        })
        let documented = Self.documentedOperations()
        #expect(served.count > 30)
        #expect(served.subtracting(documented).isEmpty, "served but not in Docs/openapi.yaml: \(served.subtracting(documented).sorted())")
        #expect(documented.subtracting(served).isEmpty, "in Docs/openapi.yaml but not served: \(documented.subtracting(served).sorted())")
        // Every schema reference resolves.
        for line in Self.document.split(separator: "\n") {
            guard let r = line.range(of: "#/components/schemas/") else { continue }
            let name = line[r.upperBound...].prefix { $0.isLetter || $0.isNumber }
            #expect(!Self.properties(of: String(name)).isEmpty, "schema \(name) is referenced but not defined")
        }
    }

    /// The top-level JSON keys of a value, every optional set.
    static func keys(_ value: some Encodable) throws -> Set<String> {
        let object = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(value)) as? [String: Any] ?? [:]
        return Set(object.keys)
    }

    @Test func everyViewHasExactlyTheFieldsItsSchemaNames() throws {
        let resources = ResourcesView(cpuMillicores: 1, memoryMiB: 1, diskMiB: 1)
        let capacity = CapacityView(cpuCores: 1, cpuMHz: 1, cpuMillicores: 1, memoryMiB: 1, diskMiB: 1)
        let member = MemberView(name: "a", address: "a", status: "alive", role: "agent", capacity: capacity, free: resources, version: "1",
                                tags: [:], incarnation: 1)
        let stats = GossipStatsView(localHealth: 0, probes: 0, probesFailed: 0, suspicionsRaised: 0, refutations: 0, packetsSent: 0,
                                    packetsReceived: 0, bytesSent: 0, bytesReceived: 0, streamBytesSent: 0, streamBytesReceived: 0, dropped: [:])
        var alloc = AllocationView(id: "a", name: "a", node: "n", group: "g", jobVersion: 0, desiredStatus: "run", desiredDescription: "",
                                   clientStatus: "running", clientDescription: "", cpuMillicores: 1, memoryMiB: 1, ports: [:],
                                   previousAllocation: "p", createIndex: 1, modifyIndex: 1)
        alloc.rescheduleAt = 1
        alloc.taskStates = ["t": TaskStateView(state: "running", failed: false, restarts: 0, exitCode: 0, startedAt: 1, finishedAt: 0,
                                               events: [TaskEventView(time: 1, type: "Started", message: "")])]
        let node = NodeView(id: "n", name: "n", address: "a", datacenter: "dc1", status: "ready", eligibility: "eligible", draining: false,
                            drivers: [], capacity: resources, allocated: resources, allocations: 0)
        let views: [(String, any Encodable)] = [
            ("Resources", resources), ("Capacity", capacity), ("Member", member), ("GossipStats", stats),
            ("AgentSelf", AgentSelfView(name: "a", version: "1", gossipAddress: "a", httpAddress: "a", encrypted: true, member: member, gossip: stats)),
            ("Keyring", KeyringView(operation: "list", nodes: 1, succeeded: 1, unreachable: [], keys: [:], primaryKeys: [:], results: [])),
            ("Status", StatusView(node: "n", leader: "l", leaderAddress: "a", term: 1, role: "leader", membership: "voter", commitIndex: 1,
                                  appliedIndex: 1, lastIndex: 1)),
            ("Leader", LeaderView(leader: "l", address: "a")),
            ("RaftConfiguration", RaftConfigurationView(term: 1, commitIndex: 1, servers: [])),
            ("Variable", VariableView(path: "p", value: "v", createIndex: 1, modifyIndex: 1)),
            ("JobRegister", JobRegisterView(id: "j", namespace: "default", index: 1, version: 0, jobModifyIndex: 1, evaluationID: "e")),
            ("GroupSummary", GroupSummaryView(name: "g", desired: 1, placed: 1, pending: 0, running: 1, complete: 0, failed: 0, lost: 0)),
            ("JobStatus", { () -> JobStatusView in
                var v = JobStatusView(id: "j", namespace: "default", type: "service", priority: 50, status: "running", version: 0, stopped: false,
                                      groups: [], allocations: [alloc], placementFailures: [], modifyIndex: 1)
                v.failedEvaluation = "stalled"  // optional: sent when set
                return v
            }()),
            ("JobVersion", JobVersionView(version: 0, stopped: false, modifyIndex: 1, job: "{}")),
            ("JobPlan", JobPlanView(id: "j", version: 0, placements: [], stops: [], inPlace: [], failures: [])),
            ("PlanChange", JobPlanView.Change(name: "a", node: "n", reason: "new")),
            ("Evaluation", EvaluationView(id: "e", namespace: "default", jobID: "j", priority: 50, triggeredBy: "job-register", status: "complete",
                                          statusDescription: "", nodeID: "n", failedPlacements: [:], createIndex: 1, modifyIndex: 1)),
            ("TaskEvent", TaskEventView(time: 1, type: "Started", message: "")),
            ("TaskState", alloc.taskStates["t"]!),
            ("Allocation", alloc), ("Node", node),
            ("NodeDetail", NodeDetailView(node: node, attributes: [:], meta: [:], allocations: [])),
            ("ExecRequest", ExecRequest(command: ["ls"], timeout: 1)), ("ExecResult", ExecResultView(exitCode: 0, output: "")),
            ("Error", ErrorBody(code: "c", message: "m")),
            ("SchedulerConfig", SchedulerConfigView(algorithm: "spread", modifyIndex: 1)),
        ]
        for (schema, view) in views {
            let documented = Self.properties(of: schema)
            let actual = try Self.keys(view)
            #expect(actual == documented, "\(schema): answer has \(actual.subtracting(documented).sorted()) undocumented, documents \(documented.subtracting(actual).sorted()) that are never sent")
        }
    }
}
