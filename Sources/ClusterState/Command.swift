import CaravanModel
import Primitives

/// A change to the cluster state, as one Raft entry: a type byte, then fields. Types with the
/// high bit set (``ignorableFlag``) may be skipped by an agent that does not know them, so a
/// newer leader can add commands without stopping older followers; any other unknown type is
/// an error the same on every agent.
public enum Command: Sendable, Equatable {
    /// A job as its file's text, parsed when applied: what agents before 2026-12-07 wrote. Still
    /// applied when a log or snapshot holds it; new registrations are `register`.
    case registerJob(text: String)
    /// A job, parsed and defaulted where it was submitted, encoded by `JobCodec`: applying it
    /// parses nothing, so every release replays it to the same job. A register that changes the
    /// job makes a new version.
    case register(Job)
    case deregisterJob(namespace: String, id: String, purge: Bool)
    case upsertNode(Node)
    case nodeStatus(id: String, status: Node.Status)
    case nodeEligibility(id: String, eligibility: Node.Eligibility)
    case nodeDrain(id: String, draining: Bool)
    /// The outcome of a plan the leader verified: allocations to create or update (placements,
    /// stops, evictions), and evaluations to create or update.
    case applyPlan(allocations: [Allocation], evaluations: [Evaluation])
    /// Agents report what their allocations are doing.
    case clientUpdate([ClientAllocationUpdate])
    case upsertEvaluations([Evaluation])
    /// A periodic job launched (or decided not to launch) at this Unix time; the next launch
    /// is computed from here, so a new leader neither repeats nor skips one.
    case periodicLaunch(namespace: String, id: String, time: Int64)
    /// The cluster-wide scheduler configuration: how the leader ranks nodes.
    case schedulerConfig(algorithm: String)
    /// A job version whose instances all became healthy: a rollout that finished.
    case markStable(namespace: String, id: String, version: Int)
    /// The canaries of a job version are good: the rest of its instances may be replaced.
    case promote(namespace: String, id: String, version: Int)
    /// A namespace made or changed (description, quota).
    case upsertNamespace(Namespace)
    /// A namespace removed (refused while jobs are registered in it).
    case deleteNamespace(String)

    public static let ignorableFlag: UInt8 = 0x80
    /// The state machine command spaces: 0x01…0x3F cluster state (0x81…0xBF ignorable).
    enum Tag: UInt8 {
        case registerJob = 0x01, deregisterJob, upsertNode, nodeStatus, nodeEligibility, nodeDrain, applyPlan, clientUpdate, upsertEvaluations,
             periodicLaunch, clientTaskUpdate, schedulerConfig, markStable, promote, upsertNamespace, deleteNamespace, register,
             /// `applyPlan` as agents write it since 2026-12-07: the state checks each placement's room
             /// when it applies it (``ClusterState/applyApplyPlan(_:_:index:checked:)``); the older
             /// tag, in older logs, is applied as it was.
             checkedPlan
    }

