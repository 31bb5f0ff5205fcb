import CaravanModel

/// Whether a node can take one more allocation of a group, and if not, why — by reason, so a
/// failed placement can say "memory exhausted on 4 nodes, constraint … filtered 2".
enum Feasibility {
    /// `${attr.X}`, `${meta.X}`, `${node.unique.id}`, `${node.unique.name}`, `${node.datacenter}`,
    /// `${node.class}`; anything else is taken literally.
    static func resolve(_ attribute: String, on node: Node) -> String? {
        guard attribute.hasPrefix("${"), attribute.hasSuffix("}") else { return attribute }
        let inner = String(attribute.dropFirst(2).dropLast())
        if inner.hasPrefix("attr.") { return node.attributes[String(inner.dropFirst(5))] }
        if inner.hasPrefix("meta.") { return node.meta[String(inner.dropFirst(5))] }
        switch inner {
        case "node.unique.id", "node.unique.name": return node.id
        case "node.datacenter": return node.datacenter
        case "node.class": return node.nodeClass
        default: return nil
        }
    }

    /// Whether an attribute reads what makes a node unique (its id or name, a `unique.*`
    /// attribute): nodes of one scheduling class may differ there.
    static func readsUniqueness(_ attribute: String) -> Bool {
        attribute.hasPrefix("${node.unique.") || attribute.hasPrefix("${attr.unique.")
    }

    /// Whether a constraint that depends on the node alone holds.
    static func holds(_ c: Constraint, on node: Node) -> Bool {
        let value = resolve(c.attribute, on: node)
        switch c.operator {
        case .isSet: return value != nil
        case .isNotSet: return value == nil
        case .distinctHosts, .distinctProperty: return true  // checked against allocations
        default: break
        }
        guard let v = value else { return false }
        switch c.operator {
        case .equal: return v == c.value
        case .notEqual: return v != c.value
        case .less, .lessOrEqual, .greater, .greaterOrEqual:
            let order: Int
            if let a = Double(v), let b = Double(c.value) { order = a < b ? -1 : a > b ? 1 : 0 } else { order = v < c.value ? -1 : v > c.value ? 1 : 0 }
            switch c.operator {
            case .less: return order < 0
            case .lessOrEqual: return order <= 0
            case .greater: return order > 0
            default: return order >= 0
            }
        case .regexp:
            guard let re = try? Regex(c.value) else { return false }
            return (try? re.firstMatch(in: v)) != nil
        case .version: return VersionRange.matches(v, c.value)
        case .setContains:
            let have = Set(v.split(separator: ",").map { $0.trimmingSpaces })
            return c.value.split(separator: ",").allSatisfy { have.contains($0.trimmingSpaces) }
        default: return false
        }
    }

    static func describe(_ c: Constraint) -> String {
        switch c.operator {
        case .isSet, .isNotSet: "constraint \(c.attribute) \(c.operator.rawValue)"
        case .distinctHosts: "constraint distinct_hosts"
        default: "constraint \(c.attribute) \(c.operator.rawValue) \(c.value)"
        }
    }
}

/// `>= 1.2, < 2.0` style ranges over dotted versions.
enum VersionRange {
    static func parts(_ s: Substring) -> [Int] { s.split(separator: ".").map { Int($0.prefix { $0.isNumber }) ?? 0 } }

    static func compare(_ a: [Int], _ b: [Int]) -> Int {
        for i in 0..<max(a.count, b.count) {
            let x = i < a.count ? a[i] : 0, y = i < b.count ? b[i] : 0
            if x != y { return x < y ? -1 : 1 }
        }
        return 0
    }

    static func matches(_ version: String, _ range: String) -> Bool {
        let v = parts(version[...])
        for clause in range.split(separator: ",") {
            let c = clause.trimmingSpaces
            let ops = [">=", "<=", "!=", ">", "<", "="]
            guard let op = ops.first(where: { c.hasPrefix($0) }) else {
                if compare(v, parts(c[...])) != 0 { return false }
                continue
            }
            let order = compare(v, parts(c.dropFirst(op.count).trimmingSpaces[...]))
            let ok: Bool
            switch op {
            case ">=": ok = order >= 0
            case "<=": ok = order <= 0
            case ">": ok = order > 0
            case "<": ok = order < 0
            case "!=": ok = order != 0
            default: ok = order == 0
            }
            if !ok { return false }
        }
        return true
    }
}

extension Substring {
    var trimmingSpaces: String { String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
}
extension String {
    var trimmingSpaces: String { self[...].trimmingSpaces }
}
