import CaravanTesting
import Raft
import Testing

/// The Raft fuzz target's corpus (Fuzz/corpus/raft), replayed through its check.
@Suite struct RaftFuzzCorpusTests {
    @Test func corpusReplays() {
        let inputs = FuzzCorpus.inputs("raft")
        #expect(!inputs.isEmpty, "Fuzz/corpus/raft is empty: run Fuzz/run.sh raft")
        for (_, bytes) in inputs { RaftFuzzing.message(bytes) }
    }
}
