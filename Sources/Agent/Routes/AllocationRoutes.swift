import API
import Executor
import FoundationEssentials
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1

/// `/v1/allocation/{id}`, `/v1/job/{id}/allocations`, and the task logs an allocation's node
/// serves (`/v1/client/allocation/{id}/logs/{task}`; any agent forwards to that node).
struct AllocationRoutes {
    let agent: Agent
    var jobs: JobRoutes { JobRoutes(agent: agent) }

    func register(on router: Router<BasicRequestContext>) {
        registerExec(on: router)
        registerInteractiveExec(on: router)
        router.get("/v1/allocation/:id") { request, context in
            try await allocation(context.parameters.get("id") ?? "", request).read.response
        }
        router.get("/v1/job/:id/allocations") { request, context in
            let read = try await jobs.jobQuery(.job, request, context).read
            return read.response(try read.decode(JobStatusView.self).allocations)
        }
        router.get("/v1/client/allocation/:id/logs/:task") { request, context in
            let id = context.parameters.get("id") ?? ""
            let task = context.parameters.get("task") ?? ""
            let q = request.uri.queryParameters
            let stderr = q.get("type").map { $0 == "stderr" } ?? false
            if let t = q.get("type"), t != "stdout" && t != "stderr" {
                throw APIError(.badRequest, "invalid_parameter", "type must be stdout or stderr")
            }
            guard let offset = Int(q.get("offset") ?? "0") else { throw APIError(.badRequest, "invalid_parameter", "offset must be a number of bytes") }
            guard let limit = Int(q.get("limit") ?? "1048576"), limit > 0 else { throw APIError(.badRequest, "invalid_parameter", "limit must be a positive number of bytes") }
            let follow = try request.flag("follow", absent: false)
            let view = try await allocation(id, request).view
            guard view.taskStates[task] != nil || view.clientStatus == "pending" else {
                throw APIError(.notFound, "task_not_found", "allocation \(view.id.prefix(8)) has no task \(task) (tasks: \(view.taskStates.keys.sorted().joined(separator: ", ")))")
            }
            if view.node != agent.config.name {
                return try await follow ? forwardStream(to: view.node, request) : forward(to: view.node, request)
            }
            guard let files = await agent.executor.logFiles(allocation: view.id, task: task, stderr: stderr) else {
                throw APIError(.notFound, "logs_not_found", "no logs of task \(task) of allocation \(view.id.prefix(8)) on node \(agent.config.name)")
            }
            let (bytes, start, total) = LogRotation.read(files, offset: offset, length: min(limit, 4 << 20))
            var headers: HTTPFields = [.contentType: "application/octet-stream"]
            headers[HTTPField.Name("X-Caravan-Log-Offset")!] = String(start)
            headers[HTTPField.Name("X-Caravan-Log-Size")!] = String(total)
            guard follow else {
                headers[HTTPField.Name("X-Caravan-Task-Finished")!] = view.taskStates[task]?.state == "dead" ? "true" : "false"
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            }
            let slot = try agent.logFollows.hold()
            return Response(status: .ok, headers: headers, body: followBody(view.id, task, stderr: stderr, first: bytes, at: start, slot: slot))
        }
    }

    /// The output from `first` on, then whatever the task writes, until it has ended and all
    /// is sent (or the client goes away).
    func followBody(_ allocation: String, _ task: String, stderr: Bool, first: [UInt8], at start: Int,
                    slot: ConcurrencyLimit.Slot) -> ResponseBody {
        let executor = agent.executor
        let stopping = agent.stopping
        let idle = min(StreamEnd.followIdle, agent.config.limits.maxQueryWait)
        return ResponseBody { writer in
            slot.take()
            var position = start + first.count
            if !first.isEmpty { try await writer.write(ByteBuffer(bytes: first)) }
            // Writing is how a client that went away is noticed: a quiet follow ends after a while
            // (the client resumes it), so its slot never outlives its client by long.
            var lastOutput = ContinuousClock.now
            while !Task.isCancelled {
                if stopping.isTriggered {
                    try await writer.finish(StreamEnd.shutdownTrailers)
                    return
                }
                if ContinuousClock.now - lastOutput >= idle {
                    try await writer.finish(StreamEnd.idleTrailers)
                    return
                }
                let files = await executor.logFiles(allocation: allocation, task: task, stderr: stderr) ?? []
                let ended = await executor.taskHasEnded(allocation: allocation, task: task)
                let (bytes, at, total) = LogRotation.read(files, offset: position, length: 256 << 10)
                if !bytes.isEmpty {
                    try await writer.write(ByteBuffer(bytes: bytes))
                    position = at + bytes.count
                    lastOutput = .now
                    continue
                }
                // Truncated by rotation: carry on from its new end.
                if total < position { position = total }
                if ended { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            try await writer.finish(nil)
        }
    }

    func registerExec(on router: Router<BasicRequestContext>) {
        router.post("/v1/client/allocation/:id/exec/:task") { request, context in
            let task = context.parameters.get("task") ?? ""
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: maxBodyBytes) } catch {
                throw APIError(.contentTooLarge, "request_too_large", "request body exceeds \(maxBodyBytes) bytes")
            }
            let req: ExecRequest
            do { req = try JSONDecoder().decode(ExecRequest.self, from: Data(buffer: body)) } catch {
                throw APIError(.badRequest, "invalid_body", "expected {\"command\": [\"program\", \"arg\", …], \"timeout\": seconds}")
            }
            guard !req.command.isEmpty, !req.command[0].isEmpty else { throw APIError(.badRequest, "invalid_body", "command must name a program") }
            // A NUL would cut the argument short where the kernel reads it.
            guard req.command.allSatisfy({ !$0.utf8.contains(0) }) else { throw APIError(.badRequest, "invalid_body", "command arguments may not contain NUL") }
            let timeout = min(300, max(1, req.timeout ?? 30))
            let (_, view) = try await allocation(context.parameters.get("id") ?? "", request)
            if view.node != agent.config.name {
                return try await forward(to: view.node, request, body: Array(buffer: body))
            }
            try agent.execSessions.acquire()
            defer { agent.execSessions.release() }
            do {
                let (code, output) = try await agent.executor.execute(allocation: view.id, task: task, command: req.command,
                                                                      timeout: .milliseconds(Int64(timeout * 1000)))
                return JSONResponse.make(ExecResultView(exitCode: code, output: output))
            } catch {
                throw APIError(.badRequest, "task_not_running", "\(error)")
            }
        }
    }

