import CaravanModel
import Primitives

/// A job as the replicated log and snapshots keep it: the parsed, defaulted `Job`, field by
/// field, behind a format version. Applying a registration decodes it and nothing else — no job
/// file is parsed and no default applied inside the state machine, so a later release that
/// parses or defaults differently still replays the same log to the same state.
///
/// Format 1 (2026-12-07): every field of `Job` in declaration order. A new field means format 2;
/// format-1 records keep decoding with the new field at the value format 1 meant.
public enum JobCodec {
    public static let format: UInt64 = 1
    /// Every string and list may be as long as the whole record (a registration's limit):
    /// nothing a job file can say is cut or refused here.
    static let maxString = 4 << 20

    public static func encode(_ job: Job) -> [UInt8] {
        var w = ByteWriter()
        enc(job, &w)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) -> Job? {
        var r = ByteReader(bytes)
        guard let job = job(&r), r.atEnd else { return nil }
        return job
    }

    // MARK: - Small parts

    static func int(_ v: Int, _ w: inout ByteWriter) { RecordCodec.int(v, &w) }
    /// Every number in a job (counts, sizes, weights, ports, priorities) is far inside this;
    /// decoded numbers outside it are refused, so no later arithmetic on them can overflow.
    static let maxMagnitude = 1 << 50
    static let maxSeconds = 100 * 366 * 86_400
    static func int(_ r: inout ByteReader) -> Int? { RecordCodec.int(&r).flatMap { $0 != .min && abs($0) <= maxMagnitude ? $0 : nil } }
    static func bool(_ v: Bool, _ w: inout ByteWriter) { w.byte(v ? 1 : 0) }
    static func bool(_ r: inout ByteReader) -> Bool? { r.byte().flatMap { $0 <= 1 ? $0 == 1 : nil } }
    /// A duration exactly: whole seconds and attoseconds.
    static func ms(_ d: Duration, _ w: inout ByteWriter) {
        let (s, a) = d.components
        int(Int(s), &w); int(Int(a), &w)
    }
    static func ms(_ r: inout ByteReader) -> Duration? {
        // No job duration is negative or anywhere near a century; bounded so nothing that
        // renders or adds them up can overflow, whatever bytes a snapshot file holds.
        guard let s = int(&r), let a = RecordCodec.int(&r), (0...maxSeconds).contains(s), (0..<1_000_000_000_000_000_000).contains(a) else { return nil }
        return Duration(secondsComponent: Int64(s), attosecondsComponent: Int64(a))
    }
    static func opt(_ s: String?, _ w: inout ByteWriter) { w.byte(s == nil ? 0 : 1); if let s { str(s, &w) } }
    static func opt(_ r: inout ByteReader) -> String?? {
        guard let has = r.byte(), has <= 1 else { return nil }
        if has == 0 { return .some(nil) }
        return str(&r).map { .some($0) }
    }
    static func map(_ m: [String: String], _ w: inout ByteWriter) { RecordCodec.map(m, &w, key: maxString, value: maxString) }
    static func map(_ r: inout ByteReader) -> [String: String]? { RecordCodec.map(&r, count: maxString, key: maxString, value: maxString) }
    static func str(_ s: String, _ w: inout ByteWriter) { w.string(s, max: maxString) }
    static func str(_ r: inout ByteReader) -> String? { r.string(max: maxString) }
    static func optInt(_ v: Int?, _ w: inout ByteWriter) { w.byte(v == nil ? 0 : 1); if let v { int(v, &w) } }
    static func optInt(_ r: inout ByteReader) -> Int?? {
        guard let has = r.byte(), has <= 1 else { return nil }
        if has == 0 { return .some(nil) }
        return int(&r).map { .some($0) }
    }
    static func strings(_ l: [String], _ w: inout ByteWriter) { w.varint(UInt64(l.count)); for s in l { str(s, &w) } }
    static func strings(_ r: inout ByteReader) -> [String]? {
        guard let n = r.count(max: maxString) else { return nil }
        var out: [String] = []
        for _ in 0..<n { guard let s = str(&r) else { return nil }; out.append(s) }
        return out
    }
    static func list<T>(_ l: [T], _ w: inout ByteWriter, _ each: (T, inout ByteWriter) -> Void) {
        w.varint(UInt64(l.count))
        for x in l { each(x, &w) }
    }
    static func list<T>(_ r: inout ByteReader, _ each: (inout ByteReader) -> T?) -> [T]? {
        guard let n = r.count(max: maxString) else { return nil }
        var out: [T] = []
        for _ in 0..<n { guard let x = each(&r) else { return nil }; out.append(x) }
        return out
    }
    static func raw<E: RawRepresentable>(_ r: inout ByteReader, _: E.Type) -> E? where E.RawValue == String {
        str(&r).flatMap(E.init(rawValue:))
    }

