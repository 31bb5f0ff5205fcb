/// Reads job files (YAML or JSON, one schema) into a validated ``Job`` with Nomad's defaults,
/// and writes a job back out as canonical JSON in the same schema (the form the API and the
/// replicated state carry).
public enum JobFile {
    /// Parses and validates; throws ``JobFileError`` listing every problem with its line and path.
    /// With `stored`, the text is one the cluster accepted earlier (log replay, snapshots, the
    /// nodes' copies): values past a bound an earlier version allowed are clamped to the bound,
    /// and names an earlier version allowed still are, so every replica reads the same job.
    public static func parse(_ text: String, file: String = "job", stored: Bool = false) throws(JobFileError) -> Job {
        let root: DocumentNode
        do { root = try YAMLSubsetParser.parse(text) } catch {
            throw JobFileError(file: file, problems: [.init(line: error.line, path: "", message: error.message)])
        }
        let problems = Problems(stored: stored)
        let job = decodeJob(FieldReader(node: root, path: "", problems: problems))
        if let job, problems.list.isEmpty { validate(job, root: root, problems) }
        guard let job, problems.list.isEmpty else {
            // By line; problems on one line keep the order they were found in.
            let sorted = problems.list.enumerated().sorted { ($0.element.line, $0.offset) < ($1.element.line, $1.offset) }.map(\.element)
            throw JobFileError(file: file, problems: sorted.isEmpty ? [.init(line: 1, path: "", message: "not a job")] : sorted)
        }
        return job
    }

    static let idCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    /// 128 less "-periodic-" and a Unix time of up to 12 digits.
    public static let maxPeriodicIDLength = 106

