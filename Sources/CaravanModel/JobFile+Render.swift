extension JobFile {
    /// The job's canonical text with its secrets (registry passwords) replaced by
    /// `<redacted>`, for views; nil when the text does not parse.
    public static func redacted(_ text: String) -> String? {
        guard var job = try? parse(text, file: "stored") else { return nil }
        var changed = false
        for g in job.groups.indices {
            for t in job.groups[g].tasks.indices where job.groups[g].tasks[t].config.auth != nil {
                job.groups[g].tasks[t].config.auth?.password = redactedMark
                changed = true
            }
        }
        return changed ? render(job) : text
    }

    public static let redactedMark = "<redacted>"

    /// The job as canonical JSON in the job-file schema, every default written out; parsing it
    /// gives the same job back.
    public static func render(_ job: Job) -> String {
        var o = JSONObject()
        o["id"] = .string(job.id)
        o["name"] = .string(job.name)
        o["namespace"] = .string(job.namespace)
        o["type"] = .string(job.type.rawValue)
        o["priority"] = .number(job.priority)
        o["datacenters"] = .array(job.datacenters.map { .string($0) })
        if !job.meta.isEmpty { o["meta"] = .map(job.meta) }
        if !job.constraints.isEmpty { o["constraints"] = .array(job.constraints.map(constraint)) }
        if !job.affinities.isEmpty { o["affinities"] = .array(job.affinities.map(affinity)) }
        if !job.spreads.isEmpty { o["spreads"] = .array(job.spreads.map(spread)) }
        if let u = job.update {
            o["update"] = .object([("maxParallel", .number(u.maxParallel)), ("canary", .number(u.canary)),
                                   ("minHealthyTime", .duration(u.minHealthyTime)), ("healthyDeadline", .duration(u.healthyDeadline)),
                                   ("progressDeadline", .duration(u.progressDeadline)), ("autoRevert", .bool(u.autoRevert))]
                                  + (u.autoPromote ? [("autoPromote", .bool(true))] : []))
        }
        if let p = job.periodic {
            o["periodic"] = .object([("cron", .string(p.cron)), ("timeZone", .string(p.timeZone)), ("prohibitOverlap", .bool(p.prohibitOverlap))])
        }
        o["groups"] = .array(job.groups.map(group))
        return JSONValue.object(o.fields).text
    }

    /// Keys the operator does without are left out when empty (distinct_hosts has no attribute;
    /// it, is_set and is_not_set no value), as a user writes them.
    static func constraint(_ c: Constraint) -> JSONValue {
        var f: [(String, JSONValue)] = []
        if !(c.attribute.isEmpty && c.operator == .distinctHosts) { f.append(("attribute", .string(c.attribute))) }
        f.append(("operator", .string(c.operator.rawValue)))
        if !(c.value.isEmpty && [.isSet, .isNotSet, .distinctHosts].contains(c.operator)) { f.append(("value", .string(c.value))) }
        return .object(f)
    }

    static func affinity(_ a: Affinity) -> JSONValue {
        .object([("attribute", .string(a.attribute)), ("operator", .string(a.operator.rawValue)), ("value", .string(a.value)),
                 ("weight", .number(a.weight))])
    }

    static func spread(_ s: Spread) -> JSONValue {
        var f: [(String, JSONValue)] = [("attribute", .string(s.attribute)), ("weight", .number(s.weight))]
        if !s.targets.isEmpty {
            f.append(("targets", .array(s.targets.map { .object([("value", .string($0.value)), ("percent", .number($0.percent))]) })))
        }
        return .object(f)
    }

    static func group(_ g: TaskGroup) -> JSONValue {
        var o = JSONObject()
        o["name"] = .string(g.name)
        o["count"] = .number(g.count)
        if !g.constraints.isEmpty { o["constraints"] = .array(g.constraints.map(constraint)) }
        if !g.affinities.isEmpty { o["affinities"] = .array(g.affinities.map(affinity)) }
        if !g.spreads.isEmpty { o["spreads"] = .array(g.spreads.map(spread)) }
        o["restart"] = .object([("attempts", .number(g.restart.attempts)), ("interval", .duration(g.restart.interval)),
                                ("delay", .duration(g.restart.delay)), ("mode", .string(g.restart.mode.rawValue))])
        let r = g.reschedule
        o["reschedule"] = .object([("attempts", .number(r.attempts)), ("interval", .duration(r.interval)), ("delay", .duration(r.delay)),
                                   ("delayFunction", .string(r.delayFunction.rawValue)), ("maxDelay", .duration(r.maxDelay)),
                                   ("unlimited", .bool(r.unlimited))])
        o["migrate"] = .object([("maxParallel", .number(g.migrate.maxParallel)), ("minHealthyTime", .duration(g.migrate.minHealthyTime)),
                                ("healthyDeadline", .duration(g.migrate.healthyDeadline))])
        o["ephemeralDisk"] = .object([("size", .string("\(g.ephemeralDiskMiB)Mi"))])
        if !g.ports.isEmpty {
            o["network"] = .object([("ports", .array(g.ports.map { p in
                var f: [(String, JSONValue)] = [("label", .string(p.label))]
                if let s = p.staticPort { f.append(("static", .number(s))) }
                if let t = p.to { f.append(("to", .number(t))) }
                return .object(f)
            }))])
        }
        if !g.services.isEmpty { o["services"] = .array(g.services.map(service)) }
        if !g.meta.isEmpty { o["meta"] = .map(g.meta) }
        o["tasks"] = .array(g.tasks.map(task))
        return .object(o.fields)
    }

    static func service(_ s: ServiceSpec) -> JSONValue {
        var f: [(String, JSONValue)] = [("name", .string(s.name))]
        if let p = s.port { f.append(("port", .string(p))) }
        if !s.tags.isEmpty { f.append(("tags", .array(s.tags.map { .string($0) }))) }
        if !s.checks.isEmpty {
            f.append(("checks", .array(s.checks.map { c in
                var cf: [(String, JSONValue)] = [("type", .string(c.type.rawValue))]
                if let p = c.path { cf.append(("path", .string(p))) }
                if let cmd = c.command { cf.append(("command", .string(cmd))) }
                if !c.args.isEmpty { cf.append(("args", .array(c.args.map { .string($0) }))) }
                if let p = c.port { cf.append(("port", .string(p))) }
                cf += [("interval", .duration(c.interval)), ("timeout", .duration(c.timeout)), ("restartAfter", .number(c.restartAfter))]
                return .object(cf)
            })))
        }
        return .object(f)
    }

    static func task(_ t: TaskSpec) -> JSONValue {
        var o = JSONObject()
        o["name"] = .string(t.name)
        o["driver"] = .string(t.driver.rawValue)
        var c: [(String, JSONValue)] = []
        if let i = t.config.image { c.append(("image", .string(i))) }
        if let cmd = t.config.command { c.append(("command", .string(cmd))) }
        if !t.config.args.isEmpty { c.append(("args", .array(t.config.args.map { .string($0) }))) }
        if let e = t.config.entrypoint { c.append(("entrypoint", .array(e.map { .string($0) }))) }
        if let w = t.config.workdir { c.append(("workdir", .string(w))) }
        if let a = t.config.auth { c.append(("auth", .object([("username", .string(a.username)), ("password", .string(a.password))]))) }
        o["config"] = .object(c)
        if !t.env.isEmpty { o["env"] = .map(t.env) }
        var r: [(String, JSONValue)] = [("cpu", .string("\(t.resources.cpuMillicores)m")), ("memory", .string("\(t.resources.memoryMiB)Mi"))]
        if let m = t.resources.memoryMaxMiB { r.append(("memoryMax", .string("\(m)Mi"))) }
        if t.resources.cpuHardLimit { r.append(("cpuHardLimit", .bool(true))) }
        o["resources"] = .object(r)
        o["killTimeout"] = .duration(t.killTimeout)
        o["killSignal"] = .string(t.killSignal)
        if let l = t.lifecycle { o["lifecycle"] = .object([("hook", .string(l.hook.rawValue)), ("sidecar", .bool(l.sidecar))]) }
        o["logs"] = .object([("maxFiles", .number(t.logs.maxFiles)), ("maxFileSize", .string("\(t.logs.maxFileSizeMiB)Mi"))])
        if let u = t.user { o["user"] = .string(u) }
        if !t.meta.isEmpty { o["meta"] = .map(t.meta) }
        return .object(o.fields)
    }
}