    // MARK: - Job

    static func enc(_ j: Job, _ w: inout ByteWriter) {
        w.varint(format)
        str(j.id, &w); str(j.name, &w); str(j.namespace, &w); str(j.type.rawValue, &w); int(j.priority, &w)
        strings(j.datacenters, &w); map(j.meta, &w)
        list(j.constraints, &w, enc); list(j.affinities, &w, enc); list(j.spreads, &w, enc)
        w.byte(j.update == nil ? 0 : 1)
        if let u = j.update {
            int(u.maxParallel, &w); int(u.canary, &w); bool(u.autoPromote, &w); ms(u.minHealthyTime, &w); ms(u.healthyDeadline, &w)
            ms(u.progressDeadline, &w); bool(u.autoRevert, &w)
        }
        w.byte(j.periodic == nil ? 0 : 1)
        if let p = j.periodic { str(p.cron, &w); str(p.timeZone, &w); bool(p.prohibitOverlap, &w) }
        list(j.groups, &w, enc)
    }

    static func job(_ r: inout ByteReader) -> Job? {
        guard let f = r.varint(), f == format, let id = str(&r), let name = str(&r), let ns = str(&r),
              let type = raw(&r, Job.Kind.self), let priority = int(&r), let dcs = strings(&r), let meta = map(&r),
              let cs = list(&r, constraint), let afs = list(&r, affinity), let sps = list(&r, spread), let hasUpdate = r.byte() else { return nil }
        var j = Job(id: id, name: name)
        j.namespace = ns; j.type = type; j.priority = priority; j.datacenters = dcs; j.meta = meta
        j.constraints = cs; j.affinities = afs; j.spreads = sps
        if hasUpdate == 1 {
            guard let mp = int(&r), let canary = int(&r), let ap = bool(&r), let mht = ms(&r), let hd = ms(&r), let pd = ms(&r),
                  let ar = bool(&r) else { return nil }
            var u = UpdateStrategy()
            u.maxParallel = mp; u.canary = canary; u.autoPromote = ap; u.minHealthyTime = mht; u.healthyDeadline = hd
            u.progressDeadline = pd; u.autoRevert = ar
            j.update = u
        } else if hasUpdate != 0 { return nil }
        guard let hasPeriodic = r.byte(), hasPeriodic <= 1 else { return nil }
        if hasPeriodic == 1 {
            guard let cron = str(&r), let tz = str(&r), let po = bool(&r) else { return nil }
            j.periodic = Periodic(cron: cron, timeZone: tz, prohibitOverlap: po)
        }
        guard let groups = list(&r, group) else { return nil }
        j.groups = groups
        return j
    }

    // MARK: - Placement rules

    static func enc(_ c: Constraint, _ w: inout ByteWriter) { str(c.attribute, &w); str(c.operator.rawValue, &w); str(c.value, &w) }
    static func constraint(_ r: inout ByteReader) -> Constraint? {
        guard let a = str(&r), let op = raw(&r, Constraint.Operator.self), let v = str(&r) else { return nil }
        return Constraint(attribute: a, operator: op, value: v)
    }

