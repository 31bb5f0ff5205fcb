import API
import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

struct AllocCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alloc", abstract: "Inspect allocations: their tasks' states and events, and their output.",
        subcommands: [Status.self, Logs.self, Exec.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "An allocation's status, tasks and recent task events.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The allocation id (or a unique prefix of at least 4 characters).") var id: String
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            let a: AllocationView = try await cli { () async throws(ClientError) in try await api.allocation(id) }
            if json { return try printJSON(a) }
            print("""
                ID            = \(a.id)
                Name          = \(a.name)
                Job           = \(a.jobID) (version \(a.jobVersion))
                Node          = \(a.node)
                Desired       = \(a.desiredStatus)\(a.desiredDescription.isEmpty ? "" : " (\(a.desiredDescription))")
                Client Status = \(a.clientStatus)\(a.clientDescription.isEmpty ? "" : " (\(a.clientDescription))")
                Resources     = \(a.cpuMillicores)m CPU, \(a.memoryMiB)Mi memory\(a.ports.isEmpty ? "" : ", ports " + a.ports.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
                """)
            if let at = a.rescheduleAt {
                let left = max(0, (at - Int64(Date().timeIntervalSince1970 * 1000)) / 1000)
                print("Reschedule    = a replacement is placed at \(formatTime(at))\(left > 0 ? " (in \(left)s)" : " (now)")")
            }
            if !a.checks.isEmpty {
                print("\nChecks:")
                printTable(["CHECK", "STATUS"], a.checks.sorted { $0.key < $1.key }.map { [$0.key, $0.value] })
            }
            for (name, t) in a.taskStates.sorted(by: { $0.key < $1.key }) {
                let exit = t.exitCode.map { ", last exit code \($0)" } ?? ""
                print("\nTask \"\(name)\" is \"\(t.state)\"\(t.failed ? " (failed)" : ""), \(t.restarts) restart(s)\(exit)")
                printTable(["TIME", "TYPE", "DESCRIPTION"], t.events.reversed().map { [formatTime($0.time), $0.type, $0.message] })
            }
        }
    }

    struct Exec: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "exec", abstract: "Run a command inside a running task.",
            discussion: """
                Runs in the task's container (exec and container drivers) or with its environment and directory (raw_exec).                 Without -i or -t, the output is printed when the command ends. With -i, this terminal's input goes to the                 command and its output comes back as it is written; -t gives the command a terminal (`caravan alloc exec -it                 ID web sh` is a shell in the task). The exit status is the command's.
                """)
        @OptionGroup var client: ClientOptions
        @Option(help: "Seconds before the command is killed (at most 300; not with -i or -t).") var timeout: Double = 30
        @Flag(name: .shortAndLong, help: "Send this terminal's input to the command, stream its output.") var interactive = false
        @Flag(name: .shortAndLong, help: "Give the command a terminal (implies -i).") var tty = false
        @Flag(name: .long, help: "Print JSON ({exitCode, output}) instead of the output.") var json = false
        @Argument(help: "The allocation id (or a unique prefix).") var id: String
        @Argument(help: "The task name.") var task: String
        @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.") var command: [String] = []

        func run() async throws {
            let cmd = command.first == "--" ? Array(command.dropFirst()) : command
            guard !cmd.isEmpty else { throw CLIError.usage("name a command to run, e.g. caravan alloc exec \(id) \(task) ls /") }
            let api = try client.client()
            if interactive || tty {
                if json { throw CLIError.usage("--json does not go with -i or -t") }
                let code = try await InteractiveExec(api: api, allocation: id, task: task, command: cmd, tty: tty).run()
                if code != 0 { throw ExitCode(code) }
                return
            }
            let r: ExecResultView = try await cli { () async throws(ClientError) in
                try await api.exec(allocation: id, task: task, command: cmd, timeout: timeout)
            }
            if json { try printJSON(r) } else { print(r.output, terminator: "") }
            if r.exitCode != 0 { throw ExitCode(Int32(truncatingIfNeeded: r.exitCode)) }
        }
    }

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "logs", abstract: "A task's stdout (or stderr), from whichever agent runs it.",
            discussion: "TASK may be left out when the allocation has one task. With -f, keeps printing new output until the task ends or Ctrl-C.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The allocation id (or a unique prefix).") var id: String
        @Argument(help: "The task name.") var task: String?
        @Flag(name: [.short, .customLong("follow")], help: "Keep printing new output.") var follow = false
        @Flag(name: .long, help: "Show stderr instead of stdout.") var stderr = false
        @Option(name: .long, help: "Start this many bytes before the end.") var tail: Int?

        func run() async throws {
            let api = try client.client()
            let a: AllocationView = try await cli { () async throws(ClientError) in try await api.allocation(id) }
            let name: String
            if let task { name = task } else {
                guard a.taskStates.count == 1, let only = a.taskStates.keys.first else {
                    throw CLIError.usage("allocation \(a.id.prefix(8)) has tasks \(a.taskStates.keys.sorted().joined(separator: ", ")): name one")
                }
                name = only
            }
            var offset = tail.map { -max(0, $0) } ?? 0
            if follow {
                // One streamed answer: the agent running the task sends output as it is written
                // and ends the stream once the task has ended.
                let stream: CaravanClient.Stream = try await cli { () async throws(ClientError) in
                    try await api.followLogs(allocation: a.id, task: name, stderr: stderr, offset: offset)
                }
                do {
                    for try await piece in stream.body where !Self.writeOut(piece) { return }
                } catch {
                    throw CLIError.failed("the log stream broke off: \(error)")
                }
                return
            }
            while true {
                let chunk: CaravanClient.LogChunk = try await cli { () async throws(ClientError) in
                    try await api.logs(allocation: a.id, task: name, stderr: stderr, offset: offset)
                }
                guard Self.writeOut(chunk.bytes) else { return }
                offset = chunk.offset + chunk.bytes.count
                if offset >= chunk.size || chunk.bytes.isEmpty { return }
            }
        }

        /// Writes to stdout; false once stdout is gone (a closed pipe).
        static func writeOut(_ bytes: [UInt8]) -> Bool {
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
                if n <= 0 { return false }
                off += n
            }
            return true
        }
    }
}

func formatTime(_ unixMillis: Int64) -> String {
    var t = time_t(unixMillis / 1000)
    var tm = tm()
    localtime_r(&t, &tm)
    var buf = [CChar](repeating: 0, count: 32)
    strftime(&buf, buf.count, "%Y-%m-%dT%H:%M:%S", &tm)
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
