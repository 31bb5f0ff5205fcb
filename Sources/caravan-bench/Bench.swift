import API
import ArgumentParser
import CaravanTesting
import Foundation
import Gossip
import GossipSimulation

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "caravan-bench",
        abstract: "Measures Caravan's costs; record the figures in Docs/benchmarks.md.",
        subcommands: [GossipBench.self, RaftBench.self, ApiBench.self, SchedulerBench.self, PlacementBench.self, ExecutorBench.self, E2EBench.self, FaultBench.self, SecurityBench.self, WhatIfBench.self, C1MBench.self]
    )
}

/// Runs this same command again inside a fresh network namespace (loopback up, MTU 1500), with
/// `--in-namespace` added, and ends with its exit status; a SIGTERM is passed on to it.
func rerunInNamespace() throws -> Never {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
    // Loopback must be up before Foundation's Process can start anything in there.
    let me = "/proc/self/exe".resolvingSelf()
    let args = ([me] + CommandLine.arguments.dropFirst() + ["--in-namespace"]).map { "'\($0)'" }.joined(separator: " ")
    p.arguments = ["-n", "sh", "-c", "ip link set lo up mtu 1500 && exec \(args)"]
    try p.run()
    signal(SIGTERM, SIG_IGN)
    let forward = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
    let child = p.processIdentifier
    forward.setEventHandler { kill(child, SIGTERM) }
    forward.resume()
    p.waitUntilExit()
    forward.cancel()
    exit(p.terminationStatus)
}

/// Resident memory of a process in KiB (0 if it is gone).
func rssKiB(_ pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
    }
    return 0
}

extension String {
    func resolvingSelf() -> String { URL(fileURLWithPath: self).resolvingSymlinksInPath().path }
}