    static func enc(_ a: Affinity, _ w: inout ByteWriter) { str(a.attribute, &w); str(a.operator.rawValue, &w); str(a.value, &w); int(a.weight, &w) }
    static func affinity(_ r: inout ByteReader) -> Affinity? {
        guard let a = str(&r), let op = raw(&r, Constraint.Operator.self), let v = str(&r), let wt = int(&r) else { return nil }
        return Affinity(attribute: a, operator: op, value: v, weight: wt)
    }

    static func enc(_ s: Spread, _ w: inout ByteWriter) {
        str(s.attribute, &w); int(s.weight, &w)
        list(s.targets, &w) { t, w in str(t.value, &w); int(t.percent, &w) }
    }
    static func spread(_ r: inout ByteReader) -> Spread? {
        guard let a = str(&r), let wt = int(&r),
              let ts = list(&r, { r -> Spread.Target? in
                  guard let v = str(&r), let p = int(&r) else { return nil }
                  return Spread.Target(value: v, percent: p)
              }) else { return nil }
        var s = Spread(attribute: a, weight: wt)
        s.targets = ts
        return s
    }

    // MARK: - Groups and tasks

    static func enc(_ g: TaskGroup, _ w: inout ByteWriter) {
        str(g.name, &w); int(g.count, &w)
        list(g.constraints, &w, enc); list(g.affinities, &w, enc); list(g.spreads, &w, enc)
        int(g.restart.attempts, &w); ms(g.restart.interval, &w); ms(g.restart.delay, &w); str(g.restart.mode.rawValue, &w)
        let rs = g.reschedule
        int(rs.attempts, &w); ms(rs.interval, &w); ms(rs.delay, &w); str(rs.delayFunction.rawValue, &w); ms(rs.maxDelay, &w); bool(rs.unlimited, &w)
        int(g.migrate.maxParallel, &w); ms(g.migrate.minHealthyTime, &w); ms(g.migrate.healthyDeadline, &w)
        int(g.ephemeralDiskMiB, &w)
        list(g.ports, &w) { p, w in str(p.label, &w); optInt(p.staticPort, &w); optInt(p.to, &w) }
        list(g.services, &w) { s, w in
            str(s.name, &w); opt(s.port, &w); strings(s.tags, &w)
            list(s.checks, &w) { c, w in
                str(c.type.rawValue, &w); opt(c.path, &w); opt(c.command, &w); strings(c.args, &w); opt(c.port, &w)
                ms(c.interval, &w); ms(c.timeout, &w); int(c.restartAfter, &w)
            }
        }
        list(g.tasks, &w, enc)
        map(g.meta, &w)
    }

    static func group(_ r: inout ByteReader) -> TaskGroup? {
        guard let name = str(&r), let count = int(&r), let cs = list(&r, constraint), let afs = list(&r, affinity), let sps = list(&r, spread),
              let ra = int(&r), let ri = ms(&r), let rd = ms(&r), let rm = raw(&r, RestartPolicy.Mode.self),
              let sa = int(&r), let si = ms(&r), let sd = ms(&r), let sf = raw(&r, ReschedulePolicy.DelayFunction.self), let smax = ms(&r),
              let su = bool(&r), let mp = int(&r), let mht = ms(&r), let mhd = ms(&r), let disk = int(&r),
              let ports = list(&r, { r -> Port? in
                  guard let label = str(&r), let st = optInt(&r), let to = optInt(&r) else { return nil }
                  return Port(label: label, staticPort: st, to: to)
              }),
              let services = list(&r, { r -> ServiceSpec? in
                  guard let name = str(&r), let port = opt(&r), let tags = strings(&r),
                        let checks = list(&r, { r -> Check? in
                            guard let type = raw(&r, Check.Kind.self), let path = opt(&r), let command = opt(&r), let args = strings(&r),
                                  let port = opt(&r), let interval = ms(&r), let timeout = ms(&r), let ra = int(&r) else { return nil }
                            return Check(type: type, path: path, command: command, args: args, port: port, interval: interval, timeout: timeout, restartAfter: ra)
                        }) else { return nil }
                  var s = ServiceSpec(name: name, port: port)
                  s.tags = tags
                  s.checks = checks
                  return s
              }),
              let tasks = list(&r, task), let meta = map(&r) else { return nil }
        var g = TaskGroup(name: name, count: count, tasks: tasks)
        g.constraints = cs; g.affinities = afs; g.spreads = sps
        g.restart = RestartPolicy(attempts: ra, interval: ri, delay: rd, mode: rm)
        g.reschedule = ReschedulePolicy(attempts: sa, interval: si, delay: sd, delayFunction: sf, maxDelay: smax, unlimited: su)
        g.migrate.maxParallel = mp; g.migrate.minHealthyTime = mht; g.migrate.healthyDeadline = mhd
        g.ephemeralDiskMiB = disk; g.ports = ports; g.services = services; g.meta = meta
        return g
    }

