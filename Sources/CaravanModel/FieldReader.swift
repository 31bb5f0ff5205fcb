/// Walks a parsed job file with the field path in hand, collecting every problem instead of
/// stopping at the first. Unknown keys are problems too, with a suggestion when one is close.
final class Problems {
    var list: [JobFileError.Problem] = []
    /// Reading text the cluster stored earlier (log replay, snapshots, nodes): values past a
    /// bound that an earlier version accepted are clamped to it, not refused, so every replica
    /// still reads the same jobs and nothing overflows.
    let stored: Bool
    init(stored: Bool = false) { self.stored = stored }
    func add(_ line: Int, _ path: String, _ message: String) { list.append(.init(line: line, path: path, message: message)) }
}

struct FieldReader {
    let node: DocumentNode
    let path: String
    let problems: Problems

    func child(_ key: String) -> String { path.isEmpty ? key : path + "." + key }
    func fail(_ message: String) { problems.add(node.line, path, message) }

    /// The entries of a mapping; checks that no key outside `known` is present.
    func mapping(known: [String]) -> MappingReader? {
        switch node {
        case .mapping(let entries, _):
            for e in entries where !known.contains(e.key) {
                let hint = Self.closest(e.key, in: known).map { " (did you mean \($0)?)" } ?? ""
                problems.add(e.line, child(e.key), "unknown key\(hint)")
            }
            return MappingReader(entries: entries, reader: self)
        case .null: return MappingReader(entries: [], reader: self)
        default:
            fail("expected a mapping of keys, found \(node.kindName)")
            return nil
        }
    }

    func list() -> [FieldReader] {
        switch node {
        case .sequence(let items, _):
            return items.enumerated().map { FieldReader(node: $1, path: "\(path)[\($0)]", problems: problems) }
        case .null: return []
        default:
            fail("expected a list, found \(node.kindName)")
            return []
        }
    }

    var scalar: String? {
        switch node {
        case .scalar(let s, _, _): return s
        case .null: return nil
        default:
            fail("expected a single value, found \(node.kindName)")
            return nil
        }
    }

    func string(nonEmpty: Bool = true) -> String? {
        guard let s = scalar else { return nil }
        if nonEmpty && s.isEmpty { fail("must not be empty"); return nil }
        return s
    }

    func int(_ range: ClosedRange<Int>) -> Int? {
        guard let s = scalar else { return nil }
        guard let v = Int(s) else { fail("\"\(s)\" is not a whole number"); return nil }
        guard range.contains(v) else {
            fail(range.upperBound == Int.max ? "must be ≥ \(range.lowerBound)" : "must be between \(range.lowerBound) and \(range.upperBound)")
            return nil
        }
        return v
    }

    var bool: Bool? {
        guard let s = scalar else { return nil }
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: fail("\"\(s)\" is not true or false"); return nil
        }
    }

    func oneOf<E: RawRepresentable & CaseIterable>(_ type: E.Type) -> E? where E.RawValue == String {
        guard let s = scalar else { return nil }
        guard let v = E(rawValue: s) else {
            fail("\"\(s)\" is not one of \(E.allCases.map(\.rawValue).joined(separator: ", "))")
            return nil
        }
        return v
    }

    var duration: Duration? {
        guard let s = scalar else { return nil }
        guard let d = Units.duration(s, clamp: problems.stored) else { fail("\"\(s)\" is not a duration such as 500ms, 10s, 5m, 1h30m, of at most 365d"); return nil }
        return d
    }

    var cpu: Int? {
        guard let s = scalar else { return nil }
        guard let v = Units.millicores(s, clamp: problems.stored) else { fail("\"\(s)\" is not a CPU amount such as 250m, 0.5 or 2, of at most 1000 cores"); return nil }
        guard v > 0 else { fail("must be > 0"); return nil }
        return v
    }

    var mebibytes: Int? {
        guard let s = scalar else { return nil }
        guard let v = Units.mebibytes(s, clamp: problems.stored) else { fail("\"\(s)\" is not a size such as 64Mi, 1Gi or 512 (MiB), of at most 16Ti"); return nil }
        guard v > 0 else { fail("must be > 0"); return nil }
        return v
    }

    /// A list of strings; an item that is empty, `~` or `null` is refused (dropping it would shift
    /// the rest, an argument list most of all): quote it to mean the text.
    func strings() -> [String] {
        list().compactMap { item in
            if case .null = item.node {
                item.fail("is null (an empty value, ~ or null); write \"\" or quote the text")
                return nil
            }
            return item.string(nonEmpty: false)
        }
    }

    func stringMap() -> [String: String] {
        guard case .mapping(let entries, _) = node else {
            if case .null = node { return [:] }
            fail("expected a mapping of names to values, found \(node.kindName)")
            return [:]
        }
        var out: [String: String] = [:]
        for e in entries {
            let r = FieldReader(node: e.value, path: child(e.key), problems: problems)
            // `KEY:` with nothing after it is the empty string, not a missing entry.
            if case .null = r.node { out[e.key] = ""; continue }
            if let v = r.string(nonEmpty: false) { out[e.key] = v }
        }
        return out
    }

    /// The known key within edit distance 2, if any.
    static func closest(_ key: String, in known: [String]) -> String? {
        // A suggestion is for a slip of a letter or two; a long key is no typo of a known one.
        guard key.count <= 64 else { return nil }
        let k = Array(key.lowercased())
        var best: (String, Int)?
        for c in known {
            let d = distance(k, Array(c.lowercased()))
            if d <= 2, best == nil || d < best!.1 { best = (c, d) }
        }
        return best?.0
    }

    static func distance(_ a: [Character], _ b: [Character]) -> Int {
        var prev = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var cur = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(1, b.count) where !b.isEmpty {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return a.isEmpty ? b.count : prev[b.count]
    }
}

