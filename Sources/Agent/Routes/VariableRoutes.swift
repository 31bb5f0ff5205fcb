import Access
import API
import FoundationEssentials
import HTTPTypes
import Keyring
import Hummingbird
import Primitives
import RaftNIO

/// `/v1/var/{path}` and `/v1/vars`: the replicated variable store. Writes on any agent go
/// through the Raft leader; reads are linearizable unless `?stale` (served from this agent's
/// own copy when it has one).
struct VariableRoutes {
    let agent: Agent

    func register(on router: Router<BasicRequestContext>) {
        router.get("/v1/var/**") { request, context in
            let path = try Self.path(context)
            let stale = try request.staleFlag()
            let items = try await read(VariableStore.get(path), stale: stale)
            guard let (p, item) = items.first else {
                throw APIError(.notFound, "variable_not_found", "no variable at \(path)")
            }
            return JSONResponse.make(VariableView(path: p, value: try await open(item.value), createIndex: item.createIndex, modifyIndex: item.modifyIndex),
                                     headers: [HTTPField.Name("X-Caravan-Index")!: "\(item.modifyIndex)"])
        }
        router.get("/v1/vars") { request, _ in
            let prefix = request.uri.queryParameters.get("prefix") ?? ""
            let stale = try request.staleFlag()
            let caller = Caller.current.identity
            let items = try await read(VariableStore.list(prefix: prefix), stale: stale).filter { caller.variableLevel($0.0).allows(.read) }
            var views: [VariableView] = []
            for (p, item) in items {
                views.append(VariableView(path: p, value: try await open(item.value), createIndex: item.createIndex, modifyIndex: item.modifyIndex))
            }
            return JSONResponse.make(views)
        }
        router.put("/v1/var/**") { request, context in
            var request = request
            let path = try Self.path(context)
            let body: VariableWrite
            do {
                body = try await request.decodeJSON(VariableWrite.self)
            } catch let e as APIError {
                throw e
            }
            guard body.value.utf8.count <= VariableStore.maxValueBytes else {
                throw APIError(.badRequest, "value_too_large", "value is \(body.value.utf8.count) bytes; the limit is \(VariableStore.maxValueBytes)")
            }
            let usage = agent.store.variables.usage(replacing: path)
            if usage.count >= agent.config.limits.maxVariables && !usage.exists {
                throw APIError(.tooManyRequests, "limit_reached", "the cluster holds \(usage.count) variables, the limit; delete some first")
            }
            if usage.bytes + path.utf8.count + body.value.utf8.count > agent.config.limits.maxVariableBytes {
                throw APIError(.tooManyRequests, "limit_reached",
                               "variables would take more than \(agent.config.limits.maxVariableBytes) bytes (paths and values), the limit; delete some first")
            }
            let key: Keyring?
            do { key = try await agent.cipher.key(agent.raft) } catch let e as VariableCipher.Failure {
                throw APIError(.internalServerError, "variable_key_unavailable", e.description)
            } catch { throw APIError(raft: error) }
            let answer = try await agent.propose(VariableStore.put(path, agent.cipher.seal(body.value, key)), request)
            let item: VariableStore.Item
            if answer.first == 0, let (_, full) = VariableStore.decodeItems(Array(answer.dropFirst()))?.first {
                item = VariableStore.Item(value: body.value, createIndex: full.createIndex, modifyIndex: full.modifyIndex)  // an older leader answers with the whole item
            } else {
                var r = ByteReader(answer)
                guard r.byte() == 0, let created = r.varint(), let modified = r.varint(), r.atEnd else {
                    throw APIError(.internalServerError, "apply_failed", "the state machine refused the write")
                }
                item = VariableStore.Item(value: body.value, createIndex: created, modifyIndex: modified)
            }
            return JSONResponse.make(VariableView(path: path, value: item.value, createIndex: item.createIndex, modifyIndex: item.modifyIndex),
                                     headers: [HTTPField.Name("X-Caravan-Index")!: "\(item.modifyIndex)"])
        }
        router.delete("/v1/var/**") { request, context in
            let path = try Self.path(context)
            let answer = try await agent.propose(VariableStore.delete(path), request)
            guard answer.count == 2, answer[0] == 0 else {
                throw APIError(.internalServerError, "apply_failed", "the state machine refused the delete")
            }
            guard answer[1] == 1 else { throw APIError(.notFound, "variable_not_found", "no variable at \(path)") }
            return JSONResponse.make(["deleted": true])
        }
    }

    /// A stored value as written.
    func open(_ stored: String) async throws -> String {
        do { return try await agent.cipher.open(stored, agent.raft) } catch let e as VariableCipher.Failure {
            throw APIError(.internalServerError, "variable_unreadable", e.description)
        } catch { throw APIError(raft: error) }
    }

    func read(_ query: [UInt8], stale: Bool) async throws -> [(String, VariableStore.Item)] {
        let bytes: [UInt8]
        do { bytes = try await agent.raft.read(query, stale: stale) } catch { throw APIError(raft: error) }
        guard let items = VariableStore.decodeItems(bytes) else {
            throw APIError(.badGateway, "bad_answer", "the leader sent an unreadable answer")
        }
        return items
    }

    static func percentDecoded(_ s: String) -> String? {
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                out.append(v)
                it = it.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    /// The variable path from the URL: 1-512 bytes of letters, digits and `-_./`, no empty segment.
    static func path(_ context: BasicRequestContext) throws -> String {
        let raw = context.parameters.getCatchAll().joined(separator: "/")
        let path = Self.percentDecoded(raw) ?? raw
        guard !path.isEmpty, path.utf8.count <= VariableStore.maxPathBytes,
              path.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_./".contains($0)) }),
              !path.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            throw APIError(.badRequest, "invalid_path",
                           "variable path \"\(raw)\" must be 1-\(VariableStore.maxPathBytes) letters, digits, '-', '_', '.' in '/'-separated segments")
        }
        return path
    }
}
