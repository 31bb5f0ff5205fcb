import API
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
import Hummingbird
import Synchronization

/// An API failure with a stable code; rendered as `{"error": {"code": ..., "message": ...}}`.
public struct APIError: Error, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    func response() -> Response {
        JSONResponse.make(ErrorBody(code: code, message: message), status: status)
    }
}

enum JSONResponse {
    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        var h = headers
        h[.contentType] = "application/json"
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Largest request body any route accepts.
let maxBodyBytes = 1 << 20

extension Request {
    /// A boolean query parameter: `true` or `false` (absent: `absent`); anything else is refused.
    func flag(_ name: String, absent: Bool) throws -> Bool {
        guard let raw = uri.queryParameters.get(name) else { return absent }
        switch raw {
        case "true": return true
        case "false": return false
        default: throw APIError(.badRequest, "invalid_parameter", "\(name) must be true or false")
        }
    }

    /// `?stale`: absent or `false` reads through the leader; present (empty) or `true` reads this
    /// agent's copy; anything else is refused.
    func staleFlag() throws -> Bool {
        if uri.queryParameters.get("stale") == "" { return true }
        return try flag("stale", absent: false)
    }
}

/// The routes' paths and methods, known once every route is registered: a path that exists
/// with other methods answers 405 with `Allow`, not 404.
final class RouteMethods: Sendable {
    private let table = Mutex<[(pattern: [Substring], methods: Set<String>)]>([])

    func record(_ routes: [(path: String, method: String)]) {
        var byPath: [String: Set<String>] = [:]
        for r in routes { byPath[r.path, default: []].insert(r.method) }
        table.withLock { t in t = byPath.map { (pattern: $0.key.split(separator: "/"), methods: $0.value) } }
    }

    /// The methods a path answers to (empty if none of the routes matches it): those of the
    /// most specific matching routes (most literal segments), as the router picks them —
    /// `/v1/acl/token/self` answers GET only, though `/v1/acl/token/{accessor}` takes more.
    func methods(for path: String) -> Set<String> {
        let parts = path.split(separator: "/")
        var out = Set<String>()
        var best = -1
        for (pattern, methods) in table.withLock({ $0 }) where Self.matches(pattern, parts) {
            let literal = Self.literalSegments(pattern)
            if literal > best { best = literal; out = [] }
            if literal == best { out.formUnion(methods) }
        }
        return out
    }

    /// The segments of a route pattern that are not captures or wildcards: the more, the more
    /// specific the route (as the router picks them).
    static func literalSegments(_ pattern: [Substring]) -> Int {
        pattern.filter { !$0.hasPrefix(":") && !$0.hasPrefix("{") && $0 != "**" && $0 != "*" }.count
    }

    static func matches(_ pattern: [Substring], _ parts: [Substring]) -> Bool {
        for (i, p) in pattern.enumerated() {
            if p == "**" { return parts.count > i }
            guard i < parts.count else { return false }
            if p.hasPrefix(":") || p.hasPrefix("{") || p == "*" { continue }
            if p != parts[i] { return false }
        }
        return pattern.count == parts.count
    }
}

/// Turns every thrown error into the JSON error shape, with a status that fits.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    var routes: RouteMethods? = nil

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            return e.response()
        } catch let e as HTTPError {
            switch e.status {
            case .notFound:
                if let allowed = routes?.methods(for: request.uri.path), !allowed.isEmpty {
                    var response = APIError(.methodNotAllowed, "method_not_allowed",
                                            "\(request.method) is not allowed on \(request.uri.path) (allowed: \(allowed.sorted().joined(separator: ", ")))").response()
                    response.headers[.allow] = allowed.sorted().joined(separator: ", ")
                    return response
                }
                return APIError(.notFound, "not_found", "no route for \(request.method) \(request.uri.path)").response()
            case .contentTooLarge:
                return APIError(.contentTooLarge, "request_too_large", "request body exceeds \(maxBodyBytes) bytes").response()
            case .methodNotAllowed:
                return APIError(.methodNotAllowed, "method_not_allowed", "\(request.method) is not allowed on \(request.uri.path)").response()
            default:
                return APIError(e.status, "http_\(e.status.code)", e.body ?? e.status.reasonPhrase).response()
            }
        } catch {
            return APIError(.internalServerError, "internal", "\(error)").response()
        }
    }
}

