import Access
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
        router.post("/v1/jobs") { request, _ in
            try await registerJob(request, expectedID: nil)
        }
        router.post("/v1/jobs/plan") { request, _ in
            try await plan(request, expectedID: nil)
        }
        router.post("/v1/job/:id/plan") { request, context in
            try await plan(request, expectedID: context.parameters.get("id"))
        }
        router.post("/v1/job/:id") { request, context in
            try await registerJob(request, expectedID: context.parameters.get("id"))
        }
        router.post("/v1/node/:id/drain") { request, context in
            let id = context.parameters.get("id") ?? ""
            let enable = try request.flag("enable", absent: true)
            _ = try await commit(.nodeDrain(id: id, draining: enable), request, notFoundCode: "node_not_found")
            return JSONResponse.make(["node": id, "draining": enable ? "true" : "false"])
        }
        router.post("/v1/node/:id/eligibility") { request, context in
            let id = context.parameters.get("id") ?? ""
            guard let raw = request.uri.queryParameters.get("eligible"), raw == "true" || raw == "false" else {
                throw APIError(.badRequest, "invalid_parameter", "eligible must be true or false")
            }
            _ = try await commit(.nodeEligibility(id: id, eligibility: raw == "true" ? .eligible : .ineligible), request, notFoundCode: "node_not_found")
            return JSONResponse.make(["node": id, "eligibility": raw == "true" ? "eligible" : "ineligible"])
        }
        router.get("/v1/jobs") { request, _ in
            try await agent.read(ClusterQuery(kind: .jobs), request).visible(JobStatusView.self, \.namespace, in: AccessRules.namespace(request))
        }
        router.get("/v1/job/:id") { request, context in
            try await jobQuery(.job, request, context).read.response
        }
        router.get("/v1/job/:id/versions") { request, context in
            // Registry passwords never leave the cluster state (revert reads the versions itself).
            let read = try await jobQuery(.versions, request, context).read
            return read.response(try read.decode([JobVersionView].self).map { v in
                var v = v
                v.job = JobFile.redacted(v.job) ?? "{\"error\": \"the stored job could not be read to withhold its secrets\"}"
                return v
            })
        }
        router.get("/v1/job/:id/evaluations") { request, context in
            try await jobQuery(.jobEvaluations, request, context).read.response
        }
        router.post("/v1/job/:id/revert") { request, context in
            guard let raw = request.uri.queryParameters.get("version"), let version = Int(raw), version >= 0 else {
                let id = context.parameters.get("id") ?? ""
                throw APIError(.badRequest, "invalid_parameter", "version must be a version number (see `caravan job history \(id)`)")
            }
            let (read, ns, id) = try await jobQuery(.versions, request, context)
            let versions = try read.decode([JobVersionView].self)
            guard let target = versions.first(where: { $0.version == version }) else {
                throw APIError(.badRequest, "unknown_version", "job \(id) has no version \(version) (kept: \(versions.map { String($0.version) }.joined(separator: ", ")))")
            }
            // Registering the old definition again makes it the newest version.
            let old: Job
            do { old = try JobFile.parse(target.job, file: "version \(version)", stored: true) } catch {
                throw APIError(.internalServerError, "bad_version", "version \(version) of job \(id) cannot be read: \(error)")
            }
            let index = try await commit(.register(old), request)
            return JSONResponse.make(JobRegisterView(id: id, namespace: ns, index: index,
                                                     evaluationID: Evaluation.id(at: index, for: .init(ns, id))))
        }
        router.post("/v1/job/:id/promote") { request, context in
            let (read, ns, id) = try await jobQuery(.job, request, context)
            let st = try read.decode(JobStatusView.self)
            var version = st.version
            if let raw = request.uri.queryParameters.get("version") {
                guard let v = Int(raw), v >= 0, v <= Int(Int32.max) else { throw APIError(.badRequest, "invalid_parameter", "version must be a version number") }
                version = v
            }
            guard st.awaitingPromotion || version != st.version else {
                throw APIError(.badRequest, "nothing_to_promote",
                               "job \(id) version \(st.version) has no canaries waiting for promotion (it needs update.canary and a new version replacing running instances)")
            }
            let index = try await commit(.promote(namespace: ns, id: id, version: version), request, notFoundCode: "job_not_found")
            return JSONResponse.make(JobRegisterView(id: id, namespace: ns, index: index, version: version))
        }
        router.delete("/v1/job/:id") { request, context in
            let id = context.parameters.get("id") ?? ""
            let ns = request.uri.queryParameters.get("namespace") ?? "default"
            let purge = try request.flag("purge", absent: false)
            let index = try await commit(.deregisterJob(namespace: ns, id: id, purge: purge), request, notFoundCode: "job_not_found")
            return JSONResponse.make(JobRegisterView(id: id, namespace: ns, index: index,
                                                     evaluationID: purge ? nil : Evaluation.id(at: index, for: .init(ns, id))))
        }
        router.get("/v1/nodes") { request, _ in
            try await agent.read(ClusterQuery(kind: .nodes), request).response
        }
        router.get("/v1/node/:id") { request, context in
            let id = context.parameters.get("id") ?? ""
            let read = try await agent.read(ClusterQuery(kind: .node, id: id), request)
            guard !read.isNull else { throw APIError(.notFound, "node_not_found", "no node \(id) (see `caravan node status`)") }
            // The node's allocations: only those of namespaces the caller may read.
            let identity = try await Caller.current.fresh().identity
            guard !identity.isManagement else { return read.response }
            var view = try read.decode(NodeDetailView.self)
            view.allocations.removeAll { !identity.allows(.namespace($0.namespace, .readJob)) }
            return read.response(view)
        }
        router.get("/v1/allocations") { request, _ in
            try await agent.read(ClusterQuery(kind: .allocations), request).visible(AllocationView.self, \.namespace, in: AccessRules.namespace(request))
        }
        router.get("/v1/evaluations") { request, _ in
            try await agent.read(ClusterQuery(kind: .evaluations), request).visible(EvaluationView.self, \.namespace, in: AccessRules.namespace(request))
        }
        router.get("/v1/evaluation/:id") { request, context in
            let id = context.parameters.get("id") ?? ""
            let read = try await agent.read(ClusterQuery(kind: .evaluation, id: id), request)
            guard !read.isNull else { throw APIError(.notFound, "evaluation_not_found", "no evaluation \(id) (the last 10 per job are kept)") }
            try Caller.current.check(namespace: try read.decode(EvaluationView.self).namespace,
                                     hiding: APIError(.notFound, "evaluation_not_found", "no evaluation \(id) (the last 10 per job are kept)"))
            return read.response
        }
    }

    /// `POST /v1/jobs` (and `/v1/job/{id}`, which must name the same job): parse, commit, and
    /// create the evaluation the leader answers with placements.
    func registerJob(_ request: Request, expectedID: String?) async throws -> Response {
        let job = try await namespaced(try await Self.parseJob(request, expectedID: expectedID), request)
        try Caller.current.check(namespace: job.namespace)
        let jobs = agent.store.current.jobs
        if jobs.count >= agent.config.limits.maxJobs && jobs[ClusterState.JobKey(job.namespace, job.id)] == nil {
            throw APIError(.tooManyRequests, "limit_reached",
                           "the cluster holds \(jobs.count) jobs, the limit (\(agent.config.limits.maxJobs)); purge stopped jobs first (caravan job stop -purge)")
        }
        let index = try await commit(.register(job), request)
        let eval = Evaluation.id(at: index, for: .init(job.namespace, job.id))
        // Read back what the registration left (a new version, or the unchanged job).
        let st = try? await agent.read(ClusterQuery(kind: .job, namespace: job.namespace, id: job.id)).decode(JobStatusView.self)
        return JSONResponse.make(JobRegisterView(id: job.id, namespace: job.namespace, index: index, version: st?.version,
                                                 jobModifyIndex: st?.modifyIndex, evaluationID: eval))
    }

    func plan(_ request: Request, expectedID: String?) async throws -> Response {
        let job = try await namespaced(try await Self.parseJob(request, expectedID: expectedID), request)
        try Caller.current.check(namespace: job.namespace)
        var q = ClusterQuery(kind: .plan)
        q.text = JobFile.render(job)
        return try await agent.read(q).response
    }

    /// The job in the namespace the request names (`?namespace=`) when its file names none (or
    /// `default`); a file naming another is refused. The namespace must exist.
    func namespaced(_ job: Job, _ request: Request) async throws -> Job {
        var job = job
        if let asked = request.uri.queryParameters.get("namespace"), asked != job.namespace {
            guard job.namespace == Namespace.defaultName else {
                throw APIError(.badRequest, "invalid_job", "the job file names namespace \(job.namespace) but the request names \(asked)")
            }
            guard Namespace.isValidName(asked) else { throw APIError(.badRequest, "invalid_namespace", "namespace \"\(asked)\" must be 1-128 letters, digits, '-', '_' or '.'") }
            job.namespace = asked
        }
        if job.namespace != Namespace.defaultName {
            let read = try await agent.read(ClusterQuery(kind: .namespace, id: job.namespace))
            guard !read.isNull else {
                throw APIError(.badRequest, "namespace_not_found", "namespace \(job.namespace) does not exist (make it with `caravan namespace apply \(job.namespace)`)")
            }
        }
        // Refused here, against this agent's copy, rather than by the log (which checks again,
        // for a rule set meanwhile): a refused job costs no log entry.
        if let why = agent.store.current.driverRefusal(job) { throw APIError(.badRequest, "driver_not_allowed", why) }
        return job
    }

    static func parseJob(_ request: Request, expectedID: String?) async throws -> Job {
        let buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: maxBodyBytes) } catch {
            throw APIError(.contentTooLarge, "request_too_large", "request body exceeds \(maxBodyBytes) bytes")
        }
        // Bytes that are not UTF-8 would be replaced silently (and run as something else).
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self) else {
            throw APIError(.badRequest, "invalid_job", "the job file is not valid UTF-8")
        }
        let job: Job
        do { job = try JobFile.parse(text, file: "request") } catch let e as JobFileError {
            throw APIError(.badRequest, "invalid_job", e.problems.map(\.description).joined(separator: "\n"))
        } catch {
            throw APIError(.badRequest, "invalid_job", "\(error)")
        }
        if let expectedID, expectedID != job.id {
            throw APIError(.badRequest, "invalid_job", "the path names job \(expectedID) but the job file defines \(job.id)")
        }
        return job
    }


    /// Commits a cluster-state command through the leader; the Raft index it landed at.
    func commit(_ c: Command, _ request: Request?, notFoundCode: String = "rejected") async throws -> UInt64 {
        try await commitRaw(c.encode(), request, notFoundCode: notFoundCode)
    }

    /// Commits an encoded state machine command whose answer is a status byte and an index.
    func commitRaw(_ command: [UInt8], _ request: Request?, notFoundCode: String = "rejected") async throws -> UInt64 {
        let answer = try await agent.propose(command, request)
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
        -> (read: ClusterRead, namespace: String, id: String) {
        let id = context.parameters.get("id") ?? ""
        let ns = request.uri.queryParameters.get("namespace") ?? "default"
        let read = try await agent.read(ClusterQuery(kind: kind, namespace: ns, id: id), request)
        guard !read.isNull else { throw APIError(.notFound, "job_not_found", "no job \(id) in namespace \(ns)") }
        return (read, ns, id)
    }
}
