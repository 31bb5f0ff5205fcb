import CaravanTesting
@testable import Executor
import Testing

/// The image fuzz targets' corpora (Fuzz/corpus/layer, /manifest), replayed through their
/// checks: every kept layer unpacks or fails cleanly inside its scratch directory.
@Suite struct ImageFuzzCorpusTests {
    @Test(arguments: ["layer", "manifest"]) func corpusReplays(target: String) {
        let inputs = FuzzCorpus.inputs(target)
        #expect(!inputs.isEmpty, "Fuzz/corpus/\(target) is empty: run Fuzz/run.sh \(target)")
        let scratch = tempDir("fuzz-\(target)")
        for (_, bytes) in inputs {
            if target == "layer" { ImageFuzzing.layer(bytes, scratch: scratch) } else { ImageFuzzing.manifest(bytes) }
        }
    }
}
