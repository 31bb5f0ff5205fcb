import ArgumentParser
import CaravanModel
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job", abstract: "Work with job files.", subcommands: [Validate.self])

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
