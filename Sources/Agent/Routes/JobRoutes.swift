import API
import CaravanModel
import ClusterState
import FoundationEssentials
import Hummingbird
import Primitives
import RaftNIO

/// `/v1/jobs`, `/v1/job/{id}`, `/v1/nodes`, `/v1/allocations`: jobs in, placements out.
struct JobRoutes {
    let agent: Agent

    func register(on router: Router<BasicRequestContext>) {
        router.post("/v1/jobs") { request, context in
            let body = try await request.body.collect(upTo: maxBodyBytes)
            let text = String(buffer: body)
            let job: Job
            do { job = try JobFile.parse(text, file: "request") } catch let e as JobFileError {
                throw APIError(.badRequest, "invalid_job", e.problems.map(\.description).joined(separator: "\n"))
            }
            let index = try await commit(.registerJob(text: JobFile.render(job)))
            // Read back what the registration left (a new version, or the unchanged job).
            let after = try? await agent.raft.read(ClusterQuery(kind: .job, namespace: job.namespace, id: job.id).encode())
            let st = after.flatMap { try? JSONDecoder().decode(JobStatusView.self, from: Data($0)) }
            return JSONResponse.make(JobRegisterView(id: job.id, namespace: job.namespace, index: index, version: st?.version,
                                                     jobModifyIndex: st?.modifyIndex))
        }
        router.post("/v1/jobs/plan") { request, context in
            let body = try await request.body.collect(upTo: maxBodyBytes)
            let job: Job
            do { job = try JobFile.parse(String(buffer: body), file: "request") } catch let e as JobFileError {
                throw APIError(.badRequest, "invalid_job", e.problems.map(\.description).joined(separator: "\n"))
            }
            var q = ClusterQuery(kind: .plan)
            q.text = JobFile.render(job)
            let data: [UInt8]
            do { data = try await agent.raft.read(q.encode()) } catch { throw APIError(raft: error) }
            return Self.raw(data)
        }
        router.post("/v1/node/:id/drain") { request, context in
            let id = context.parameters.get("id") ?? ""
            let enable = request.uri.queryParameters.get("enable").map { $0 != "false" } ?? true
            _ = try await commit(.nodeDrain(id: id, draining: enable), notFoundCode: "node_not_found")
            return JSONResponse.make(["node": id, "draining": enable ? "true" : "false"])
        }
        router.post("/v1/node/:id/eligibility") { request, context in
            let id = context.parameters.get("id") ?? ""
            guard let raw = request.uri.queryParameters.get("eligible"), raw == "true" || raw == "false" else {
                throw APIError(.badRequest, "invalid_parameter", "eligible must be true or false")
            }
            _ = try await commit(.nodeEligibility(id: id, eligibility: raw == "true" ? .eligible : .ineligible), notFoundCode: "node_not_found")
            return JSONResponse.make(["node": id, "eligibility": raw == "true" ? "eligible" : "ineligible"])
        }
        router.get("/v1/jobs") { request, _ in
            let data = try await query(ClusterQuery(kind: .jobs), request)
            return Self.raw(data)
        }
        router.get("/v1/job/:id") { request, context in
            Self.raw(try await jobQuery(.job, request, context).data)
        }
        router.get("/v1/job/:id/versions") { request, context in
            Self.raw(try await jobQuery(.versions, request, context).data)
        }
        router.post("/v1/job/:id/revert") { request, context in
            guard let raw = request.uri.queryParameters.get("version"), let version = Int(raw), version >= 0 else {
                let id = context.parameters.get("id") ?? ""
                throw APIError(.badRequest, "invalid_parameter", "version must be a version number (see `caravan job history \(id)`)")
            }
            let (data, ns, id) = try await jobQuery(.versions, request, context)
            let versions = try JSONDecoder().decode([JobVersionView].self, from: Data(data))
            guard let target = versions.first(where: { $0.version == version }) else {
                throw APIError(.badRequest, "unknown_version", "job \(id) has no version \(version) (kept: \(versions.map { String($0.version) }.joined(separator: ", ")))")
            }
            // Registering the old definition again makes it the newest version.
            let index = try await commit(.registerJob(text: target.job))
            return JSONResponse.make(JobRegisterView(id: id, namespace: ns, index: index))
        }
        router.delete("/v1/job/:id") { request, context in
            let id = context.parameters.get("id") ?? ""
            let ns = request.uri.queryParameters.get("namespace") ?? "default"
            let purge = request.uri.queryParameters.get("purge").map { $0 != "false" } ?? false
            let index = try await commit(.deregisterJob(namespace: ns, id: id, purge: purge), notFoundCode: "job_not_found")
            return JSONResponse.make(JobRegisterView(id: id, namespace: ns, index: index))
        }
        router.get("/v1/nodes") { request, _ in
            Self.raw(try await query(ClusterQuery(kind: .nodes), request))
        }
        router.get("/v1/allocations") { request, _ in
            Self.raw(try await query(ClusterQuery(kind: .allocations), request))
        }
    }

    static func raw(_ bytes: [UInt8]) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// Commits a cluster-state command through the leader; the Raft index it landed at.
    func commit(_ c: Command, notFoundCode: String = "rejected") async throws -> UInt64 {
        let answer: [UInt8]
        do { answer = try await agent.raft.apply(c.encode()) } catch { throw APIError(raft: error) }
        guard answer.first == 0 else {
            let why = String(decoding: answer.dropFirst(), as: UTF8.self)
            if why.contains("is not registered") { throw APIError(.notFound, notFoundCode, why) }
            throw APIError(.badRequest, "rejected", why)
        }
        var r = ByteReader(Array(answer.dropFirst()))
        return r.varint() ?? 0
    }

    /// A query about the job named in the path (and `?namespace`); 404 when it is not registered.
    func jobQuery(_ kind: ClusterQuery.Kind, _ request: Request, _ context: BasicRequestContext) async throws
        -> (data: [UInt8], namespace: String, id: String) {
        let id = context.parameters.get("id") ?? ""
        let ns = request.uri.queryParameters.get("namespace") ?? "default"
        let data = try await query(ClusterQuery(kind: kind, namespace: ns, id: id), request)
        guard data != Array("null".utf8) else { throw APIError(.notFound, "job_not_found", "no job \(id) in namespace \(ns)") }
        return (data, ns, id)
    }

    /// Linearizable through the leader unless `?stale`.
    func query(_ q: ClusterQuery, _ request: Request) async throws -> [UInt8] {
        let stale = request.uri.queryParameters.get("stale") != nil
        do { return try await agent.raft.read(q.encode(), stale: stale) } catch { throw APIError(raft: error) }
    }
}