    public static func isClusterStateCommand(_ firstByte: UInt8) -> Bool {
        let t = firstByte & ~ignorableFlag
        return t >= 0x01 && t <= 0x3F
    }

    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: 256)
        switch self {
        case .registerJob(let text):
            w.byte(Tag.registerJob.rawValue); w.string(text, max: 4 << 20)
        case .deregisterJob(let ns, let id, let purge):
            w.byte(Tag.deregisterJob.rawValue); w.string(ns); w.string(id); w.byte(purge ? 1 : 0)
        case .upsertNode(let n):
            w.byte(Tag.upsertNode.rawValue); RecordCodec.enc(n, &w)
        case .nodeStatus(let id, let st):
            w.byte(Tag.nodeStatus.rawValue); w.string(id); w.string(st.rawValue)
        case .nodeEligibility(let id, let el):
            w.byte(Tag.nodeEligibility.rawValue); w.string(id); w.string(el.rawValue)
        case .nodeDrain(let id, let d):
            w.byte(Tag.nodeDrain.rawValue); w.string(id); w.byte(d ? 1 : 0)
        case .applyPlan(let allocs, let evals):
            w.byte(Tag.checkedPlan.rawValue)
            w.varint(UInt64(allocs.count)); for a in allocs { RecordCodec.enc(a, &w) }
            w.varint(UInt64(evals.count)); for e in evals { RecordCodec.enc(e, &w) }
        case .clientUpdate(let updates):
            // Updates that carry task states use the newer type; the older one stays readable in old logs.
            let withTasks = updates.contains { $0.taskStates != nil || $0.checks != nil }
            w.byte(withTasks ? Tag.clientTaskUpdate.rawValue : Tag.clientUpdate.rawValue)
            w.varint(UInt64(updates.count))
            for u in updates {
                w.string(u.allocationID); w.string(u.clientStatus.rawValue); w.string(u.description, max: 4096)
                if withTasks {
                    w.byte(u.taskStates == nil ? 0 : 1); RecordCodec.enc(u.taskStates ?? [:], &w)
                    w.byte(u.checks == nil ? 0 : 1); RecordCodec.map(u.checks ?? [:], &w)
                }
            }
        case .upsertEvaluations(let evals):
            w.byte(Tag.upsertEvaluations.rawValue)
            w.varint(UInt64(evals.count)); for e in evals { RecordCodec.enc(e, &w) }
        case .periodicLaunch(let ns, let id, let time):
            w.byte(Tag.periodicLaunch.rawValue); w.string(ns); w.string(id); RecordCodec.int(Int(time), &w)
        case .schedulerConfig(let algorithm):
            w.byte(Tag.schedulerConfig.rawValue); w.string(algorithm)
        case .markStable(let ns, let id, let version):
            w.byte(Tag.markStable.rawValue); w.string(ns); w.string(id); w.varint(UInt64(version))
        case .promote(let ns, let id, let version):
            w.byte(Tag.promote.rawValue); w.string(ns); w.string(id); w.varint(UInt64(version))
        case .upsertNamespace(let n):
            w.byte(Tag.upsertNamespace.rawValue); RecordCodec.enc(n, &w)
        case .deleteNamespace(let name):
            w.byte(Tag.deleteNamespace.rawValue); w.string(name)
        case .register(let job):
            w.byte(Tag.register.rawValue); w.blob(JobCodec.encode(job))
        }
        return w.bytes
    }

    public enum Decoded: Sendable, Equatable {
        case command(Command)
        /// A newer agent's command this one may skip.
        case ignorable(UInt8)
        case invalid(String)
    }

    public static func decode(_ bytes: [UInt8]) -> Decoded {
        var r = ByteReader(bytes)
        guard let type = r.byte() else { return .invalid("empty command") }
        guard let tag = Tag(rawValue: type) else {
            return type & ignorableFlag != 0 ? .ignorable(type) : .invalid("unknown command type \(type)")
        }
        let c: Command?
        switch tag {
        case .registerJob: c = r.string(max: 4 << 20).map { .registerJob(text: $0) }
        case .register: c = r.blob(max: 4 << 20).flatMap(JobCodec.decode).map { .register($0) }
        case .deregisterJob:
            if let ns = r.string(), let id = r.string(), let p = r.byte() { c = .deregisterJob(namespace: ns, id: id, purge: p == 1) } else { c = nil }
        case .upsertNode: c = RecordCodec.node(&r).map { .upsertNode($0) }
        case .nodeStatus:
            if let id = r.string(), let st = r.string().flatMap(Node.Status.init(rawValue:)) { c = .nodeStatus(id: id, status: st) } else { c = nil }
        case .nodeEligibility:
            if let id = r.string(), let el = r.string().flatMap(Node.Eligibility.init(rawValue:)) { c = .nodeEligibility(id: id, eligibility: el) } else { c = nil }
        case .nodeDrain:
            if let id = r.string(), let d = r.byte() { c = .nodeDrain(id: id, draining: d == 1) } else { c = nil }
        case .applyPlan, .checkedPlan:
            var allocs: [Allocation] = [], evals: [Evaluation] = []
            var ok = false
            if let n = r.count(max: 1 << 20) {
                ok = true
                for _ in 0..<n { guard let a = RecordCodec.allocation(&r) else { ok = false; break }; allocs.append(a) }
                if ok, let m = r.count(max: 1 << 20) {
                    for _ in 0..<m { guard let e = RecordCodec.evaluation(&r) else { ok = false; break }; evals.append(e) }
                } else { ok = false }
            }
            c = ok ? .applyPlan(allocations: allocs, evaluations: evals) : nil
        case .clientUpdate, .clientTaskUpdate:
            var ups: [ClientAllocationUpdate] = []
            var ok = false
            if let n = r.count(max: 1 << 20) {
                ok = true
                for _ in 0..<n {
                    guard let id = r.string(), let st = r.string().flatMap(Allocation.ClientStatus.init(rawValue:)), let d = r.string(max: 4096) else { ok = false; break }
                    var u = ClientAllocationUpdate(allocationID: id, clientStatus: st, description: d)
                    if tag == .clientTaskUpdate {
                        guard let has = r.byte(), let ts = RecordCodec.taskStates(&r), let hasChecks = r.byte(), let cs = RecordCodec.map(&r) else { ok = false; break }
                        u.taskStates = has == 1 ? ts : nil
                        u.checks = hasChecks == 1 ? cs : nil
                    }
                    ups.append(u)
                }
            }
            c = ok ? .clientUpdate(ups) : nil
        case .periodicLaunch:
            if let ns = r.string(), let id = r.string(), let t = RecordCodec.int(&r) { c = .periodicLaunch(namespace: ns, id: id, time: Int64(t)) } else { c = nil }
        case .schedulerConfig: c = r.string().map { .schedulerConfig(algorithm: $0) }
        case .markStable:
            if let ns = r.string(), let id = r.string(), let v = r.varint(), v < 1 << 31 { c = .markStable(namespace: ns, id: id, version: Int(v)) } else { c = nil }
        case .promote:
            if let ns = r.string(), let id = r.string(), let v = r.varint(), v < 1 << 31 { c = .promote(namespace: ns, id: id, version: Int(v)) } else { c = nil }
        case .upsertNamespace: c = RecordCodec.namespace(&r).map { .upsertNamespace($0) }
        case .deleteNamespace: c = r.string().map { .deleteNamespace($0) }
        case .upsertEvaluations:
            var evals: [Evaluation] = []
            var ok = false
            if let n = r.count(max: 1 << 20) {
                ok = true
                for _ in 0..<n { guard let e = RecordCodec.evaluation(&r) else { ok = false; break }; evals.append(e) }
            }
            c = ok ? .upsertEvaluations(evals) : nil
        }
        guard let c, r.atEnd else { return .invalid("malformed \(tag) command") }
        return .command(c)
    }
}