struct MappingReader {
    let entries: [(key: String, value: DocumentNode, line: Int)]
    let reader: FieldReader

    subscript(_ key: String) -> FieldReader? {
        entries.first { $0.key == key }.map { FieldReader(node: $0.value, path: reader.child(key), problems: reader.problems) }
    }

    func has(_ key: String) -> Bool { entries.contains { $0.key == key } }

    func required(_ key: String) -> FieldReader? {
        guard let r = self[key] else {
            reader.problems.add(reader.node.line, reader.child(key), "is required")
            return nil
        }
        if case .null = r.node { r.fail("is required"); return nil }
        return r
    }
}

/// Durations, CPU and sizes as people write them.
public enum Units {
    /// The longest duration a job file may give (every field): 365 days.
    public static let maxDuration: Duration = .seconds(365 * 86400)
    /// The most CPU one task may reserve: 1,000 cores.
    public static let maxMillicores = 1_000_000
    /// The largest size a job file may give: 16 TiB.
    public static let maxMebibytes = 16 << 20

    /// `500ms`, `10s`, `5m`, `1h30m`, `2h`, `1d`; a bare number is seconds. Nil when malformed or
    /// longer than ``maxDuration`` (checked as it adds up, so no value can overflow).
    /// With `clamp`, a well-formed value past the bound is the bound.
    public static func duration(_ s: String, clamp: Bool = false) -> Duration? {
        let maxMs = Int(maxDuration.components.seconds) * 1000
        if !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }) {
            if let n = Int(s), n <= maxMs / 1000 { return .seconds(n) }
            return clamp ? maxDuration : nil
        }
        var saturated = false
        var totalMs = 0
        var digits = ""
        var i = s.startIndex
        var any = false
        while i < s.endIndex {
            let c = s[i]
            if c.isASCII && c.isNumber { digits.append(c); i = s.index(after: i); continue }
            guard !digits.isEmpty else { return nil }
            let n = digits.count <= 18 ? Int(digits)! : Int.max
            var unit = String(c)
            let next = s.index(after: i)
            if c == "m", next < s.endIndex, s[next] == "s" { unit = "ms"; i = next }
            let size: Int
            switch unit {
            case "ms": size = 1
            case "s": size = 1000
            case "m": size = 60_000
            case "h": size = 3_600_000
            case "d": size = 86_400_000
            default: return nil
            }
            let (part, o1) = n.multipliedReportingOverflow(by: size)
            let (sum, o2) = totalMs.addingReportingOverflow(part)
            if o1 || o2 || sum > maxMs {
                guard clamp else { return nil }
                saturated = true
            } else {
                totalMs = sum
            }
            digits = ""
            any = true
            i = s.index(after: i)
        }
        guard any && digits.isEmpty else { return nil }
        return saturated ? maxDuration : .milliseconds(totalMs)
    }

    /// `250m` (millicores), `0.25` or `2` (cores); nil when malformed or over ``maxMillicores``.
    public static func millicores(_ s: String, clamp: Bool = false) -> Int? {
        func digits(_ t: Substring) -> Bool { t.allSatisfy { $0.isASCII && $0.isNumber } }
        if s.hasSuffix("m") {
            let n = s.dropLast()
            guard !n.isEmpty, digits(n) else { return nil }
            if let v = Int(n), v <= maxMillicores { return v }
            return clamp ? maxMillicores : nil
        }
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, digits(parts[0]), !(parts[0].isEmpty && parts.count == 1) else { return nil }
        var fraction = 0
        if parts.count == 2 {
            let frac = parts[1]
            guard !frac.isEmpty, frac.count <= 3, digits(frac), let f = Int(frac.padding(toLength: 3)) else { return nil }
            fraction = f
        }
        guard let whole = Int(parts[0].isEmpty ? "0" : parts[0]), whole <= maxMillicores / 1000 else { return clamp ? maxMillicores : nil }
        let millis = whole * 1000 + fraction
        return millis <= maxMillicores ? millis : (clamp ? maxMillicores : nil)
    }

    /// `64Mi`, `1Gi`, `1024Ki`, or a number of MiB; nil when malformed or over ``maxMebibytes``.
    public static func mebibytes(_ s: String, clamp: Bool = false) -> Int? {
        if !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }) {
            if let v = Int(s), v <= maxMebibytes { return v }
            return clamp ? maxMebibytes : nil
        }
        let units: [(String, Double)] = [("Ki", 1.0 / 1024), ("Mi", 1), ("Gi", 1024), ("Ti", 1024 * 1024), ("M", 1), ("G", 1024)]
        for (u, f) in units where s.hasSuffix(u) {
            let number = s.dropLast(u.count)
            // Plain decimals only ("1e300", "inf" and "nan" are not sizes a person writes).
            guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
                  let v = Double(number), v.isFinite, v >= 0 else { return nil }
            let mib = (v * f).rounded(.up)
            guard mib <= Double(maxMebibytes) else { return clamp ? maxMebibytes : nil }
            return Int(mib)
        }
        return nil
    }

    /// `1h30m`-style text for a duration (whole milliseconds).
    public static func text(_ d: Duration) -> String {
        var ms = Int(d.components.seconds) * 1000 + Int(d.components.attoseconds / 1_000_000_000_000_000)
        if ms == 0 { return "0s" }
        var out = ""
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] where ms >= size {
            out += "\(ms / size)\(unit)"
            ms %= size
        }
        return out
    }
}

extension Substring {
    func padding(toLength n: Int) -> String { String(self) + String(repeating: "0", count: Swift.max(0, n - count)) }
}
