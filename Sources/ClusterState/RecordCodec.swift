import CaravanModel
import Primitives

/// Binary encoding of nodes, allocations and evaluations (Raft commands and snapshots).
/// Jobs are encoded by `JobCodec`.
enum RecordCodec {
    /// A string map, keys sorted; keys and values longer than `key`/`value` bytes are cut.
    static func map(_ m: [String: String], _ w: inout ByteWriter, key: Int = 4096, value: Int = 65536) {
        w.varint(UInt64(m.count))
        for (k, v) in m.sorted(by: { $0.key < $1.key }) { w.string(k, max: key); w.string(v, max: value) }
    }

    static func map(_ r: inout ByteReader, count: Int = 100_000, key: Int = 4096, value: Int = 65536) -> [String: String]? {
        guard let n = r.count(max: count) else { return nil }
        var out: [String: String] = [:]
        for _ in 0..<n {
            guard let k = r.string(max: key), let v = r.string(max: value) else { return nil }
            out[k] = v
        }
        return out
    }

    static func int(_ v: Int, _ w: inout ByteWriter) { w.varint(UInt64(bitPattern: Int64(v))) }
    static func int(_ r: inout ByteReader) -> Int? { r.varint().map { Int(Int64(bitPattern: $0)) } }

    static func enc(_ n: Node, _ w: inout ByteWriter) {
        w.string(n.id); w.string(n.address); w.string(n.datacenter); w.string(n.nodeClass)
        map(n.attributes, &w); map(n.meta, &w)
        w.varint(UInt64(n.drivers.count)); for d in n.drivers { w.string(d) }
        int(n.cpuMillicores, &w); int(n.memoryMiB, &w); int(n.diskMiB, &w)
        w.string(n.status.rawValue); w.string(n.eligibility.rawValue); w.byte(n.draining ? 1 : 0)
        w.varint(n.createIndex); w.varint(n.modifyIndex)
    }

    static func node(_ r: inout ByteReader) -> Node? {
        guard let id = r.string(), let addr = r.string(), let dc = r.string(), let cls = r.string(),
              let attrs = map(&r), let meta = map(&r), let dn = r.count(max: 64) else { return nil }
        var drivers: [String] = []
        for _ in 0..<dn { guard let d = r.string() else { return nil }; drivers.append(d) }
        guard let cpu = int(&r), let mem = int(&r), let disk = int(&r),
              let st = r.string().flatMap(Node.Status.init(rawValue:)), let el = r.string().flatMap(Node.Eligibility.init(rawValue:)),
              let dr = r.byte(), let ci = r.varint(), let mi = r.varint() else { return nil }
        var n = Node(id: id, address: addr, cpuMillicores: cpu, memoryMiB: mem, diskMiB: disk)
        n.datacenter = dc; n.nodeClass = cls; n.attributes = attrs; n.meta = meta; n.drivers = drivers
        n.status = st; n.eligibility = el; n.draining = dr == 1; n.createIndex = ci; n.modifyIndex = mi
        return n
    }

    static func enc(_ a: Allocation, _ w: inout ByteWriter) {
        w.string(a.id); w.string(a.namespace); w.string(a.jobID); int(a.jobVersion, &w); w.string(a.group); w.string(a.name)
        w.string(a.nodeID); int(a.cpuMillicores, &w); int(a.memoryMiB, &w); int(a.diskMiB, &w)
        w.varint(UInt64(a.ports.count)); for (k, v) in a.ports.sorted(by: { $0.key < $1.key }) { w.string(k); int(v, &w) }
        w.string(a.desiredStatus.rawValue); w.string(a.desiredDescription, max: 4096)
        w.string(a.clientStatus.rawValue); w.string(a.clientDescription, max: 4096)
        w.string(a.previousAllocation ?? ""); int(a.rescheduleAttempts, &w)
        w.varint(a.createIndex); w.varint(a.modifyIndex)
    }

    static func enc(_ states: [String: TaskState], _ w: inout ByteWriter) {
        w.varint(UInt64(states.count))
        for (name, t) in states.sorted(by: { $0.key < $1.key }) {
            w.string(name); w.string(t.state.rawValue); w.byte(t.failed ? 1 : 0); int(t.restarts, &w)
            w.byte(t.exitCode == nil ? 0 : 1); int(t.exitCode ?? 0, &w); int(Int(t.startedAt), &w); int(Int(t.finishedAt), &w)
            w.varint(UInt64(t.events.count))
            for e in t.events { int(Int(e.time), &w); w.string(e.type, max: 256); w.string(e.message, max: 2048) }
        }
    }

    static func taskStates(_ r: inout ByteReader) -> [String: TaskState]? {
        guard let n = r.count(max: 1024) else { return nil }
        var out: [String: TaskState] = [:]
        for _ in 0..<n {
            guard let name = r.string(), let st = r.string().flatMap(TaskState.State.init(rawValue:)), let failed = r.byte(),
                  let restarts = int(&r), let hasCode = r.byte(), let code = int(&r), let started = int(&r), let finished = int(&r),
                  let en = r.count(max: 1024) else { return nil }
            var t = TaskState(state: st)
            t.failed = failed == 1; t.restarts = restarts; t.exitCode = hasCode == 1 ? code : nil
            t.startedAt = Int64(started); t.finishedAt = Int64(finished)
            for _ in 0..<en {
                guard let time = int(&r), let type = r.string(max: 256), let msg = r.string(max: 2048) else { return nil }
                t.events.append(TaskEvent(time: Int64(time), type: type, message: msg))
            }
            out[name] = t
        }
        return out
    }