    /// `caravan alloc exec -i [-t]`: a command in a running task, its input and output streamed
    /// both ways as `ExecFrame`s (see there) until it ends.
    func registerInteractiveExec(on router: Router<BasicRequestContext>) {
        router.post("/v1/client/allocation/:id/exec/:task/stream") { request, context in
            let task = context.parameters.get("task") ?? ""
            let q = request.uri.queryParameters
            let command = q.getAll("command").map { String($0) }
            guard let first = command.first, !first.isEmpty else {
                throw APIError(.badRequest, "invalid_parameter", "name the command: ?command=PROGRAM&command=ARG…")
            }
            guard command.allSatisfy({ !$0.utf8.contains(0) }) else {
                throw APIError(.badRequest, "invalid_parameter", "command arguments may not contain NUL")
            }
            let tty = try request.flag("tty", absent: false)
            guard let rows = UInt16(q.get("rows") ?? "24"), let columns = UInt16(q.get("columns") ?? "80"), rows > 0, columns > 0 else {
                throw APIError(.badRequest, "invalid_parameter", "rows and columns must be terminal sizes (1–65535)")
            }
            let (_, view) = try await allocation(context.parameters.get("id") ?? "", request)
            if view.node != agent.config.name { return try await forwardStream(to: view.node, request, duplex: true) }
            let session: ExecSession
            // Reserve the slot first (refused with 429 before anything starts), then tie it to the
            // session: if the answer is dropped unsent, the command is ended and the slot freed.
            try agent.execSessions.acquire()
            do { session = try await agent.executor.interactive(allocation: view.id, task: task, command: command, tty: tty, rows: rows, columns: columns) } catch {
                agent.execSessions.release()
                throw APIError(.badRequest, "task_not_running", "\(error)")
            }
            let slot = ConcurrencyLimit.Slot(limit: agent.execSessions, whenDropped: {
                session.terminate()
                session.finish()
            })
            let body = request.body
            var headers = HTTPFields()
            headers[.contentType] = "application/vnd.caravan.exec-stream"
            let stopping = agent.stopping
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                // The agent shutting down ends the session (its pty would go with the agent).
                let registration = stopping.onTrigger { session.terminate() }
                defer { registration.cancelled() }
                slot.take()
                let input = Task {
                    var parser = ExecFrame.Parser()
                    do {
                        for try await piece in body {
                            for frame in try parser.feed(Array(buffer: piece)) {
                                switch frame {
                                case .stdin(let bytes): session.write(bytes)
                                case .stdinClosed: session.closeInput()
                                case .resize(let r, let c): session.resize(rows: r, columns: c)
                                default: break
                                }
                            }
                        }
                    } catch {
                        // The client's side broke off (or sent garbage): the command goes.
                        if !Task.isCancelled { session.terminate() }
                    }
                }
                defer { input.cancel(); session.finish() }
                do {
                    for await (kind, bytes) in session.output() {
                        try await writer.write(ByteBuffer(bytes: (kind == .stdout ? ExecFrame.stdout(bytes) : .stderr(bytes)).encode()))
                    }
                    let status = await session.wait()
                    let last: ExecFrame = stopping.isTriggered ? .error(StreamEnd.shutdownMessage)
                        : .exited(code: Int32(truncatingIfNeeded: status.code))
                    try await writer.write(ByteBuffer(bytes: last.encode()))
                    try await writer.finish(nil)
                } catch {
                    // The client went away: so does the command.
                    session.terminate()
                    throw error
                }
            })
        }
    }

    /// The allocation by id or unique prefix; 404 when there is none.
    func allocation(_ id: String, _ request: Request) async throws -> (read: ClusterRead, view: AllocationView) {
        let read = try await agent.read(ClusterQuery(kind: .allocation, id: id), request)
        guard !read.isNull else { throw APIError(.notFound, "allocation_not_found", "no allocation \(id)") }
        let view = try read.decode(AllocationView.self)
        try Caller.current.check(namespace: view.namespace, hiding: APIError(.notFound, "allocation_not_found", "no allocation \(id)"))
        return (read, view)
    }

    /// A client for the agent named `node` (its HTTP address comes from gossip), carrying the
    /// caller's token: the node checks the caller, never this agent.
    func client(for node: String, _ request: Request) async throws -> CaravanClient {
        guard let m = await agent.gossip.members().first(where: { $0.name == node }), m.status.isUp,
              let meta = NodeMetadata.decode(m.metadata) else {
            throw APIError(.serviceUnavailable, "node_unreachable", "node \(node), which runs the allocation, is not alive")
        }
        do {
            let scheme = agent.peerTLS == nil ? "http" : "https"
            var client = try CaravanClient(address: "\(scheme)://\(m.address.host):\(meta.httpPort)", timeout: .seconds(10), tls: agent.peerTLS)
            client.token = request.headers[AccessRules.tokenHeader]
            return client
        } catch {
            throw APIError(.serviceUnavailable, "node_unreachable", error.message)
        }
    }

    /// The same request, streamed through from the allocation's node as it answers.
    /// With `duplex`, the request's own body is streamed up to the node as it arrives (an
    /// interactive exec) while the answer streams back.
    func forwardStream(to node: String, _ request: Request, duplex: Bool = false) async throws -> Response {
        let client = try await client(for: node, request)
        let path = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
        let (upload, pump): (AsyncStream<[UInt8]>?, Task<Void, Never>?) = {
            guard duplex else { return (nil, nil) }
            let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
            let body = request.body
            let pump = Task {
                do { for try await piece in body { continuation.yield(Array(buffer: piece)) } } catch {}
                continuation.finish()
            }
            return (stream, pump)
        }()
        let upstream: CaravanClient.Stream
        do { upstream = try await client.stream(path, method: duplex ? .POST : .GET, upload: upload) } catch {
            pump?.cancel()
            if case .api(let status, let code) = error.code { throw APIError(.init(code: status), code, error.message) }
            throw APIError(.serviceUnavailable, "node_unreachable", "node \(node): \(error.message)")
        }
        let body = upstream.body
        let stopping = agent.stopping
        return Response(status: .ok, headers: Self.relayed(upstream.headers), body: ResponseBody { writer in
            // This agent shutting down closes the upstream; the node's own shutdown arrives as
            // its end-of-stream trailer. Either way the client gets a clean end that says so.
            let registration = stopping.onTrigger { upstream.close() }
            defer { pump?.cancel(); registration.cancelled() }
            do {
                for try await piece in body { try await writer.write(ByteBuffer(bytes: piece)) }
            } catch let e as ClientError where e.isShutdown || stopping.isTriggered {
                if duplex { try await writer.write(ByteBuffer(bytes: ExecFrame.error(StreamEnd.shutdownMessage).encode())) }
                try await writer.finish(duplex ? nil : StreamEnd.shutdownTrailers)
                return
            } catch is StreamEnd.Idle {
                // The node ended a quiet follow: so does this relay, the same way.
                try await writer.finish(StreamEnd.idleTrailers)
                return
            }
            try await writer.finish(nil)
        })
    }

    /// Passes the request to the agent named `node` and its answer back.
    func forward(to node: String, _ request: Request, body: [UInt8]? = nil) async throws -> Response {
        let client = try await client(for: node, request)
        let path = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
        let r: CaravanClient.Response
        do { r = try await client.send(body == nil ? .GET : .POST, path, body: body) } catch {
            throw APIError(.serviceUnavailable, "node_unreachable", "node \(node): \(error.message)")
        }
        return Response(status: .init(code: r.status), headers: Self.relayed(r.headers), body: .init(byteBuffer: ByteBuffer(bytes: r.body)))
    }

    /// The headers of another agent's answer passed on: its `X-Caravan-*` ones and the content type.
    static func relayed(_ fields: [(String, String)]) -> HTTPFields {
        var headers = HTTPFields()
        for (k, v) in fields {
            if let name = HTTPField.Name(k), k.lowercased().hasPrefix("x-caravan") || k.lowercased() == "content-type" { headers[name] = v }
        }
        return headers
    }
}
