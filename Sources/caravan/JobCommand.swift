import API
import ArgumentParser
import CaravanModel
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job", abstract: "Run, inspect and stop jobs.",
        subcommands: [Run.self, Plan.self, Status.self, Stop.self, History.self, Revert.self, Promote.self, Validate.self])

    /// The job and the client agree on the namespace: `--namespace` places a job whose file names
    /// none; a file that names one is followed there.
    static func align(_ job: inout Job, _ api: inout CaravanClient) throws {
        if let ns = api.namespace, ns != job.namespace {
            guard job.namespace == "default" else { throw CLIError.usage("the job file names namespace \(job.namespace) but --namespace is \(ns)") }
            job.namespace = ns
        }
        api.namespace = job.namespace
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "history", abstract: "The job's kept versions, newest first.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The job id.") var id: String
        @Flag(name: .long, help: "Print JSON (with each version's job).") var json = false

        func run() async throws {
            let api = try client.client()
            let versions: [JobVersionView] = try await cli { () async throws(ClientError) in try await api.jobVersions(id) }
            if json { return try printJSON(versions) }
            printTable(["VERSION", "STABLE", "STOPPED", "INDEX"], versions.map {
                ["\($0.version)", $0.stable ? "true" : "false", $0.stopped ? "true" : "false", "\($0.modifyIndex)"]
            })
        }
    }

    struct Revert: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "revert", abstract: "Register an earlier version of a job again.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The job id.") var id: String
        @Argument(help: "The version to go back to.") var version: Int
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            let r: JobRegisterView = try await cli { () async throws(ClientError) in try await api.revertJob(id, to: version) }
            if json { return try printJSON(r) }
            print("Job \"\(id)\" reverted to the definition of version \(version) (committed at index \(r.index))")
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "promote", abstract: "Promote the canaries of a job's current version: its other instances are then replaced.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The job id.") var id: String
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            let r: JobRegisterView = try await cli { () async throws(ClientError) in try await api.promoteJob(id) }
            if json { return try printJSON(r) }
            print("Job \"\(id)\" version \(r.version ?? 0) promoted (committed at index \(r.index)); its remaining instances are replaced next")
        }
    }

    struct Plan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "plan", abstract: "Dry run: what registering the job would place and stop now, and why anything would not fit.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The job file.") var file: String
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            var job = try JobFileLoader.load(file)
            var api = try client.client()
            try JobCommand.align(&job, &api)
            let p: JobPlanView = try await cli { () async throws(ClientError) in try await api.planJob(JobFile.render(job)) }
            if json { return try printJSON(p) }
            print(p.text, terminator: "")
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Register a job (YAML or JSON) on any agent and follow it until it runs.",
            discussion: "The file is checked here first; the leader commits the job and places its instances, and their nodes start them. Without --detach, shows progress until every instance runs with its service checks passing (batch: has run or is running), or one fails.")

        @OptionGroup var client: ClientOptions
        @Argument(help: "The job file.") var file: String
        @Flag(name: .long, help: "Return once the job is registered.") var detach = false
        @Flag(name: .long, help: "Print JSON.") var json = false
        @Option(help: "Seconds to follow the job.") var timeout: Double = 60

        func run() async throws {
            var job = try JobFileLoader.load(file)
            var api = try client.client()
            try JobCommand.align(&job, &api)
            let reg: JobRegisterView = try await cli { () async throws(ClientError) in try await api.registerJob(JobFile.render(job)) }
            if detach {
                if json { return try printJSON(reg) }
                print("Job \"\(reg.id)\" registered at index \(reg.index)")
                if let e = reg.evaluationID { print("Evaluation ID: \(e)") }
                return
            }
            if !json { print("Job \"\(reg.id)\" registered at index \(reg.index)" + (reg.evaluationID.map { " (evaluation \($0.prefix(8)))" } ?? "") + "; following until it runs…") }
            let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
            var last = ""
            var index: UInt64 = 0
            while true {
                // A blocking read: back as soon as anything about the job changes.
                let left = max(.milliseconds(1), ContinuousClock.now.duration(to: deadline))
                let (st, next): (JobStatusView, UInt64) = try await cli { () async throws(ClientError) in
                    try await api.job(reg.id, index: index, wait: min(left, .seconds(5)))
                }
                index = next
                let line = Self.progress(st)
                if line != last && !json { print("  " + line); last = line }
                let batch = st.type == "batch" || st.type == "sysbatch"
                // An unchanged job keeps its modify index: then what runs already is the answer.
                let caughtUp = st.modifyIndex >= (reg.jobModifyIndex ?? reg.index)
                // Healthy: running with every service check passing.
                // Only instances of this version count: an update is done when its own instances are up.
                let current = st.allocations.filter { $0.desiredStatus == "run" && $0.jobVersion == st.version }
                // A batch instance whose tasks have restarted is not settled while it runs: it may be
                // crashing its way to failure. It counts once complete (or, at the deadline, running).
                func settled(_ a: AllocationView) -> Bool {
                    a.clientStatus == "complete" || (a.clientStatus == "running" && a.taskStates.values.allSatisfy { $0.restarts == 0 })
                }
                func counts(_ upAtDeadline: Bool) -> Bool {
                    caughtUp && st.groups.allSatisfy { g in
                        let mine = current.filter { $0.group == g.name }
                        let up = batch ? mine.filter { settled($0) || (upAtDeadline && $0.clientStatus == "running") }.count
                                       : mine.filter { $0.clientStatus == "running" && $0.checks.values.allSatisfy { $0 == "passing" } }.count
                        return up >= g.desired
                    }
                }
                let done = counts(false) || (ContinuousClock.now > deadline && counts(true))
                // Failures reported before this registration (an unchanged job registered again
                // after its tasks died with a stopped cluster) are not this run's: their
                // replacements are what it waits for.
                let failed = st.allocations.filter {
                    $0.desiredStatus == "run" && $0.clientStatus == "failed" && $0.jobVersion == st.version && $0.modifyIndex >= reg.index
                }
                // A version with canaries is as far as it goes once they are healthy: it waits to be promoted.
                let canariesUp = caughtUp && st.awaitingPromotion && st.groups.allSatisfy { $0.canariesHealthy >= $0.canariesDesired }
                if canariesUp && failed.isEmpty {
                    if json { return try printJSON(st) }
                    printAllocations(st.allocations.filter { $0.desiredStatus == "run" })
                    print("Canaries of version \(st.version) are healthy; the old instances keep running until it is promoted (`caravan job promote \(reg.id)`, or by itself with update.autoPromote)")
                    return
                }
                if done || !failed.isEmpty || !st.placementFailures.isEmpty || ContinuousClock.now > deadline {
                    if json { return try printJSON(st) }
                    for f in st.placementFailures { print("  ! " + f) }
                    printAllocations(st.allocations.filter { $0.desiredStatus == "run" })
                    for a in failed {
                        for (task, t) in a.taskStates.sorted(by: { $0.key < $1.key }) where t.failed {
                            print("  ! \(a.name) task \(task): " + (t.events.suffix(3).map { "\($0.type): \($0.message)" }.joined(separator: "; ")))
                        }
                    }
                    if !st.placementFailures.isEmpty { throw CLIError.failed("not every instance of \(reg.id) could be placed") }
                    if !failed.isEmpty { throw CLIError.failed("\(failed.count) allocation(s) of \(reg.id) failed (see `caravan alloc status ID`)") }
                    if !done { throw CLIError.failed("\(reg.id) was not fully running within \(Int(timeout))s") }
                    return
                }
            }
        }

        /// One line per change: each group's instances by state, and the latest event of any
        /// instance that is failing or restarting.
        static func progress(_ st: JobStatusView) -> String {
            st.groups.map { g in
                var s = "\(g.name): \(g.placed)/\(g.desired) placed, \(g.running) running, \(g.healthy) healthy, \(g.failed) failed"
                if g.complete > 0 { s += ", \(g.complete) complete" }
                if g.lost > 0 { s += ", \(g.lost) lost" }
                let troubled = st.allocations.filter { $0.group == g.name && $0.desiredStatus == "run" && $0.jobVersion == st.version }
                    .flatMap { a in a.taskStates.values.filter { $0.failed || $0.restarts > 0 }.compactMap(\.events.last) }
                if let e = troubled.max(by: { $0.time < $1.time }) { s += " (\(e.type): \(e.message))" }
                return s
            }.joined(separator: "; ")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "List jobs, or show one job's groups and allocations.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "A job id; all jobs if omitted.") var id: String?
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            guard let id else {
                let all: [JobStatusView] = try await cli { () async throws(ClientError) in try await api.jobs() }
                if json { return try printJSON(all) }
                printTable(["ID", "TYPE", "PRIORITY", "STATUS", "VERSION"], all.map { [$0.id, $0.type, "\($0.priority)", $0.status, "\($0.version)"] })
                return
            }
            let st: JobStatusView = try await cli { () async throws(ClientError) in try await api.job(id) }
            if json { return try printJSON(st) }
            print("ID       = \(st.id)\nType     = \(st.type)\nPriority = \(st.priority)\nStatus   = \(st.status)\nVersion  = \(st.version)\n")
            printTable(["GROUP", "DESIRED", "PLACED", "PENDING", "RUNNING", "COMPLETE", "FAILED", "LOST"], st.groups.map {
                [$0.name, "\($0.desired)", "\($0.placed)", "\($0.pending)", "\($0.running)", "\($0.complete)", "\($0.failed)", "\($0.lost)"]
            })
            if let why = st.failedEvaluation { print("\nLatest evaluation failed: \(why)") }
            if st.awaitingPromotion {
                let c = st.groups.reduce(0) { $0 + $1.canaries }, h = st.groups.reduce(0) { $0 + $1.canariesHealthy }
                print("\nVersion \(st.version) awaits promotion: \(c) canar\(c == 1 ? "y" : "ies") placed, \(h) healthy — `caravan job promote \(st.id)` replaces the rest")
            }
            if !st.placementFailures.isEmpty {
                print("\nPlacement failures:")
                for f in st.placementFailures { print("  " + f) }
            }
            print("")
            printAllocations(st.allocations)
            // The latest task events across the job's allocations.
            let events = st.allocations.flatMap { a in
                a.taskStates.flatMap { task, t in t.events.map { (a, task, $0) } }
            }.sorted { $0.2.time > $1.2.time }.prefix(10)
            if !events.isEmpty {
                print("\nRecent events:")
                printTable(["TIME", "ALLOCATION", "TASK", "TYPE", "DESCRIPTION"],
                           events.map { [formatTime($0.2.time), String($0.0.id.prefix(8)), $0.1, $0.2.type, $0.2.message] })
            }
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop a job's allocations; --purge also forgets the job.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The job id.") var id: String
        @Flag(name: .long, help: "Remove the job and its history.") var purge = false
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            let r: JobRegisterView = try await cli { () async throws(ClientError) in try await api.stopJob(id, purge: purge) }
            if json { return try printJSON(r) }
            print(purge ? "Job \"\(id)\" stopped and purged" : "Job \"\(id)\" stopped")
        }
    }

    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "validate",
            abstract: "Check a job file (YAML or JSON) and print every problem with its line and field path.",
            discussion: "With --json, prints the job as the cluster will store it, every default filled in.")

        @Argument(help: "The job file.") var file: String
        @Flag(name: .long, help: "Print the validated job as canonical JSON.") var json = false

        func run() async throws {
            let job = try JobFileLoader.load(file)
            if json {
                print(JobFile.render(job))
            } else {
                let tasks = job.groups.reduce(0) { $0 + $1.tasks.count }
                print("Job \"\(job.id)\" is valid: \(job.type.rawValue), \(job.groups.count) group(s), \(tasks) task(s)")
            }
        }
    }
}

/// Reads and parses a job file, turning every failure into a usage error (exit status 2).
enum JobFileLoader {
    static func load(_ path: String) throws -> Job {
        guard access(path, R_OK) == 0 else {
            throw CLIError.usage("cannot read job file \(path): \(String(cString: strerror(errno)).lowercased())")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw CLIError.usage("cannot read job file \(path): \(error)")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw CLIError.usage("\(path) is not UTF-8 text") }
        do {
            return try JobFile.parse(text, file: path)
        } catch {
            throw CLIError.usage("\(path) is not a valid job:\n" + error.description)
        }
    }
}

func printAllocations(_ allocs: [AllocationView]) {
    printTable(["ALLOCATION", "NAME", "NODE", "VERSION", "DESIRED", "STATUS", "CPU", "MEMORY"], allocs.map {
        [String($0.id.prefix(8)), $0.name, $0.node, "\($0.jobVersion)", $0.desiredStatus, $0.clientStatus,
         "\($0.cpuMillicores)m", "\($0.memoryMiB)Mi"]
    })
}

/// Runs an API call, turning its failure into the CLI's one-line error and exit status.
func cli<T>(_ body: () async throws(ClientError) -> T) async throws -> T {
    do { return try await body() } catch { throw CLIError.from(error) }
}
