import API
import Executor
import FoundationEssentials
import HTTPTypes
import Hummingbird
import Primitives
import RaftNIO

/// One read of the cluster state as the API serves it: the answer, the index of the last
/// change it reflects, and how fresh it is — sent back as `X-Caravan-Index`,
/// `X-Caravan-KnownLeader` and `X-Caravan-LastContact` (milliseconds).
struct ClusterRead: Sendable {
    var index: UInt64
    var data: [UInt8]
    var knownLeader: Bool
    var lastContact: Duration

    var headers: HTTPFields {
        var h: HTTPFields = [.contentType: "application/json"]
        h[ClusterRead.indexHeader] = String(index)
        h[HTTPField.Name("X-Caravan-KnownLeader")!] = knownLeader ? "true" : "false"
        h[HTTPField.Name("X-Caravan-LastContact")!] = String(Int(lastContact / .milliseconds(1)))
        return h
    }

    static let indexHeader = HTTPField.Name("X-Caravan-Index")!
    static let writeIDHeader = HTTPField.Name(WriteID.header)!

    /// The answer as it came, with the read's headers.
    var response: Response {
        Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// Something derived from the answer, with the read's headers.
    func response(_ value: some Encodable) -> Response {
        JSONResponse.make(value, headers: headers)
    }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(data)) } catch {
            throw APIError(.badGateway, "bad_answer", "the leader sent an unreadable answer")
        }
    }

    var isNull: Bool { data == Array("null".utf8) }

    /// A list answer with only the namespace asked for (`?namespace=`, default `default`; `*`
    /// for all) and only what the caller may see on this route.
    func visible<T: Codable>(_ type: T.Type, _ namespace: KeyPath<T, String>, in asked: String = "*") async throws -> Response {
        let caller = try await Caller.current.fresh()
        guard !caller.identity.isManagement || asked != "*" else { return response }
        return response(try decode([T].self).filter { v in
            let ns = v[keyPath: namespace]
            return (asked == "*" || ns == asked) && caller.visible(namespace: ns)
        })
    }

    /// Splits a cluster query's answer: the index, then the JSON.
    static func split(_ bytes: [UInt8]) throws -> (index: UInt64, json: [UInt8]) {
        var r = ByteReader(bytes)
        guard let index = r.varint() else { throw APIError(.badGateway, "bad_answer", "the leader sent an unreadable answer") }
        return (index, Array(r.raw(r.remaining) ?? []))
    }

    /// The longest and the default wait of a blocking query.
    static let defaultWait: Duration = .seconds(300)

    /// `?wait=`: `30s`, `5m`, `250ms`, or plain seconds.
    static func parseWait(_ raw: String) -> Duration? {
        let units: [(String, Duration)] = [("ms", .milliseconds(1)), ("s", .seconds(1)), ("m", .seconds(60)), ("h", .seconds(3600))]
        // Anything past an hour is the longest wait anyway; capping first keeps huge numbers
        // from overflowing.
        // A number of any length (too long for an Int is simply long: the longest wait).
        func number(_ digits: Substring) -> Int? {
            guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return min(Int(digits) ?? Int.max, 3_600_000)
        }
        for (suffix, unit) in units where raw.hasSuffix(suffix) {
            return number(raw.dropLast(suffix.count)).map { unit * $0 }
        }
        return number(Substring(raw)).map { .seconds($0) }
    }
}

extension Agent {
    /// Commits a write through the leader. With `X-Caravan-Write-ID: CLIENT/SEQ` on the request
    /// it is applied at most once however often it is retried (``ClientSessions``).
    func propose(_ command: [UInt8], _ request: Request?) async throws -> [UInt8] {
        var bytes = command
        if let raw = request?.headers[ClusterRead.writeIDHeader] {
            guard let (client, seq) = ClientSessions.parseHeader(raw) else {
                throw APIError(.badRequest, "invalid_header", "X-Caravan-Write-ID must be CLIENT/SEQ: CLIENT is MS-RANDOM (the client's creation time in Unix milliseconds, a dash, 1-48 letters, digits, '-' or '_'), SEQ a number ≥ 1")
            }
            // Agents of an earlier version would skip a tagged write the others apply: tag only
            // when every member of the group can read it.
            if let old = await membersWithoutWriteIDs() {
                throw APIError(.conflict, "write_ids_unsupported", "agents \(old.joined(separator: ", ")) run a version without exactly-once writes; send the write without X-Caravan-Write-ID until they are upgraded")
            }
            let stamp = Executor.unixMillis()
            bytes = ClientSessions.wrap(client: client, seq: seq, stamp: stamp, command)
        }
        let answer: [UInt8]
        do { answer = try await raft.apply(bytes) } catch { throw APIError(raft: error) }
        if let (code, message) = ClientSessions.decodeRefusal(answer) {
            let status: HTTPResponse.Status = switch code {
            case "invalid_header": .badRequest
            case "limit_reached": .tooManyRequests
            case _ where code.hasSuffix("_not_found"): .notFound
            default: .conflict
            }
            throw APIError(status, code, message)
        }
        return answer
    }