struct GossipBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gossip",
        abstract: "Membership: join, failure detection, idle traffic and memory of real agents; dissemination in simulation.")

    @Option(help: "Cluster sizes of real agents, comma-separated.") var sizes: String = "20,50"
    @Option(help: "Mass-join trials per size.") var joinTrials: Int = 3
    @Option(help: "Simulated cluster size for dissemination.") var simNodes: Int = 1000
    @Option(help: "The caravan binary (default: next to this one).") var binary: String?
    @Option(help: "Seconds of idle traffic to measure.") var idleSeconds: Int = 10
    @Option(help: "Seconds to let the cluster settle after the join before measuring idle traffic.") var settle: Int = 30
    @Flag(help: "Only the simulation.") var simOnly = false
    @Option(help: "UDP loss on the gossip port (0-1); runs inside a private network namespace.") var loss: Double = 0
    @Option(help: "Soak: seconds to watch for false deaths after the join (0 = no soak).") var soak: Int = 0
    @Flag(help: "During the soak, freeze one agent 2.5 s of every 5 s (SIGSTOP/SIGCONT).") var freeze = false
    @Flag(help: "Skip the crash and silent-death measurements.") var noCrash = false
    @Option(help: "SIGKILL and SIGSTOP trials per size (a different agent each time).") var killTrials: Int = 5
    @Flag(help: .hidden) var inNamespace = false
    @Flag(help: "Run inside a private network namespace, where loopback's counters give what went on the wire (bytes with headers, packets).")
    var namespace = false
    @Option(help: "The serf binary to run side by side (same sizes, same run); none skips it.") var serf: String = "/usr/bin/serf"

    func run() async throws {
        if (loss > 0 || namespace) && !inNamespace {
            // Re-run this command inside a fresh network namespace where the loss is injected.
            try rerunInNamespace()
        }
        if inNamespace {
            let perMille = Int(loss * 1000)
            try shell(["nft", "-f", "-"], stdin: "table inet faults {\n chain input {\n type filter hook input priority 0;\n udp dport 4682 numgen random mod 1000 < \(perMille) drop\n }\n}\n")
            try PortMeter.install(ports: [4682, 7946, 4681, 4680])
        }
        print("# caravan-bench gossip — \(Date())")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB\n")
        if !inNamespace { simulate() }
        guard !simOnly else { return }
        let bin = binary ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("caravan").path
        for n in sizes.split(separator: ",").compactMap({ Int($0) }) {
            try await agents(n, binary: bin)
        }
    }

    func simulate() {
        let clock = ContinuousClock()
        let wall = clock.now
        var sim = GossipSimulator(seed: 2026, faults: .init(latency: .microseconds(200) ... .milliseconds(2)))
        sim.recordEvents = false
        sim.startSettled(simNodes)
        sim.run(for: .seconds(5))
        let before = sim.bytesSent.values.reduce(0, +)
        sim.run(for: .seconds(10))
        let idle = Double(sim.bytesSent.values.reduce(0, +) - before) / Double(simNodes) / 10
        let target = GossipSimulator.address(7)
        _ = sim.nodes[target]!.updateMetadata([9, 9, 9], now: sim.now)
        let took = sim.run(until: .seconds(30)) { s in
            s.order.allSatisfy { s.nodes[$0]!.member(named: "node-7")?.metadata == [9, 9, 9] }
        }
        sim.crash(11)
        let dead = sim.run(until: .seconds(30)) { $0.everyone(sees: "node-11", as: .dead) }
        print("## Simulation, N = \(simNodes) (seeded, 0.2–2 ms latency, no loss)")
        print("| figure | value |\n|---|---|")
        print("| one update reaches all nodes | \(fmt(took)) of simulated time |")
        print("| idle gossip per node | \(Int(idle)) bytes/s (UDP, sealed) |")
        print("| crashed node known dead by all | \(fmt(dead)) of simulated time |")
        print("| wall-clock time of this simulation | \(fmt(clock.now - wall)) |\n")
    }

    func fmt(_ d: Duration?) -> String {
        guard let d else { return "not reached" }
        return String(format: "%.2f s", Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }

    struct Running {
        var processes: [Process] = []
        var clients: [CaravanClient] = []
        var root: String
    }

    func start(_ n: Int, binary: String, subnet: Int) throws -> Running {
        let root = NSTemporaryDirectory() + "caravan-bench-\(getpid())-\(n)"
        try? FileManager.default.removeItem(atPath: root)
        var r = Running(root: root)
        let key = "YmVuY2htYXJrLWtleS1mb3ItY2FyYXZhbi1nb3NzaXA="
        for i in 0..<n {
            let ip = "127.\(subnet).\(i / 250).\(i % 250 + 2)"
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["agent", "--name", "bench-\(i)", "--bind", ip, "--data-dir", "\(root)/\(i)", "--encrypt", key,
                           "--join", "127.\(subnet).0.2", "--join", "127.\(subnet).0.3", "--log-level", "warning", "--enable-raw-exec"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            r.processes.append(p)
            r.clients.append(try CaravanClient(address: "http://\(ip):4680", timeout: .seconds(2)))
        }
        return r
    }

    func stop(_ r: Running) {
        for p in r.processes where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: r.root)
    }

    /// Polls every agent until `ok` holds for all (or the deadline); returns the elapsed time.
    func until(_ r: Running, skip: Set<Int> = [], deadline: Duration, _ ok: ([MemberView]) -> Bool) async -> Duration? {
        let clock = ContinuousClock()
        let start = clock.now
        var done = Set<Int>()
        while clock.now - start < deadline {
            for (i, c) in r.clients.enumerated() where !skip.contains(i) && !done.contains(i) {
                if let ms = try? await c.members(), ok(ms) { done.insert(i) }
            }
            if done.count + skip.count == r.clients.count { return clock.now - start }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }


    func shell(_ args: [String], stdin: String? = nil) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let input = Pipe()
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw ValidationError("\(args.joined(separator: " ")) failed") }
    }

    /// What one run of N agents measured (Caravan's or Serf's).
    struct Figures {
        var joins: [String] = []
        var payloadBytes: Double?
        var wire: (bytes: Double, packets: Double)?
        /// The membership protocol's own port only (gossip's 4682, Serf's 7946), headers included.
        var port: (bytes: Double, packets: Double)?
        /// Where the rest of an agent's traffic goes.
        var others: String?
        var rss: [Int] = []
        var killed: [Duration?] = []
        var silent: [Duration?] = []
    }

    /// Bytes and packets per node per second on loopback over `idleSeconds` (only inside a namespace).
    /// Per node per second: everything on loopback, and the membership port's own packets.
    func wireRate(_ n: Int, port: Int) -> (all: (bytes: Double, packets: Double), port: (bytes: Double, packets: Double))? {
        guard inNamespace else {
            sleep(UInt32(idleSeconds))
            return nil
        }
        let clock = ContinuousClock()
        let w0 = loopbackSent(), p0 = PortMeter.read(port), t0 = clock.now
        sleep(UInt32(idleSeconds))
        let w1 = loopbackSent(), p1 = PortMeter.read(port), secs = seconds(clock.now - t0)
        func rate(_ b: Int, _ p: Int) -> (bytes: Double, packets: Double) { (Double(b) / Double(n) / secs, Double(p) / Double(n) / secs) }
        return (rate(w1.bytes - w0.bytes, w1.packets - w0.packets), rate(p1.bytes - p0.bytes, p1.packets - p0.packets))
    }

    func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    func agents(_ n: Int, binary: String) async throws {
        let lossNote = loss > 0 ? ", \(Int(loss * 100))% UDP loss in a private network namespace" : (inNamespace ? ", in a private network namespace" : "")
        let anchor = FileManager.default.isExecutableFile(atPath: serf) && loss == 0 && soak == 0 ? serf : nil
        print("## Real agents, N = \(n) (release binary, sealed, loopback 127.\(60).x.y\(lossNote))" + (anchor == nil ? "" : "; serf: 127.71.x.y, LAN profile, encrypted"))
        guard let f = try await caravanFigures(n, binary: binary) else { return }
        // Serf runs once Caravan's agents are gone, so each has the namespace's counters to itself.
        var serfFigures: Figures?
        if let anchor { serfFigures = try await self.serfFigures(n, binary: anchor) }
        printTable(n, caravan: f, serf: serfFigures)
    }

    /// Caravan's figures for N agents (nil after a soak, which prints its own).
    func caravanFigures(_ n: Int, binary: String) async throws -> Figures? {
        var f = Figures()
        var joins: [String] = []
        var r = try start(n, binary: binary, subnet: 60)
        for trial in 0..<joinTrials {
            if trial > 0 {
                stop(r)
                r = try start(n, binary: binary, subnet: 60)
            }
            let t = await until(r, deadline: .seconds(60)) { ms in ms.filter { $0.status == "alive" }.count == n }
            joins.append(fmt(t))
        }
        defer { stop(r) }
        if soak > 0 {
            try await soakTest(r, n: n)
            return nil
        }
        try await Task.sleep(for: .seconds(settle))
        func totalBytes() async -> Int {
            var sum = 0
            for c in r.clients {
                if let s = try? await c.agentSelf() { sum += s.gossip.bytesSent + s.gossip.streamBytesSent }
            }
            return sum
        }
        let b0 = await totalBytes()
        let clock = ContinuousClock()
        let t0 = clock.now
        let r0 = PortMeter.read(4681), h0 = PortMeter.read(4680), rt0 = ContinuousClock.now
        let w = wireRate(n, port: 4682)
        f.wire = w?.all
        f.port = w?.port
        if inNamespace {
            let r1 = PortMeter.read(4681), h1 = PortMeter.read(4680), secs = seconds(ContinuousClock.now - rt0) * Double(n)
            f.others = String(format: "Raft RPC (4681) %.0f bytes/s, %.1f packets/s; HTTP API (4680, the bench's own calls) %.0f bytes/s, %.1f packets/s",
                              Double(r1.bytes - r0.bytes) / secs, Double(r1.packets - r0.packets) / secs,
                              Double(h1.bytes - h0.bytes) / secs, Double(h1.packets - h0.packets) / secs)
        }
        let elapsed = clock.now - t0
        let b1 = await totalBytes()
        f.payloadBytes = Double(b1 - b0) / Double(n) / seconds(elapsed)
        f.rss = r.processes.map { rssKiB($0.processIdentifier) }
        f.joins = joins
        guard !noCrash else { return f }
        let clients = r.clients
        (f.killed, f.silent) = await deathTrials(n, pids: r.processes.map(\.processIdentifier), name: { "bench-\($0)" },
                                                 dead: "dead") { i, name in
            (try? await clients[i].members())?.first { $0.name == name }?.status
        }
        return f
    }

    /// SIGKILL, then SIGSTOP (resumed after), of a different agent each trial: how long until
    /// every other agent lists it `dead` (whatever the system calls it), as `status(i, name)` —
    /// agent i's view of a member — tells.
    func deathTrials(_ n: Int, pids: [Int32], name: (Int) -> String, dead: String,
                     status: (Int, String) async -> String?) async -> (killed: [Duration?], silent: [Duration?]) {
        let clock = ContinuousClock()
        func until(skip: Set<Int>, _ who: String, is word: String) async -> Duration? {
            let start = clock.now
            var done = Set<Int>()
            while clock.now - start < .seconds(60) {
                for i in 0..<n where !skip.contains(i) && !done.contains(i) {
                    if await status(i, who) == word { done.insert(i) }
                }
                if done.count + skip.count == n { return clock.now - start }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }
        var killed: [Duration?] = [], silent: [Duration?] = []
        var gone = Set<Int>()
        for t in 0..<min(killTrials, n / 2 - 1) {
            let victim = n - 1 - t, frozen = t + 1
            kill(pids[victim], SIGKILL)
            gone.insert(victim)
            killed.append(await until(skip: gone, name(victim), is: dead))
            kill(pids[frozen], SIGSTOP)
            silent.append(await until(skip: gone.union([frozen]), name(frozen), is: dead))
            kill(pids[frozen], SIGCONT)
            // Back alive everywhere before the next trial.
            _ = await until(skip: gone, name(frozen), is: "alive")
        }
        return (killed, silent)
    }

    /// The same measurements of Serf agents (LAN profile, encrypted) on 127.71.x.y.
    func serfFigures(_ n: Int, binary: String) async throws -> Figures {
        var f = Figures()
        var cluster = try SerfCluster(binary: binary, subnet: 71, count: n)
        defer { cluster.stop() }
        let clock = ContinuousClock()
        func until(skip: Set<Int> = [], deadline: Duration, _ ok: ([String: String]) -> Bool) -> Duration? {
            let start = clock.now
            var done = Set<Int>()
            while clock.now - start < deadline {
                for i in 0..<n where !skip.contains(i) && !done.contains(i) {
                    if let ms = cluster.members(i), ok(ms) { done.insert(i) }
                }
                if done.count + skip.count == n { return clock.now - start }
                usleep(20_000)
            }
            return nil
        }
        for trial in 0..<joinTrials {
            if trial > 0 {
                cluster.stop()
                cluster = try SerfCluster(binary: binary, subnet: 71, count: n)
            }
            f.joins.append(fmt(until(deadline: .seconds(60)) { ms in ms.values.filter { $0 == "alive" }.count == n }))
        }
        sleep(UInt32(settle))
        let w = wireRate(n, port: 7946)
        f.wire = w?.all
        f.port = w?.port
        f.rss = cluster.processes.map { rssKiB($0.processIdentifier) }
        guard !noCrash else { return f }
        let members = { [cluster] (i: Int) in cluster.members(i) }
        (f.killed, f.silent) = await deathTrials(n, pids: cluster.processes.map(\.processIdentifier), name: { "serf-\($0)" },
                                                 dead: "failed") { i, name in members(i)?[name] }
        return f
    }

    func printTable(_ n: Int, caravan c: Figures, serf s: Figures?) {
        func ratio(_ a: Double?, _ b: Double?) -> String {
            guard let a, let b, a > 0 else { return "" }
            return String(format: "%.2f×", b / a)
        }
        func rss(_ f: Figures) -> String { "avg \(f.rss.reduce(0, +) / max(f.rss.count, 1) / 1024) MiB, max \((f.rss.max() ?? 0) / 1024) MiB" }
        func avgRSS(_ f: Figures) -> Double { Double(f.rss.reduce(0, +)) / Double(max(f.rss.count, 1)) }
        // Median and max of the trials (nil if any never happened).
        func stats(_ xs: [Duration?]) -> (median: Double, max: Double)? {
            let v = xs.compactMap { $0.map(self.seconds) }.sorted()
            guard !v.isEmpty, v.count == xs.count else { return nil }
            return (v[v.count / 2], v.last!)
        }
        func show(_ xs: [Duration?]) -> String {
            guard let s = stats(xs) else { return "not reached in \(xs.filter { $0 == nil }.count) of \(xs.count)" }
            return String(format: "median %.2f s, max %.2f s (%d trials)", s.median, s.max, xs.count)
        }
        print("| figure, N = \(n) | Caravan |" + (s == nil ? "" : " serf (same run) | serf ÷ Caravan (> 1: Caravan better) |"))
        print("|---|---|" + (s == nil ? "" : "---|---|"))
        func row(_ title: String, _ a: String, _ b: String?, _ r: String) {
            print("| \(title) | \(a) |" + (s == nil ? "" : " \(b ?? "") | \(r) |"))
        }
        row("all \(n) list all \(n) alive after a simultaneous start", c.joins.joined(separator: ", "), s?.joins.joined(separator: ", "), "")
        if let p = c.port {
            row("idle gossip per node on the wire (packets to or from the gossip port, UDP + TCP, headers included), \(settle) s after the join, over \(idleSeconds) s",
                String(format: "%.0f bytes/s, %.1f packets/s", p.bytes, p.packets),
                s?.port.map { String(format: "%.0f bytes/s, %.1f packets/s", $0.bytes, $0.packets) }, ratio(p.bytes, s?.port?.bytes))
        }
        if let w = c.wire {
            row("everything an idle agent sends (all loopback packets: gossip, Raft, API, per node)",
                String(format: "%.0f bytes/s, %.1f packets/s", w.bytes, w.packets),
                s?.wire.map { String(format: "%.0f bytes/s, %.1f packets/s", $0.bytes, $0.packets) }, ratio(w.bytes, s?.wire?.bytes))
        }
        if let o = c.others { row("of which not gossip, per node", o, "—", "") }
        row("idle gossip per node, sealed payload (UDP + TCP, the agents' counters)", "\(Int(c.payloadBytes ?? 0)) bytes/s", "—", "")
        row("idle RSS per agent", rss(c), s.map(rss), ratio(avgRSS(c), s.map(avgRSS)))
        if !noCrash {
            row("SIGKILL of one agent → all others list it dead", show(c.killed), s.map { show($0.killed) },
                ratio(stats(c.killed)?.median, s.flatMap { stats($0.killed)?.median }))
            row("SIGSTOP (silent, like a vanished host) → all others list it dead", show(c.silent), s.map { show($0.silent) },
                ratio(stats(c.silent)?.median, s.flatMap { stats($0.silent)?.median }))
        }
        print("")
    }

    /// Watches every agent for `soak` seconds; every member is healthy, so any `dead` is false.
    func soakTest(_ r: Running, n: Int) async throws {
        let clock = ContinuousClock()
        let start = clock.now
        var falseDeaths = Set<String>()
        var observations = 0
        let frozen = n - 1
        var frozenNow = false
        var nextToggle = start
        while clock.now - start < .seconds(soak) {
            if freeze && clock.now >= nextToggle {
                kill(r.processes[frozen].processIdentifier, frozenNow ? SIGCONT : SIGSTOP)
                frozenNow.toggle()
                nextToggle = nextToggle + .milliseconds(2500)
            }
            for (i, c) in r.clients.enumerated() where !(frozenNow && i == frozen) {
                guard let ms = try? await c.members() else { continue }
                observations += 1
                for m in ms where m.status == "dead" { falseDeaths.insert("\(m.name) seen dead by bench-\(i)") }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        if frozenNow { kill(r.processes[frozen].processIdentifier, SIGCONT) }
        var suspicions = 0, refutations = 0
        for c in r.clients { if let s = try? await c.agentSelf() { suspicions += s.gossip.suspicionsRaised; refutations += s.gossip.refutations } }
        print("| figure | value |\n|---|---|")
        print("| soak | \(soak) s, \(observations) membership views read\(freeze ? ", bench-\(frozen) frozen 2.5 s of every 5 s" : "") |")
        print("| healthy agents declared dead | \(falseDeaths.count)\(falseDeaths.isEmpty ? "" : ": " + falseDeaths.sorted().prefix(5).joined(separator: "; ")) |")
        print("| suspicions raised / refutations (all agents) | \(suspicions) / \(refutations) |\n")
    }
}
