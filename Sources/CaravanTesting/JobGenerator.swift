import CaravanModel

/// Builds random valid jobs: every value from the domain the parser accepts, and jobs that
/// keep the rules across fields (update only on service/system jobs, ports named by checks…).
public struct JobGenerator {
    public var rng: SeededRandom

    public init(seed: UInt64) { rng = SeededRandom(seed: seed) }

    mutating func pick<T>(_ xs: [T]) -> T { xs[Int.random(in: 0..<xs.count, using: &rng)] }
    mutating func int(_ r: ClosedRange<Int>) -> Int { Int.random(in: r, using: &rng) }
    mutating func chance(_ p: Double) -> Bool { rng.chance(p) }

    mutating func name() -> String {
        let chars = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        let s = String((0..<int(1...12)).map { _ in pick(chars) })
        return s == "." || s == ".." ? "dot" : s
    }

    /// Free text as users write it, including what a YAML or JSON writer must quote.
    mutating func text(allowEmpty: Bool = false) -> String {
        let pieces = ["web", "a b", "é", "日本", "😀", "\"quoted\"", "it's", "back\\slash", "# not a comment", "key: value",
                      "- dash", "null", "true", "~", "123", "0x1F", "1e3", " lead", "trail ", "tab\there", "line\nbreak",
                      "{brace}", "[bracket]", "${attr.kernel.name}", "${meta.rack}", "*", "&anchor", "!tag", "%", "@", "`",
                      "yes", "no", "on", "off", ":", "-", "?", "|", ">", ",", "'"]
        if allowEmpty && chance(0.1) { return "" }
        return (0..<int(1...3)).map { _ in pick(pieces) }.joined()
    }

    mutating func map() -> [String: String] {
        var m: [String: String] = [:]
        for _ in 0..<int(0...3) { m[chance(0.5) ? name() : text()] = text(allowEmpty: true) }
        return m
    }

    mutating func duration(_ upToSeconds: Int = 100_000) -> Duration {
        switch int(0...3) {
        case 0: return .zero
        case 1: return .milliseconds(int(1...999))
        case 2: return .seconds(int(1...upToSeconds))
        default: return .milliseconds(int(1...upToSeconds) * 1000 + int(1...999))
        }
    }

    mutating func constraint() -> Constraint {
        let op = pick(Constraint.Operator.allCases)
        switch op {
        case .distinctHosts:
            return Constraint(attribute: chance(0.7) ? "" : text(), operator: op, value: chance(0.7) ? "" : text())
        case .isSet, .isNotSet:
            return Constraint(attribute: text(), operator: op, value: chance(0.7) ? "" : text())
        default:
            return Constraint(attribute: text(), operator: op, value: text(allowEmpty: true))
        }
    }

    mutating func affinity() -> Affinity {
        var w = int(-100...100)
        if w == 0 { w = 1 }
        return Affinity(attribute: text(), operator: pick(Constraint.Operator.allCases), value: text(allowEmpty: true), weight: w)
    }

    mutating func spread() -> Spread {
        var s = Spread(attribute: text(), weight: int(1...100))
        var left = 100
        for _ in 0..<int(0...3) {
            let p = int(0...left)
            left -= p
            s.targets.append(.init(value: text(), percent: p))
        }
        return s
    }

    mutating func check(ports: [String]) -> Check {
        let kind = pick(Check.Kind.allCases)
        var c = Check(type: kind)
        if kind == .http || chance(0.2) { c.path = "/" + text() }
        if kind == .script || chance(0.2) { c.command = text() }
        if chance(0.3) { c.args = (0..<int(1...3)).map { _ in text(allowEmpty: true) } }
        if let p = ports.first, chance(0.5) { c.port = pick(ports) ; _ = p }
        c.interval = .seconds(int(1...600))
        c.timeout = .milliseconds(int(1...(Int(c.interval.components.seconds) * 1000)))
        c.restartAfter = int(0...100)
        return c
    }

    mutating func task(_ i: Int, kind: Job.Kind) -> TaskSpec {
        let driver = pick(TaskSpec.Driver.allCases)
        var config = DriverConfig()
        if driver == .container {
            config.image = "127.0.0.1:5000/" + name().lowercased() + ":" + String(int(1...9))
            if chance(0.5) { config.command = text() }
            if chance(0.4) { config.entrypoint = (0..<int(0...2)).map { _ in text(allowEmpty: true) } }
            if chance(0.4) { config.workdir = "/" + text() }
            if chance(0.3) { config.auth = RegistryAuth(username: text(), password: text()) }
        } else {
            config.command = text()
        }
        if chance(0.6) { config.args = (0..<int(1...4)).map { _ in text(allowEmpty: true) } }
        var t = TaskSpec(name: "t\(i)-" + name(), driver: driver, config: config)
        t.env = map()
        t.resources.cpuMillicores = int(1...64_000)
        t.resources.memoryMiB = int(1...262_144)
        if chance(0.3) { t.resources.memoryMaxMiB = t.resources.memoryMiB + int(0...1024) }
        t.resources.cpuHardLimit = chance(0.3)
        t.killTimeout = duration(3600)
        t.killSignal = pick(TaskSpec.signals)
        t.logs.maxFiles = int(1...100)
        t.logs.maxFileSizeMiB = int(1...1024)
        if chance(0.3) { t.user = pick(["nobody", "root", "1000", "app:app", text()]) }
        t.meta = map()
        return t
    }