    static func enc(_ t: TaskSpec, _ w: inout ByteWriter) {
        str(t.name, &w); str(t.driver.rawValue, &w)
        let c = t.config
        opt(c.image, &w); opt(c.command, &w); strings(c.args, &w)
        w.byte(c.entrypoint == nil ? 0 : 1); if let e = c.entrypoint { strings(e, &w) }
        opt(c.workdir, &w)
        w.byte(c.auth == nil ? 0 : 1); if let a = c.auth { str(a.username, &w); str(a.password, &w) }
        map(t.env, &w)
        int(t.resources.cpuMillicores, &w); int(t.resources.memoryMiB, &w); optInt(t.resources.memoryMaxMiB, &w); bool(t.resources.cpuHardLimit, &w)
        ms(t.killTimeout, &w); str(t.killSignal, &w)
        w.byte(t.lifecycle == nil ? 0 : 1); if let l = t.lifecycle { str(l.hook.rawValue, &w); bool(l.sidecar, &w) }
        int(t.logs.maxFiles, &w); int(t.logs.maxFileSizeMiB, &w)
        opt(t.user, &w)
        map(t.meta, &w)
    }

    static func task(_ r: inout ByteReader) -> TaskSpec? {
        guard let name = str(&r), let driver = raw(&r, TaskSpec.Driver.self), let image = opt(&r), let command = opt(&r),
              let args = strings(&r), let hasEntry = r.byte(), hasEntry <= 1 else { return nil }
        var config = DriverConfig(command: command, args: args)
        config.image = image
        if hasEntry == 1 { guard let e = strings(&r) else { return nil }; config.entrypoint = e }
        guard let workdir = opt(&r), let hasAuth = r.byte(), hasAuth <= 1 else { return nil }
        config.workdir = workdir
        if hasAuth == 1 {
            guard let u = str(&r), let p = str(&r) else { return nil }
            config.auth = RegistryAuth(username: u, password: p)
        }
        guard let env = map(&r), let cpu = int(&r), let mem = int(&r), let memMax = optInt(&r), let hard = bool(&r),
              let kt = ms(&r), let ks = str(&r), let hasLife = r.byte(), hasLife <= 1 else { return nil }
        var t = TaskSpec(name: name, driver: driver, config: config)
        t.env = env
        t.resources = Resources(cpuMillicores: cpu, memoryMiB: mem)
        t.resources.memoryMaxMiB = memMax
        t.resources.cpuHardLimit = hard
        t.killTimeout = kt
        t.killSignal = ks
        if hasLife == 1 {
            guard let hook = raw(&r, Lifecycle.Hook.self), let sidecar = bool(&r) else { return nil }
            t.lifecycle = Lifecycle(hook: hook, sidecar: sidecar)
        }
        guard let mf = int(&r), let mfs = int(&r), let user = opt(&r), let meta = map(&r) else { return nil }
        t.logs.maxFiles = mf
        t.logs.maxFileSizeMiB = mfs
        t.user = user
        t.meta = meta
        return t
    }
}
