import Foundation
import Testing

/// The CLI's promises that need no cluster: completion scripts, and `--json` on every command
/// that reports something.
@Suite struct CLITests {
    @Test func completionScriptsAreGeneratedForEachShell() throws {
        for shell in ["bash", "zsh", "fish"] {
            let r = try LocalCluster.run(["--generate-completion-script", shell])
            #expect(r.status == 0, "\(shell): \(r.stderr)")
            for word in ["job", "alloc", "node", "keyring", "operator"] {
                #expect(r.stdout.contains(word), "the \(shell) script offers \(word)")
            }
        }
    }

    @Test func everyReportingCommandOffersJSON() throws {
        let commands = [
            ["job", "run"], ["job", "plan"], ["job", "status"], ["job", "stop"], ["job", "history"], ["job", "revert"], ["job", "validate"],
            ["alloc", "status"], ["alloc", "exec"], ["node", "status"], ["node", "drain"], ["node", "eligibility"], ["members"], ["status"],
            ["keyring", "list"], ["keyring", "install"], ["keyring", "use"], ["keyring", "remove"],
            ["var", "put"], ["var", "get"], ["var", "list"], ["var", "delete"],
            ["operator", "raft", "peers"], ["operator", "raft", "transfer-leader"], ["operator", "scheduler", "get-config"],
            ["operator", "scheduler", "set-config"], ["leave"],
        ]
        for c in commands {
            let r = try LocalCluster.run(c + ["--help"])
            #expect(r.status == 0 && r.stdout.contains("--json"), "caravan \(c.joined(separator: " ")) has no --json")
        }
    }
}
