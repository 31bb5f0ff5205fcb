import API
import ArgumentParser

struct EvalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval", abstract: "Evaluations: why the scheduler looked at a job, and what came of it.", subcommands: [List.self, Status.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Kept evaluations, newest first (the last 10 per job).")
        @OptionGroup var client: ClientOptions
        @Option(help: "Only this job's.") var job: String?
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            let evals: [EvaluationView] = try await cli { () async throws(ClientError) in
                if let job { return try await api.evaluations(job: job) }
                return try await api.evaluations()
            }
            if json { return try printJSON(evals) }
            printTable(["ID", "JOB", "TRIGGERED BY", "STATUS", "INDEX", "OUTCOME"], evals.map {
                [String($0.id.prefix(8)), $0.jobID, $0.triggeredBy, $0.status, "\($0.modifyIndex)", $0.statusDescription]
            })
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "One evaluation, with why any instance could not be placed.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The evaluation id (or a unique prefix of at least 4 characters).") var id: String
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let api = try client.client()
            let e: EvaluationView = try await cli { () async throws(ClientError) in try await api.evaluation(id) }
            if json { return try printJSON(e) }
            print("""
                ID           = \(e.id)
                Job          = \(e.jobID)
                Triggered By = \(e.triggeredBy)
                Status       = \(e.status)
                Outcome      = \(e.statusDescription.isEmpty ? "(not evaluated yet)" : e.statusDescription)
                Index        = \(e.createIndex) created, \(e.modifyIndex) modified
                """)
            if !e.failedPlacements.isEmpty {
                print("\nPlacement failures:")
                for (_, why) in e.failedPlacements.sorted(by: { $0.key < $1.key }) { print("  " + why) }
            }
        }
    }
}
