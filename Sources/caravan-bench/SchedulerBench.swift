import ArgumentParser
import CaravanModel
import CaravanTesting
import Foundation
import Scheduler

struct SchedulerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Placement speed and packing quality of the scheduler (one core, pure function, no IO).")

    @Option(help: "Cluster sizes for the speed run, comma-separated.") var sizes: String = "1000,5000,10000"
    @Option(help: "Instances of the one big job in the speed run.") var count: Int = 10000
    @Option(help: "Nodes for the packing-quality runs.") var packNodes: Int = 1000
    @Option(help: "Seed.") var seed: UInt64 = 42

    func run() async throws {
        say("# caravan-bench scheduler — \(Date())")
        say("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores (one used)\n")
        say("## placements per second: one job of \(count) instances, one constraint and one spread, heterogeneous nodes")
        for n in sizes.split(separator: ",").compactMap({ Int($0) }) {
            var r = SeededRandom(seed: seed)
            let nodes = Self.heterogeneous(n, &r, linuxShare: 0.95)
            var job = Self.job("big", count: count, cpu: 100, mem: 128)
            job.constraints = [Constraint(attribute: "${attr.kernel.name}", operator: .equal, value: "linux")]
            job.spreads = [Spread(attribute: "${meta.rack}")]
            var k = 0
            let s = Scheduler(newID: { k += 1; return "a\(k)" })
            let clock = ContinuousClock()
            let t0 = clock.now
            let plan = s.schedule(SchedulerInput(job: job, jobVersion: 0, jobStopped: false, nodes: nodes, allocations: []))
            let took = clock.now - t0
            let secs = Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
            say("\(n) nodes: \(plan.placements.count) placed in \(String(format: "%.2f", secs)) s → \(Int(Double(plan.placements.count) / secs)) placements/s")
        }
        say("")
        say("## packing quality at \(packNodes) nodes (nodes used ÷ lower bound max(⌈ΣCPU/C⌉, ⌈ΣMem/M⌉); 1.00 is perfect)")
        for mix in ["uniform", "bimodal", "few-big-many-small"] {
            let (asks, capCPU, capMem) = Self.mix(mix, seed: seed, nodes: packNodes)
            let bound = max(Int((Double(asks.reduce(0) { $0 + $1.0 }) / Double(capCPU)).rounded(.up)),
                            Int((Double(asks.reduce(0) { $0 + $1.1 }) / Double(capMem)).rounded(.up)))
            let ours = Self.packWithScheduler(asks, nodes: packNodes, cpu: capCPU, mem: capMem)
            let ffd = Self.firstFitDecreasing(asks, cpu: capCPU, mem: capMem)
            let sampled = Self.sampledBinpack(asks, nodes: packNodes, cpu: capCPU, mem: capMem, seed: seed)
            say("\(mix): \(asks.count) instances, lower bound \(bound) nodes — caravan \(String(format: "%.3f", Double(ours) / Double(bound))), first-fit decreasing \(String(format: "%.3f", Double(ffd) / Double(bound))), sampled bin-pack (⌈log2 n⌉ candidates) \(String(format: "%.3f", Double(sampled) / Double(bound)))")
        }
        say("")
        brokerRun()
    }

    /// The leader's evaluation broker: enqueue, deliver and acknowledge evaluations of many jobs
    /// with random priorities, newer work merging behind evaluations in flight.
    func brokerRun() {
        say("## evaluation broker: 200,000 evaluations over 10,000 jobs (enqueue, deliver, acknowledge)")
        var r = SeededRandom(seed: seed)
        var b = EvalBroker()
        let clock = ContinuousClock()
        let t0 = clock.now
        var delivered = 0, n = 0
        var out: [(String, UInt64)] = []
        while n < 200_000 {
            for _ in 0..<50 {
                n += 1
                var e = Evaluation(id: "e\(n)", jobID: "j\(Int.random(in: 0..<10_000, using: &r))", priority: Int.random(in: 1...100, using: &r),
                                   triggeredBy: .allocUpdate)
                e.namespace = "default"
                b.enqueue(e)
            }
            for _ in 0..<40 { if let d = b.dequeue(now: 0) { out.append((d.evaluation.id, d.token)); delivered += 1 } }
            for (id, t) in out { try? b.ack(id, token: t) }
            out.removeAll(keepingCapacity: true)
        }
        while let d = b.dequeue(now: 0) { try? b.ack(d.evaluation.id, token: d.token); delivered += 1 }
        let took = clock.now - t0
        let secs = Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
        say("\(n) enqueued, \(delivered) delivered (the rest merged into their job's queued one) in \(String(format: "%.3f", secs)) s → \(Int(Double(n) / secs)) evaluations/s")
        say("")
    }

    /// `n` nodes of 4, 8 or 16 cores and 8, 16 or 32 GiB drawn from `r`, in 10 racks; with
    /// `linuxShare`, about that share run Linux (drawn per node after its size).
    static func heterogeneous(_ n: Int, _ r: inout SeededRandom, linuxShare: Double? = nil) -> [Node] {
        (0..<n).map { i in
            let cpu = [4000, 8000, 16000].randomElement(using: &r)!, mem = [8192, 16384, 32768].randomElement(using: &r)!
            return node(i, cpu: cpu, mem: mem, rack: "r\(i % 10)", linux: linuxShare.map { r.chance($0) } ?? true)
        }
    }

    static func node(_ i: Int, cpu: Int, mem: Int, rack: String = "r0", linux: Bool = true) -> Node {
        var n = Node(id: "n\(i)", address: "10.0.0.1", cpuMillicores: cpu, memoryMiB: mem, diskMiB: 1_000_000)
        n.attributes = ["kernel.name": linux ? "linux" : "darwin"]
        n.meta = ["rack": rack]
        n.drivers = ["raw_exec"]
        return n
    }

    static func job(_ id: String, count: Int, cpu: Int, mem: Int) -> Job {
        var t = TaskSpec(name: "t", driver: .rawExec, config: DriverConfig(command: "/bin/true"))
        t.resources = Resources(cpuMillicores: cpu, memoryMiB: mem)
        var g = TaskGroup(name: "g", count: count, tasks: [t])
        g.ephemeralDiskMiB = 1
        return Job(id: id, groups: [g])
    }

    /// (cpu, mem) asks, and the node size.
    static func mix(_ name: String, seed: UInt64, nodes: Int) -> ([(Int, Int)], Int, Int) {
        var r = SeededRandom(seed: seed)
        let capCPU = 8000, capMem = 16384
        var asks: [(Int, Int)] = []
        // Aim at ~80% of the cluster so packing matters but everything fits.
        let target = Int(Double(nodes) * 0.8 * Double(capCPU))
        var total = 0
        while total < target {
            let a: (Int, Int)
            switch name {
            case "uniform": a = (Int.random(in: 1...16, using: &r) * 100, Int.random(in: 1...32, using: &r) * 64)
            case "bimodal": a = r.chance(0.5) ? (Int.random(in: 1...3, using: &r) * 100, Int.random(in: 1...4, using: &r) * 128) : (Int.random(in: 20...30, using: &r) * 100, Int.random(in: 20...40, using: &r) * 128)
            default: a = r.chance(0.1) ? (Int.random(in: 30...40, using: &r) * 100, Int.random(in: 40...60, using: &r) * 128) : (Int.random(in: 1...2, using: &r) * 100, Int.random(in: 1...2, using: &r) * 128)
            }
            asks.append(a)
            total += a.0
        }
        return (asks, capCPU, capMem)
    }

    /// Our scheduler, one single-instance job per ask in arrival order (as jobs come in).
    static func packWithScheduler(_ asks: [(Int, Int)], nodes n: Int, cpu: Int, mem: Int) -> Int {
        let nodes = (0..<n).map { node($0, cpu: cpu, mem: mem) }
        var allocs: [Allocation] = []
        var k = 0
        let s = Scheduler(newID: { k += 1; return "a\(k)" })
        // Batch asks into jobs of 50 identical-shape instances to keep the run short.
        var i = 0
        while i < asks.count {
            let chunk = asks[i..<min(asks.count, i + 1)]
            for (j, a) in chunk.enumerated() {
                let plan = s.schedule(SchedulerInput(job: job("j\(i + j)", count: 1, cpu: a.0, mem: a.1), jobVersion: 0, jobStopped: false,
                                                     nodes: nodes, allocations: allocs))
                for var p in plan.placements { p.clientStatus = .running; allocs.append(p) }
            }
            i += chunk.count
        }
        return Set(allocs.map(\.nodeID)).count
    }

    static func firstFitDecreasing(_ asks: [(Int, Int)], cpu: Int, mem: Int) -> Int {
        var bins: [(Int, Int)] = []
        for a in asks.sorted(by: { Double($0.0) / Double(cpu) + Double($0.1) / Double(mem) > Double($1.0) / Double(cpu) + Double($1.1) / Double(mem) }) {
            if let i = bins.firstIndex(where: { $0.0 + a.0 <= cpu && $0.1 + a.1 <= mem }) {
                bins[i].0 += a.0; bins[i].1 += a.1
            } else {
                bins.append(a)
            }
        }
        return bins.count
    }

    /// Nomad's approach: look at ⌈log2 n⌉ random feasible nodes, take the fullest.
    static func sampledBinpack(_ asks: [(Int, Int)], nodes n: Int, cpu: Int, mem: Int, seed: UInt64) -> Int {
        var used = Array(repeating: (0, 0), count: n)
        var r = SeededRandom(seed: seed)
        let k = Int(log2(Double(n)).rounded(.up))
        for a in asks {
            var best: Int?
            var seen = 0
            var tries = 0
            while seen < k && tries < n * 2 {
                tries += 1
                let i = Int.random(in: 0..<n, using: &r)
                guard used[i].0 + a.0 <= cpu && used[i].1 + a.1 <= mem else { continue }
                seen += 1
                let fill = Double(used[i].0 + a.0) / Double(cpu) + Double(used[i].1 + a.1) / Double(mem)
                if best == nil || fill > Double(used[best!].0 + a.0) / Double(cpu) + Double(used[best!].1 + a.1) / Double(mem) { best = i }
            }
            if let b = best { used[b].0 += a.0; used[b].1 += a.1 }
        }
        return used.filter { $0.0 > 0 }.count
    }
}
