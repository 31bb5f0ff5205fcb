/// A parsed job file: mappings, sequences and scalars, each with the line it starts on, so that
/// every error can name the line and the field path.
public indirect enum DocumentNode: Sendable, Equatable {
    case scalar(String, quoted: Bool, line: Int)
    case mapping([(key: String, value: DocumentNode, line: Int)], line: Int)
    case sequence([DocumentNode], line: Int)
    case null(line: Int)

    public var line: Int {
        switch self {
        case .scalar(_, _, let l), .mapping(_, let l), .sequence(_, let l), .null(let l): l
        }
    }

    public static func == (a: DocumentNode, b: DocumentNode) -> Bool {
        switch (a, b) {
        case let (.scalar(x, qx, _), .scalar(y, qy, _)): x == y && qx == qy
        case let (.mapping(x, _), .mapping(y, _)):
            x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case let (.sequence(x, _), .sequence(y, _)): x == y
        case (.null, .null): true
        default: false
        }
    }

    /// What the node is, as error messages say it ("a mapping", "a list", …).
    public var kindName: String {
        switch self {
        case .scalar: "a value"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .null: "nothing"
        }
    }
}

/// A job file that could not be read as YAML or JSON.
public struct SyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}