    /// Whether `id` is a job id a job file may give: 1-128 letters, digits, '-', '_' or '.',
    /// and not . or ..
    public static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 128 && id.allSatisfy { idCharacters.contains($0) } && id != "." && id != ".."
    }

    static func name(_ r: FieldReader?) -> String? {
        guard let r, let s = r.string() else { return nil }
        // Stored jobs from before the rule may be named . or ..
        guard isValidID(s) || (r.problems.stored && (s == "." || s == "..")) else {
            r.fail("\"\(s)\" must be 1-128 letters, digits, '-', '_' or '.' (and not . or ..)")
            return nil
        }
        return s
    }

    // MARK: - Decoding

    static func decodeJob(_ r: FieldReader) -> Job? {
        guard let m = r.mapping(known: ["id", "name", "namespace", "type", "priority", "datacenters", "meta", "constraints",
                                        "affinities", "spreads", "update", "periodic", "groups"]) else { return nil }
        let id = name(m.required("id"))
        var job = Job(id: id ?? "", name: m["name"]?.string())
        if let ns = m["namespace"] { job.namespace = name(ns) ?? job.namespace }
        if let t = m["type"]?.oneOf(Job.Kind.self) { job.type = t }
        if let p = m["priority"]?.int(1...100) { job.priority = p }
        if let d = m["datacenters"] { job.datacenters = d.strings() }
        if let meta = m["meta"] { job.meta = meta.stringMap() }
        job.constraints = m["constraints"].map { $0.list().compactMap(decodeConstraint) } ?? []
        job.affinities = m["affinities"].map { $0.list().compactMap(decodeAffinity) } ?? []
        job.spreads = m["spreads"].map { $0.list().compactMap(decodeSpread) } ?? []
        if let u = m["update"] { job.update = decodeUpdate(u) }
        if let p = m["periodic"] { job.periodic = decodePeriodic(p) }
        if let g = m.required("groups") {
            job.groups = g.list().compactMap { decodeGroup($0, kind: job.type) }
            if job.groups.isEmpty, case .sequence = g.node { g.fail("must have at least one group") }
        }
        return id == nil ? nil : job
    }

    static func decodeGroup(_ r: FieldReader, kind: Job.Kind) -> TaskGroup? {
        guard let m = r.mapping(known: ["name", "count", "constraints", "affinities", "spreads", "restart", "reschedule", "migrate",
                                        "ephemeralDisk", "network", "services", "tasks", "meta"]) else { return nil }
        var g = TaskGroup(name: name(m.required("name")) ?? "", for: kind)
        if let c = m["count"]?.int(0...100_000) { g.count = c }
        g.constraints = m["constraints"].map { $0.list().compactMap(decodeConstraint) } ?? []
        g.affinities = m["affinities"].map { $0.list().compactMap(decodeAffinity) } ?? []
        g.spreads = m["spreads"].map { $0.list().compactMap(decodeSpread) } ?? []
        if let rp = m["restart"], let mm = rp.mapping(known: ["attempts", "interval", "delay", "mode"]) {
            if let v = mm["attempts"]?.int(0...1000) { g.restart.attempts = v }
            if let v = mm["interval"]?.duration { g.restart.interval = v }
            if let v = mm["delay"]?.duration { g.restart.delay = v }
            if let v = mm["mode"]?.oneOf(RestartPolicy.Mode.self) { g.restart.mode = v }
        }
        if let rp = m["reschedule"], let mm = rp.mapping(known: ["attempts", "interval", "delay", "delayFunction", "maxDelay", "unlimited"]) {
            if let v = mm["attempts"]?.int(0...1000) { g.reschedule.attempts = v; g.reschedule.unlimited = false }
            if let v = mm["interval"]?.duration { g.reschedule.interval = v }
            if let v = mm["delay"]?.duration { g.reschedule.delay = v }
            if let v = mm["delayFunction"]?.oneOf(ReschedulePolicy.DelayFunction.self) { g.reschedule.delayFunction = v }
            if let v = mm["maxDelay"]?.duration { g.reschedule.maxDelay = v }
            if let v = mm["unlimited"]?.bool { g.reschedule.unlimited = v }
        }
        if let mg = m["migrate"], let mm = mg.mapping(known: ["maxParallel", "minHealthyTime", "healthyDeadline"]) {
            if let v = mm["maxParallel"]?.int(1...1000) { g.migrate.maxParallel = v }
            if let v = mm["minHealthyTime"]?.duration { g.migrate.minHealthyTime = v }
            if let v = mm["healthyDeadline"]?.duration { g.migrate.healthyDeadline = v }
        }
        if let d = m["ephemeralDisk"], let mm = d.mapping(known: ["size"]) {
            if let v = mm["size"]?.mebibytes { g.ephemeralDiskMiB = v }
        }
        if let n = m["network"], let mm = n.mapping(known: ["ports"]) {
            g.ports = mm["ports"].map { $0.list().compactMap(decodePort) } ?? []
        }
        g.services = m["services"].map { $0.list().compactMap(decodeService) } ?? []
        if let meta = m["meta"] { g.meta = meta.stringMap() }
        if let t = m.required("tasks") {
            g.tasks = t.list().compactMap(decodeTask)
            if g.tasks.isEmpty, case .sequence = t.node { t.fail("must have at least one task") }
        }
        return g
    }

    static func decodeTask(_ r: FieldReader) -> TaskSpec? {
        guard let m = r.mapping(known: ["name", "driver", "config", "env", "resources", "killTimeout", "killSignal", "lifecycle",
                                        "logs", "user", "meta"]) else { return nil }
        let nameField = m.required("name")
        let n = name(nameField)
        if let n, !r.problems.stored, ["alloc", "state.json", "state.json.tmp"].contains(n) {
            nameField?.fail("\"\(n)\" is reserved (it names the allocation's own directory or files)")
        }
        let driver = m.required("driver")?.oneOf(TaskSpec.Driver.self)
        var config = DriverConfig()
        if let c = m["config"], let mm = c.mapping(known: ["image", "command", "args", "entrypoint", "workdir", "auth"]) {
            if let a = mm["auth"], let am = a.mapping(known: ["username", "password"]) {
                // Both or nothing: a half-set login could not be rendered and parsed back.
                if let u = am.required("username")?.string(), let p = am.required("password")?.string() {
                    config.auth = RegistryAuth(username: u, password: p)
                }
            }
            config.image = mm["image"]?.string()
            config.command = mm["command"]?.string()
            config.args = mm["args"]?.strings() ?? []
            config.entrypoint = mm["entrypoint"]?.strings()
            config.workdir = mm["workdir"]?.string()
        }
        var t = TaskSpec(name: n ?? "", driver: driver ?? .rawExec, config: config)
        if let e = m["env"] { t.env = e.stringMap() }
        if let res = m["resources"], let mm = res.mapping(known: ["cpu", "memory", "memoryMax", "cpuHardLimit"]) {
            if let v = mm["cpuHardLimit"]?.bool { t.resources.cpuHardLimit = v }
            if let v = mm["cpu"]?.cpu { t.resources.cpuMillicores = v }
            if let v = mm["memory"]?.mebibytes { t.resources.memoryMiB = v }
            if let v = mm["memoryMax"]?.mebibytes { t.resources.memoryMaxMiB = v }
        }
        if let v = m["killTimeout"]?.duration { t.killTimeout = v }
        if let s = m["killSignal"], let v = s.string() {
            if TaskSpec.signals.contains(v) { t.killSignal = v } else { s.fail("\"\(v)\" is not one of \(TaskSpec.signals.joined(separator: ", "))") }
        }
        if let l = m["lifecycle"], let mm = l.mapping(known: ["hook", "sidecar"]) {
            if let hook = mm.required("hook")?.oneOf(Lifecycle.Hook.self) {
                t.lifecycle = Lifecycle(hook: hook, sidecar: mm["sidecar"]?.bool ?? false)
            }
        }
        if let l = m["logs"], let mm = l.mapping(known: ["maxFiles", "maxFileSize"]) {
            if let v = mm["maxFiles"]?.int(1...100) { t.logs.maxFiles = v }
            if let f = mm["maxFileSize"], let v = f.mebibytes {
                // What logs may keep is reserved on the node beside ephemeralDisk: kept sane.
                if v > LogPolicy.maxFileSizeLimitMiB && !f.problems.stored { f.fail("must be at most 1Gi") } else { t.logs.maxFileSizeMiB = v }
            }
        }
        t.user = m["user"]?.string()
        if let meta = m["meta"] { t.meta = meta.stringMap() }
        return n == nil || driver == nil ? nil : t
    }

    static func decodeConstraint(_ r: FieldReader) -> Constraint? {
        guard let m = r.mapping(known: ["attribute", "operator", "value"]) else { return nil }
        let op = m["operator"]?.oneOf(Constraint.Operator.self) ?? .equal
        // distinct_hosts needs no attribute: an empty one is the same as none.
        let attribute = m["attribute"]?.string(nonEmpty: op != .distinctHosts) ?? ""
        let needsValue = ![.isSet, .isNotSet, .distinctHosts].contains(op)
        let value = needsValue ? m.required("value")?.string(nonEmpty: false) : m["value"]?.string(nonEmpty: false)
        if op != .distinctHosts && attribute.isEmpty { _ = m.required("attribute") }
        if needsValue && value == nil { return nil }
        return Constraint(attribute: attribute, operator: op, value: value ?? "")
    }

    static func decodeAffinity(_ r: FieldReader) -> Affinity? {
        guard let m = r.mapping(known: ["attribute", "operator", "value", "weight"]) else { return nil }
        guard let a = m.required("attribute")?.string(), let v = m.required("value")?.string(nonEmpty: false) else { return nil }
        var af = Affinity(attribute: a, operator: m["operator"]?.oneOf(Constraint.Operator.self) ?? .equal, value: v)
        if let w = m["weight"] {
            if let wv = w.int(-100...100) { if wv == 0 { w.fail("must not be 0") } else { af.weight = wv } }
        }
        return af
    }

    static func decodeSpread(_ r: FieldReader) -> Spread? {
        guard let m = r.mapping(known: ["attribute", "weight", "targets"]) else { return nil }
        guard let a = m.required("attribute")?.string() else { return nil }
        var s = Spread(attribute: a)
        if let w = m["weight"]?.int(1...100) { s.weight = w }
        if let t = m["targets"] {
            for item in t.list() {
                guard let tm = item.mapping(known: ["value", "percent"]), let v = tm.required("value")?.string(),
                      let p = tm.required("percent")?.int(0...100) else { continue }
                s.targets.append(.init(value: v, percent: p))
            }
            if s.targets.reduce(0, { $0 + $1.percent }) > 100 { t.fail("target percentages add up to more than 100") }
        }
        return s
    }

    static func decodeUpdate(_ r: FieldReader) -> UpdateStrategy? {
        guard let m = r.mapping(known: ["maxParallel", "canary", "minHealthyTime", "healthyDeadline", "progressDeadline", "autoRevert", "autoPromote"]) else { return nil }
        var u = UpdateStrategy()
        if let v = m["maxParallel"]?.int(0...1000) { u.maxParallel = v }
        if let v = m["canary"]?.int(0...1000) { u.canary = v }
        if let v = m["minHealthyTime"]?.duration { u.minHealthyTime = v }
        if let v = m["healthyDeadline"]?.duration { u.healthyDeadline = v }
        if let v = m["progressDeadline"]?.duration { u.progressDeadline = v }
        if let v = m["autoRevert"]?.bool { u.autoRevert = v }
        if let v = m["autoPromote"]?.bool { u.autoPromote = v }
        return u
    }

    static func decodePeriodic(_ r: FieldReader) -> Periodic? {
        guard let m = r.mapping(known: ["cron", "timeZone", "prohibitOverlap"]) else { return nil }
        guard let c = m.required("cron"), let cron = c.string() else { return nil }
        if let why = Cron.problem(cron) { c.fail(why); return nil }
        var p = Periodic(cron: cron)
        if let tzr = m["timeZone"], let tz = tzr.string() {
            if Periodic.offsetSeconds(tz) == nil && !ZoneRules.isZoneName(tz) {
                tzr.fail("\"\(tz)\" is not UTC, a fixed offset such as +02:00, or a time zone name such as Europe/Paris")
            } else {
                p.timeZone = tz
            }
        }
        if let v = m["prohibitOverlap"]?.bool { p.prohibitOverlap = v }
        return p
    }

    static func decodePort(_ r: FieldReader) -> Port? {
        guard let m = r.mapping(known: ["label", "static", "to"]) else { return nil }
        guard let label = name(m.required("label")) else { return nil }
        return Port(label: label, staticPort: m["static"]?.int(1...65535), to: m["to"]?.int(1...65535))
    }

    static func decodeService(_ r: FieldReader) -> ServiceSpec? {
        guard let m = r.mapping(known: ["name", "port", "tags", "checks"]) else { return nil }
        guard let n = name(m.required("name")) else { return nil }
        var s = ServiceSpec(name: n, port: m["port"]?.string(), tags: m["tags"]?.strings() ?? [])
        for c in m["checks"]?.list() ?? [] {
            guard let cm = c.mapping(known: ["type", "path", "command", "args", "port", "interval", "timeout", "restartAfter"]),
                  let type = cm.required("type")?.oneOf(Check.Kind.self) else { continue }
            var check = Check(type: type)
            check.path = cm["path"]?.string()
            check.command = cm["command"]?.string()
            check.args = cm["args"]?.strings() ?? []
            check.port = cm["port"]?.string()
            if let v = cm["interval"]?.duration { check.interval = v }
            if let v = cm["timeout"]?.duration { check.timeout = v }
            if let v = cm["restartAfter"]?.int(0...100) { check.restartAfter = v }
            switch type {
            case .http where check.path == nil: _ = cm.required("path")
            case .script where check.command == nil: _ = cm.required("command")
            default: break
            }
            s.checks.append(check)
        }
        return s
    }

    // MARK: - Rules across fields

    static func validate(_ job: Job, root: DocumentNode, _ problems: Problems) {
        func line(_ path: [Any]) -> Int { locate(root, path) }
        if job.update != nil && (job.type == .batch || job.type == .sysbatch) {
            problems.add(line(["update"]), "update", "applies to service and system jobs only")
        }
        if let u = job.update, u.canary > 0, job.type != .service {
            problems.add(line(["update", "canary"]), "update.canary", "canaries apply to service jobs only")
        }
        if let u = job.update, u.autoPromote, u.canary == 0 {
            problems.add(line(["update", "autoPromote"]), "update.autoPromote", "needs canary > 0 (there is nothing to promote)")
        }
        if job.periodic != nil && job.id.count > maxPeriodicIDLength {
            problems.add(line(["id"]), "id", "a periodic job's id is at most \(maxPeriodicIDLength) characters, so its launches' ids (<id>-periodic-<time>) are ids too")
        }
        if job.periodic != nil && (job.type == .service || job.type == .system) {
            problems.add(line(["periodic"]), "periodic", "applies to batch and sysbatch jobs only")
        }
        var groupNames = Set<String>()
        for (gi, g) in job.groups.enumerated() {
            let gp = "groups[\(gi)]"
            if !groupNames.insert(g.name).inserted { problems.add(line(["groups", gi, "name"]), gp + ".name", "duplicate group name \"\(g.name)\"") }
            if (job.type == .system || job.type == .sysbatch) && g.count > 1 {
                problems.add(line(["groups", gi, "count"]), gp + ".count", "\(job.type.rawValue) jobs run one per node; leave count out")
            }
            var labels = Set<String>()
            for (pi, p) in g.ports.enumerated() where !labels.insert(p.label).inserted {
                problems.add(line(["groups", gi, "network", "ports", pi]), gp + ".network.ports[\(pi)].label", "duplicate port label \"\(p.label)\"")
            }
            for (si, s) in g.services.enumerated() {
                if let port = s.port, !labels.contains(port) {
                    problems.add(line(["groups", gi, "services", si, "port"]), gp + ".services[\(si)].port", "no port labelled \"\(port)\" in network.ports")
                }
                for (ci, c) in s.checks.enumerated() {
                    if c.timeout > c.interval {
                        problems.add(line(["groups", gi, "services", si, "checks", ci]), gp + ".services[\(si)].checks[\(ci)].timeout", "must not be longer than the interval")
                    }
                    if let port = c.port, !labels.contains(port) {
                        problems.add(line(["groups", gi, "services", si, "checks", ci, "port"]), gp + ".services[\(si)].checks[\(ci)].port", "no port labelled \"\(port)\" in network.ports")
                    }
                    if (c.type == .http || c.type == .tcp) && c.port == nil && s.port == nil {
                        problems.add(line(["groups", gi, "services", si, "checks", ci]), gp + ".services[\(si)].checks[\(ci)].port", "an \(c.type.rawValue) check needs a port (on the check or its service)")
                    }
                }
            }
            var taskNames = Set<String>()
            for (ti, t) in g.tasks.enumerated() {
                let tp = gp + ".tasks[\(ti)]"
                if !taskNames.insert(t.name).inserted { problems.add(line(["groups", gi, "tasks", ti, "name"]), tp + ".name", "duplicate task name \"\(t.name)\"") }
                switch t.driver {
                case .container where t.config.image == nil:
                    problems.add(line(["groups", gi, "tasks", ti]), tp + ".config.image", "is required for the container driver")
                case .rawExec, .exec:
                    if t.config.command == nil { problems.add(line(["groups", gi, "tasks", ti]), tp + ".config.command", "is required for the \(t.driver.rawValue) driver") }
                    if t.config.image != nil { problems.add(line(["groups", gi, "tasks", ti, "config", "image"]), tp + ".config.image", "only the container driver runs images") }
                default: break
                }
                if let max = t.resources.memoryMaxMiB, max < t.resources.memoryMiB {
                    problems.add(line(["groups", gi, "tasks", ti, "resources", "memoryMax"]), tp + ".resources.memoryMax", "must be at least resources.memory (\(t.resources.memoryMiB) MiB)")
                }
            }
            if !g.tasks.isEmpty && g.tasks.allSatisfy({ $0.lifecycle != nil && !$0.lifecycle!.sidecar }) {
                problems.add(line(["groups", gi, "tasks"]), gp + ".tasks", "needs at least one main task (without lifecycle) or a sidecar")
            }
        }
    }

    /// The line of the node at a path of keys and indexes (the parent's line if absent).
    static func locate(_ node: DocumentNode, _ path: [Any]) -> Int {
        var cur = node
        for p in path {
            switch (cur, p) {
            case (.mapping(let entries, _), let key as String):
                guard let e = entries.first(where: { $0.key == key }) else { return cur.line }
                cur = e.value
                if case .scalar = cur { return e.line }
            case (.sequence(let items, _), let i as Int):
                guard i < items.count else { return cur.line }
                cur = items[i]
            default: return cur.line
            }
        }
        return cur.line
    }
}