extension Request {
    /// Decodes a JSON body of at most `maxBodyBytes`; a clear 400 names what is wrong.
    mutating func decodeJSON<T: Decodable>(_ type: T.Type) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: maxBodyBytes)
        } catch {
            throw APIError(.contentTooLarge, "request_too_large", "request body exceeds \(maxBodyBytes) bytes")
        }
        guard buffer.readableBytes > 0 else { throw APIError(.badRequest, "invalid_body", "request body is empty; expected JSON") }
        do {
            let data = Data(buffer.readableBytesView)
            let value = try JSONDecoder().decode(T.self, from: data)
            // A field the type does not know (a typo, another tool's spelling) is refused, not
            // dropped: what was asked for must be what is stored.
            if let known = value as? any Encodable, let asked = try? JSONDecoder().decode(JSONShape.self, from: data),
               let shown = try? JSONDecoder().decode(JSONShape.self, from: JSONEncoder().encode(known)),
               let unknown = asked.unknownKey(against: shown, path: "") {
                throw APIError(.badRequest, "invalid_body", "request body: unknown field \"\(unknown.prefix(200))\"")
            }
            return value
        } catch let e as APIError {
            throw e
        } catch let DecodingError.keyNotFound(key, _) {
            throw APIError(.badRequest, "invalid_body", "request body: missing field \"\(key.stringValue)\"")
        } catch let DecodingError.typeMismatch(_, ctx) {
            let path = ctx.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError(.badRequest, "invalid_body", "request body: field \"\(path)\" has the wrong type")
        } catch {
            throw APIError(.badRequest, "invalid_body", "request body is not valid JSON")
        }
    }
}

/// Answers a request that carries `X-Caravan-Write-ID` with the same header, errors included:
/// a client retries a write only when the agent that answered honours write ids.
struct WriteIDEcho<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let id = request.headers[ClusterRead.writeIDHeader] else { return try await next(request, context) }
        var response = try await next(request, context)
        response.headers[ClusterRead.writeIDHeader] = id
        return response
    }
}

/// The keys of a JSON document, to tell which of a request's fields its type did not read.
indirect enum JSONShape: Decodable {
    case object([String: JSONShape]), array([JSONShape]), scalar, null

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        if let c = try? decoder.container(keyedBy: Key.self) {
            var fields: [String: JSONShape] = [:]
            for k in c.allKeys { fields[k.stringValue] = try c.decode(JSONShape.self, forKey: k) }
            self = .object(fields)
        } else if var u = try? decoder.unkeyedContainer() {
            var items: [JSONShape] = []
            while !u.isAtEnd { items.append(try u.decode(JSONShape.self)) }
            self = .array(items)
        } else {
            self = try decoder.singleValueContainer().decodeNil() ? .null : .scalar
        }
    }

    /// The path of the first field with a value in `self` that `known` lacks.
    func unknownKey(against known: JSONShape, path: String) -> String? {
        switch (self, known) {
        case (.object(let asked), .object(let kept)):
            for (k, v) in asked.sorted(by: { $0.key < $1.key }) {
                let p = path.isEmpty ? k : path + "." + k
                if case .null = v { continue }
                guard let other = kept[k] else { return p }
                if let deeper = v.unknownKey(against: other, path: p) { return deeper }
            }
        case (.array(let asked), .array(let kept)) where asked.count == kept.count:
            for (i, pair) in zip(asked, kept).enumerated() {
                if let deeper = pair.0.unknownKey(against: pair.1, path: path + "[\(i)]") { return deeper }
            }
        default: break
        }
        return nil
    }
}
