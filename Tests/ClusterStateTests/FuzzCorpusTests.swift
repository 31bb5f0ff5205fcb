import CaravanTesting
import ClusterState
import Testing

/// The cluster-state fuzz targets' corpora (Fuzz/corpus/command, /snapshot), replayed through
/// their checks: no command or snapshot from the log or a peer traps a replica.
@Suite struct ClusterStateFuzzCorpusTests {
    @Test(arguments: ["command", "snapshot"]) func corpusReplays(target: String) {
        let inputs = FuzzCorpus.inputs(target)
        #expect(!inputs.isEmpty, "Fuzz/corpus/\(target) is empty: run Fuzz/run.sh \(target)")
        for (_, bytes) in inputs {
            if target == "command" { ClusterStateFuzzing.command(bytes) } else { ClusterStateFuzzing.snapshot(bytes) }
        }
    }
}