public struct ClientAllocationUpdate: Sendable, Equatable {
    public var allocationID: String
    public var clientStatus: Allocation.ClientStatus
    public var description: String
    /// The tasks' states; nil leaves the recorded ones as they are.
    public var taskStates: [String: TaskState]?
    /// Service check statuses; nil leaves the recorded ones as they are.
    public var checks: [String: String]?
    public init(allocationID: String, clientStatus: Allocation.ClientStatus, description: String, taskStates: [String: TaskState]? = nil,
                checks: [String: String]? = nil) {
        self.allocationID = allocationID
        self.clientStatus = clientStatus
        self.description = description
        self.taskStates = taskStates
        self.checks = checks
    }
}

extension Evaluation {
    /// The id of the evaluation a job registration or stop committed at `index` creates:
    /// derived from the index and the job, so every agent applies the same and the API can
    /// tell the caller.
    public static func id(at index: UInt64, for key: ClusterState.JobKey) -> String {
        // FNV-1a of the job and the index first (so ids differ in their first characters, which
        // is what the CLI shows), then the index itself (so they are unique).
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in Array((key.namespace + "/" + key.id).utf8) + (0..<8).map({ UInt8(truncatingIfNeeded: index >> (8 * $0)) }) {
            h = (h ^ UInt64(b)) &* 0x100_0000_01b3
        }
        func hex(_ v: UInt64, _ n: Int) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, n - s.count)) + s
        }
        let a = hex(h, 16), b = hex(index, 16)
        let all = Array(a + b)
        return String(all[0..<8]) + "-" + String(all[8..<12]) + "-" + String(all[12..<16]) + "-" + String(all[16..<20]) + "-" + String(all[20..<32])
    }

    static func pending(for key: ClusterState.JobKey, priority: Int, _ trigger: Trigger, index: UInt64) -> Evaluation {
        var e = Evaluation(id: id(at: index, for: key), jobID: key.id, priority: priority, triggeredBy: trigger)
        e.namespace = key.namespace
        return e
    }
}