    mutating func group(_ i: Int, kind: Job.Kind) -> TaskGroup {
        var g = TaskGroup(name: "g\(i)-" + name(), count: kind == .system || kind == .sysbatch ? int(0...1) : int(0...100_000), for: kind)
        g.constraints = (0..<int(0...3)).map { _ in constraint() }
        g.affinities = (0..<int(0...2)).map { _ in affinity() }
        g.spreads = (0..<int(0...2)).map { _ in spread() }
        if chance(0.5) {
            g.restart = RestartPolicy(attempts: int(0...1000), interval: duration(), delay: duration(), mode: pick(RestartPolicy.Mode.allCases))
        }
        if chance(0.5) {
            let unlimited = chance(0.3)
            g.reschedule = ReschedulePolicy(attempts: unlimited ? g.reschedule.attempts : int(0...1000), interval: duration(), delay: duration(),
                                            delayFunction: pick(ReschedulePolicy.DelayFunction.allCases), maxDelay: duration(), unlimited: unlimited)
        }
        if chance(0.5) {
            g.migrate.maxParallel = int(1...1000)
            g.migrate.minHealthyTime = duration()
            g.migrate.healthyDeadline = duration()
        }
        g.ephemeralDiskMiB = int(1...1_000_000)
        for p in 0..<int(0...3) {
            g.ports.append(Port(label: "p\(p)" + name(), staticPort: chance(0.4) ? int(1...65535) : nil, to: chance(0.4) ? int(1...65535) : nil))
        }
        let labels = g.ports.map(\.label)
        for s in 0..<int(0...2) {
            var svc = ServiceSpec(name: "s\(s)" + name(), port: labels.isEmpty || chance(0.2) ? nil : pick(labels),
                                  tags: (0..<int(0...3)).map { _ in text() })
            for _ in 0..<int(0...2) {
                var c = check(ports: labels)
                // http and tcp checks need a port, on the check or its service.
                if (c.type == .http || c.type == .tcp) && c.port == nil && svc.port == nil {
                    if labels.isEmpty { c.type = .script; c.command = c.command ?? "true"; c.path = nil } else { c.port = pick(labels) }
                }
                svc.checks.append(c)
            }
            g.services.append(svc)
        }
        g.meta = map()
        let n = int(1...3)
        g.tasks = (0..<n).map { task($0, kind: kind) }
        for ti in 1..<max(1, n) where chance(0.5) {
            g.tasks[ti].lifecycle = Lifecycle(hook: pick(Lifecycle.Hook.allCases), sidecar: chance(0.5))
        }
        return g
    }

    /// A random job that the job-file parser accepts.
    public mutating func job() -> Job {
        let kind = pick(Job.Kind.allCases)
        var j = Job(id: name(), name: chance(0.5) ? nil : text())
        j.namespace = chance(0.5) ? "default" : name()
        j.type = kind
        j.priority = int(1...100)
        if chance(0.4) { j.datacenters = (0..<int(0...3)).map { _ in text(allowEmpty: true) } }
        j.meta = map()
        j.constraints = (0..<int(0...3)).map { _ in constraint() }
        j.affinities = (0..<int(0...2)).map { _ in affinity() }
        j.spreads = (0..<int(0...2)).map { _ in spread() }
        if (kind == .service || kind == .system) && chance(0.6) {
            var u = UpdateStrategy()
            u.maxParallel = int(0...1000)
            u.canary = kind == .service && chance(0.5) ? int(1...1000) : 0
            u.autoPromote = u.canary > 0 && chance(0.5)
            u.minHealthyTime = duration()
            u.healthyDeadline = duration()
            u.progressDeadline = duration()
            u.autoRevert = chance(0.5)
            j.update = u
        }
        if (kind == .batch || kind == .sysbatch) && chance(0.5) {
            var p = Periodic(cron: pick(["* * * * *", "30 2 * * *", "*/5 1-3 1,15 * 0-6", "0 9 * * 1-5", "0 0 1 1 *"]))
            p.timeZone = pick(["UTC", "+02:00", "-0530", "Europe/Paris", "America/New_York"])
            p.prohibitOverlap = chance(0.5)
            j.periodic = p
        }
        j.groups = (0..<int(1...3)).map { group($0, kind: kind) }
        return j
    }
}
