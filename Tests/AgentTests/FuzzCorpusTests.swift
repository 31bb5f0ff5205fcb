import API
import CaravanTesting
import Testing

/// The exec-frame fuzz target's corpus (Fuzz/corpus/execframe), replayed through its check.
@Suite struct ExecFrameFuzzCorpusTests {
    @Test func corpusReplays() {
        let inputs = FuzzCorpus.inputs("execframe")
        #expect(!inputs.isEmpty, "Fuzz/corpus/execframe is empty: run Fuzz/run.sh execframe")
        for (_, bytes) in inputs { ExecFrame.fuzzCheck(bytes) }
    }
}