    static func allocation(_ r: inout ByteReader) -> Allocation? {
        guard let id = r.string(), let ns = r.string(), let job = r.string(), let ver = int(&r), let g = r.string(), let name = r.string(),
              let node = r.string(), let cpu = int(&r), let mem = int(&r), let disk = int(&r), let pn = r.count(max: 1024) else { return nil }
        var ports: [String: Int] = [:]
        for _ in 0..<pn { guard let k = r.string(), let v = int(&r) else { return nil }; ports[k] = v }
        guard let ds = r.string().flatMap(Allocation.DesiredStatus.init(rawValue:)), let dd = r.string(max: 4096),
              let cs = r.string().flatMap(Allocation.ClientStatus.init(rawValue:)), let cd = r.string(max: 4096),
              let prev = r.string(), let attempts = int(&r), let ci = r.varint(), let mi = r.varint() else { return nil }
        var a = Allocation(id: id, jobID: job, jobVersion: ver, group: g, name: name, nodeID: node, cpuMillicores: cpu, memoryMiB: mem, diskMiB: disk)
        a.namespace = ns; a.ports = ports; a.desiredStatus = ds; a.desiredDescription = dd; a.clientStatus = cs; a.clientDescription = cd
        a.previousAllocation = prev.isEmpty ? nil : prev; a.rescheduleAttempts = attempts; a.createIndex = ci; a.modifyIndex = mi
        return a
    }

    static func enc(_ e: Evaluation, _ w: inout ByteWriter) {
        w.string(e.id); w.string(e.namespace); w.string(e.jobID); int(e.priority, &w); w.string(e.triggeredBy.rawValue)
        w.string(e.status.rawValue); w.string(e.statusDescription, max: 4096); w.string(e.nodeID ?? "")
        map(e.failedPlacements, &w); w.varint(e.createIndex); w.varint(e.modifyIndex)
    }

    static func evaluation(_ r: inout ByteReader) -> Evaluation? {
        guard let id = r.string(), let ns = r.string(), let job = r.string(), let pr = int(&r),
              let trig = r.string().flatMap(Evaluation.Trigger.init(rawValue:)), let st = r.string().flatMap(Evaluation.Status.init(rawValue:)),
              let sd = r.string(max: 4096), let node = r.string(), let fp = map(&r), let ci = r.varint(), let mi = r.varint() else { return nil }
        var e = Evaluation(id: id, jobID: job, priority: pr, triggeredBy: trig)
        e.namespace = ns; e.status = st; e.statusDescription = sd; e.nodeID = node.isEmpty ? nil : node; e.failedPlacements = fp
        e.createIndex = ci; e.modifyIndex = mi
        return e
    }

    static func enc(_ n: Namespace, _ w: inout ByteWriter) {
        w.string(n.name); w.string(n.description, max: 4096); w.varint(n.createIndex); w.varint(n.modifyIndex)
        // Bit 0: a quota follows; bit 1: a driver rule follows (namespaces written before driver
        // rules have only 0 or 1 here).
        w.byte((n.quota == nil ? 0 : 1) | (n.drivers.isUnrestricted ? 0 : 2))
        if let q = n.quota {
            for v in [q.cpuMillicores, q.memoryMiB, q.instances] {
                w.byte(v == nil ? 0 : 1)
                if let v { w.varint(UInt64(max(0, v))) }
            }
        }
        if !n.drivers.isUnrestricted {
            w.byte(n.drivers.enabled == nil ? 0 : 1)
            for list in [n.drivers.enabled ?? [], n.drivers.disabled] {
                w.varint(UInt64(list.count))
                for d in list { w.string(d.rawValue) }
            }
        }
    }

    static func namespace(_ r: inout ByteReader) -> Namespace? {
        guard let name = r.string(), Namespace.isValidName(name), let d = r.string(max: 4096), let ci = r.varint(), let mi = r.varint(),
              let flags = r.byte(), flags <= 3 else { return nil }
        var n = Namespace(name: name, description: d)
        n.createIndex = ci
        n.modifyIndex = mi
        if flags & 1 != 0 {
            var parts: [Int?] = []
            for _ in 0..<3 {
                guard let has = r.byte(), has <= 1 else { return nil }
                if has == 1 {
                    guard let v = r.varint(), v <= 1 << 40 else { return nil }
                    parts.append(Int(v))
                } else {
                    parts.append(nil)
                }
            }
            n.quota = Quota(cpuMillicores: parts[0], memoryMiB: parts[1], instances: parts[2])
        }
        if flags & 2 != 0 {
            guard let hasEnabled = r.byte(), hasEnabled <= 1 else { return nil }
            var lists: [[TaskSpec.Driver]] = []
            for _ in 0..<2 {
                guard let count = r.varint(), count <= UInt64(TaskSpec.Driver.allCases.count) else { return nil }
                var list: [TaskSpec.Driver] = []
                for _ in 0..<count {
                    guard let d = r.string().flatMap(TaskSpec.Driver.init(rawValue:)) else { return nil }
                    list.append(d)
                }
                lists.append(list)
            }
            n.drivers = DriverRule(enabled: hasEnabled == 1 ? lists[0] : nil, disabled: lists[1])
        }
        return n
    }
}