extension TaskSpec {
    public static let signals = ["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2"]
}

/// Five-field cron expressions (minute hour day-of-month month day-of-week).
public enum Cron {
    static let ranges = [0...59, 0...23, 1...31, 1...12, 0...7]
    static let names = ["minute", "hour", "day of month", "month", "day of week"]

    /// Why the expression is not valid, or nil.
    public static func problem(_ expr: String) -> String? {
        let fields = expr.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count == 5 else { return "\"\(expr)\" must have 5 fields: minute hour day-of-month month day-of-week" }
        for (i, f) in fields.enumerated() {
            for part in f.split(separator: ",") {
                let stepParts = part.split(separator: "/", omittingEmptySubsequences: false)
                guard stepParts.count <= 2 else { return "bad \(names[i]) field \"\(f)\"" }
                if stepParts.count == 2, Int(stepParts[1]).map({ $0 > 0 }) != true { return "bad step in \(names[i]) field \"\(f)\"" }
                let base = stepParts[0]
                if base == "*" { continue }
                let bounds = base.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
                guard !bounds.isEmpty, bounds.count <= 2, bounds.allSatisfy({ $0.map { ranges[i].contains($0) } == true }) else {
                    return "\(names[i]) field \"\(f)\" must use numbers in \(ranges[i].lowerBound)-\(ranges[i].upperBound), '*', ',', '-' and '/'"
                }
            }
        }
        return nil
    }
}