/// A minimal JSON writer (ordered keys, so output is stable): canonical job files here, OCI
/// runtime configs in the executor.
public indirect enum JSONValue: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
                                ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    case string(String), number(Int), bool(Bool), array([JSONValue]), object([(String, JSONValue)])

    public init(stringLiteral v: String) { self = .string(v) }
    public init(integerLiteral v: Int) { self = .number(v) }
    public init(booleanLiteral v: Bool) { self = .bool(v) }
    public init(arrayLiteral v: JSONValue...) { self = .array(v) }
    /// Keys stay in the order written.
    public init(dictionaryLiteral v: (String, JSONValue)...) { self = .object(v) }

    public static func strings(_ s: [String]) -> JSONValue { .array(s.map { .string($0) }) }

    static func duration(_ d: Duration) -> JSONValue { .string(Units.text(d)) }
    static func map(_ m: [String: String]) -> JSONValue { .object(m.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }) }

    public var text: String {
        switch self {
        case .string(let s): return Self.quote(s)
        case .number(let n): return String(n)
        case .bool(let b): return b ? "true" : "false"
        case .array(let a): return "[" + a.map(\.text).joined(separator: ",") + "]"
        case .object(let f): return "{" + f.map { Self.quote($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let h = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

struct JSONObject {
    var fields: [(String, JSONValue)] = []
    subscript(_ key: String) -> JSONValue? {
        get { fields.first { $0.0 == key }?.1 }
        set { if let v = newValue { fields.append((key, v)) } }
    }
}
