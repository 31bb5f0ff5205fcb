import CaravanModel
import CaravanTesting
import Testing

/// The job-file fuzz targets' corpora (Fuzz/corpus/jobfile, /units), replayed through their
/// checks: every kept input parses or is refused, and what parses renders back to itself.
@Suite struct JobFileFuzzCorpusTests {
    @Test(arguments: ["jobfile", "units"]) func corpusReplays(target: String) {
        let inputs = FuzzCorpus.inputs(target)
        #expect(!inputs.isEmpty, "Fuzz/corpus/\(target) is empty: run Fuzz/run.sh \(target)")
        for (_, bytes) in inputs {
            if target == "jobfile" { JobFileFuzzing.jobFile(bytes) } else { JobFileFuzzing.units(bytes) }
        }
    }
}
