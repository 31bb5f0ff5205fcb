/// Everything wrong with a job file, each problem with its line and field path, e.g.
/// `web.yaml:14: groups[0].tasks[1].resources.memory: must be > 0`.
public struct JobFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var line: Int
        public var path: String
        public var message: String
        public var description: String { path.isEmpty ? "line \(line): \(message)" : "line \(line): \(path): \(message)" }
    }

    public var file: String
    public var problems: [Problem]

    public var description: String {
        problems.map { p in
            "\(file):\(p.line): " + (p.path.isEmpty ? p.message : "\(p.path): \(p.message)")
        }.joined(separator: "\n")
    }
}