    /// Raft members whose gossip metadata names a version before exactly-once writes (nil when
    /// there are none). A member gossip does not know yet counts as up to date only if it is
    /// this agent.
    func membersWithoutWriteIDs() async -> [String]? {
        let members = await raft.status().configuration.servers.map(\.id.rawValue)
        let versions = Dictionary(await gossip.members().map { ($0.name, NodeMetadata.decode($0.metadata)?.version ?? "") },
                                  uniquingKeysWith: { a, _ in a })
        let old = members.filter { !CaravanVersion.supportsWriteIDs(versions[$0] ?? "") }
        return old.isEmpty ? nil : old
    }

    /// Reads the cluster state the way the request asks: through the leader (linearizable) or
    /// from this agent's copy (`?stale`), and — with `?index=N` — not before something newer
    /// than N exists or `?wait` (default 5 minutes, at most 10) has passed.
    func read(_ q: ClusterQuery, _ request: Request) async throws -> ClusterRead {
        let params = request.uri.queryParameters
        let stale = try request.staleFlag()
        var minIndex: UInt64 = 0
        if let raw = params.get("index") {
            guard let n = UInt64(raw) else { throw APIError(.badRequest, "invalid_parameter", "index must be a non-negative integer (an X-Caravan-Index)") }
            minIndex = n
        }
        var wait = ClusterRead.defaultWait
        if let raw = params.get("wait") {
            guard let w = ClusterRead.parseWait(raw) else {
                throw APIError(.badRequest, "invalid_parameter", "wait must be a duration such as 30s, 5m or 500ms")
            }
            wait = w
        }
        return try await read(q, stale: stale, after: minIndex, wait: min(wait, config.limits.maxQueryWait), answerOnShutdown: true)
    }

    /// The same without a request: `after` 0 answers at once.
    /// With `answerOnShutdown` (HTTP clients), a blocking read ends with this agent's copy as soon
    /// as the agent starts shutting down; the agent's own loops (the node client) never act on
    /// such a possibly lagging copy and keep waiting until they are stopped.
    func read(_ q: ClusterQuery, stale: Bool = false, after minIndex: UInt64 = 0, wait: Duration = .zero,
              answerOnShutdown: Bool = false) async throws -> ClusterRead {
        var (index, json): (UInt64, [UInt8])
        do {
            if minIndex == 0 {
                (index, json) = try ClusterRead.split(try await raft.read(q.encode(), stale: stale))
            } else {
                let until = ContinuousClock.now + wait
                var after = minIndex
                let raft = self.raft, query = q.encode()
                while true {
                    let left = max(.zero, ContinuousClock.now.duration(to: until))
                    let since = after
                    let wait: @Sendable () async throws -> (applied: UInt64, answer: [UInt8]) = {
                        try await raft.read(query, stale: stale, after: since, changedAfter: minIndex, wait: left)
                    }
                    guard let (applied, bytes) = answerOnShutdown ? try await stopping.unlessTriggered(wait) : try await wait() else {
                        // Shutting down: answer with this agent's copy as it is now (the client
                        // sees an unchanged index, as when a wait runs out, and asks again) —
                        // read from the state machine itself, which Raft stopping cannot refuse.
                        (index, json) = try ClusterRead.split(try store.query(query))
                        break
                    }
                    (index, json) = try ClusterRead.split(bytes)
                    // Something this answer shows changed, or time is up; otherwise the group
                    // applied something unrelated: wait past that.
                    if index > minIndex || ContinuousClock.now >= until || Task.isCancelled { break }
                    after = max(after, applied)
                }
            }
        } catch let e as APIError {
            throw e
        } catch {
            throw APIError(raft: error)
        }
        let contact = stale ? await raft.leaderContact() : (true, .zero)
        return ClusterRead(index: index, data: json, knownLeader: contact.known, lastContact: contact.lastContact ?? .zero)
    }
}
