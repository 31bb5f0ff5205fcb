import API
import ArgumentParser
import Foundation

/// What mutual TLS and ACLs cost on the user's path: the same three-agent cluster and the same
/// client calls, plain and then secured, in one run.
struct SecurityBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "security",
        abstract: "Three agents: plain HTTP without ACLs, with ACLs, and mutual TLS with ACLs: register, read and variable-write latency, submit → running; the ratios.")

    @Option(help: "Calls per figure.") var calls: Int = 300
    @Option(help: "Jobs for submit → running.") var jobs: Int = 50
    @Option(help: "The caravan binary (default: next to this one).") var binary: String?

    struct Figures {
        var register: [Double] = []
        var read: [Double] = []
        var write: [Double] = []
        var running: [Double] = []
    }

    func run() async throws {
        let bin = binary ?? URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("caravan").path
        print("# caravan-bench security — \(Date())")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; 3 agents on \(E2EBench.ip(0))–\(E2EBench.ip(2)), sealed; one client per configuration, its connections kept open between calls\n")
        let plain = try await measure(bin, tls: false, acl: false)
        let aclOnly = try await measure(bin, tls: false, acl: true)
        let secure = try await measure(bin, tls: true, acl: true)
        func p(_ xs: [Double], _ q: Double) -> Double { ExecutorBench.percentile(xs, q) }
        func cell(_ xs: [Double]) -> String { String(format: "%.2f / %.2f ms", p(xs, 0.5), p(xs, 0.99)) }
        func ratio(_ a: [Double], _ b: [Double]) -> String { String(format: "%.2f / %.2f", p(b, 0.5) / max(0.001, p(a, 0.5)), p(b, 0.99) / max(0.001, p(a, 0.99))) }
        print("| figure (through a follower) | plain p50 / p99 | ACLs | ratio | TLS + ACLs | ratio |")
        print("|---|---|---|---|---|---|")
        for (name, a, b, c) in [("register (POST /v1/jobs)", plain.register, aclOnly.register, secure.register),
                                ("read (GET /v1/job/{id}, linearizable)", plain.read, aclOnly.read, secure.read),
                                ("variable write (PUT /v1/var)", plain.write, aclOnly.write, secure.write),
                                ("submit → running (raw_exec)", plain.running, aclOnly.running, secure.running)] {
            print("| \(name) | \(cell(a)) | \(cell(b)) | \(ratio(a, b)) | \(cell(c)) | \(ratio(a, c)) |")
        }
    }

    func run(_ bin: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw ValidationError("caravan \(args.joined(separator: " ")) failed") }
        return String(decoding: data, as: UTF8.self)
    }

    func measure(_ bin: String, tls useTLS: Bool, acl: Bool) async throws -> Figures {
        let secure = useTLS
        let cluster = E2EBench.Cluster(binary: bin)
        defer { cluster.stop() }
        try? FileManager.default.removeItem(atPath: cluster.root)
        let tls = cluster.root + "/tls"
        try FileManager.default.createDirectory(atPath: tls, withIntermediateDirectories: true)
        var clientTLS: ClientTLS?
        if secure {
            _ = try run(bin, ["tls", "ca", "create", "--out", tls + "/ca"])
            _ = try run(bin, ["tls", "cert", "create", "--server", "--ca", tls + "/ca.pem", "--ca-key", tls + "/ca-key.pem", "--out", tls + "/agent"])
            _ = try run(bin, ["tls", "cert", "create", "--client", "--ca", tls + "/ca.pem", "--ca-key", tls + "/ca-key.pem", "--out", tls + "/client"])
            cluster.extra = ["--tls-ca-file", tls + "/ca.pem", "--tls-cert-file", tls + "/agent.pem", "--tls-key-file", tls + "/agent-key.pem"]
            clientTLS = try ClientTLS(caFile: tls + "/ca.pem", certFile: tls + "/client.pem", keyFile: tls + "/client-key.pem")
        }
        if acl { cluster.extra.append("--acl-enabled") }
        for i in 0..<3 { try cluster.start(i) }
        func client(_ i: Int, token: String? = nil) throws -> CaravanClient {
            var c = try CaravanClient(address: "\(secure ? "https" : "http")://\(E2EBench.ip(i)):4680", timeout: .seconds(30), tls: clientTLS)
            c.token = token
            return c
        }
        // A leader and three ready nodes (status is open; the rest needs the token once secured).
        let deadline = ContinuousClock.now + .seconds(60)
        var leader = -1
        while ContinuousClock.now < deadline {
            if let l = try? await client(0).status().leader, let i = (0..<3).first(where: { "e2e-\($0)" == l }) { leader = i; break }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard leader >= 0 else { throw ValidationError("no leader within 60 s") }
        var token: String?
        if acl {
            let t: ACLTokenView = try await client(leader).request(.POST, "/v1/acl/bootstrap")
            token = t.secretID
        }
        let api = try client((leader + 1) % 3, token: token)
        while ContinuousClock.now < deadline, ((try? await api.nodes()) ?? []).filter({ $0.status == "ready" }).count < 3 {
            try await Task.sleep(for: .milliseconds(100))
        }
        var f = Figures()
        let bench = E2EBench()
        for k in 0..<calls {
            let t0 = ContinuousClock.now
            _ = try await api.registerJob(bench.jobText("reg-\(k)", driver: "raw_exec", count: 0))
            f.register.append(E2EBench.ms(ContinuousClock.now - t0))
        }
        for k in 0..<calls {
            let t0 = ContinuousClock.now
            _ = try await api.job("reg-\(k % 50)")
            f.read.append(E2EBench.ms(ContinuousClock.now - t0))
        }
        for k in 0..<calls {
            let t0 = ContinuousClock.now
            _ = try await api.putVariable("bench/v\(k % 20)", "\(k)")
            f.write.append(E2EBench.ms(ContinuousClock.now - t0))
        }
        for k in 0..<jobs {
            let id = "run-\(k)"
            _ = try await api.registerJob(bench.jobText(id, driver: "raw_exec"))
            let t1 = ContinuousClock.now
            try await bench.waitRunning(api, id)
            f.running.append(E2EBench.ms(ContinuousClock.now - t1))
            _ = try await api.stopJob(id, purge: true)
        }
        return f
    }
}
