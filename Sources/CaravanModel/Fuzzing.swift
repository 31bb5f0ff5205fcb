/// What the job-file fuzz targets (`Fuzz/run.sh jobfile|units`) and their corpus replay run:
/// any text parses or is refused with a message, in bounded time and depth, and a job that
/// parses renders to text that parses back to the same job.
public enum JobFileFuzzing {
    public static func jobFile(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let job = try? JobFile.parse(text, file: "fuzz") else { return }
        let rendered = JobFile.render(job)
        guard let again = try? JobFile.parse(rendered, file: "rendered") else { preconditionFailure("a rendered job does not parse:\n\(rendered)") }
        precondition(again == job, "render round trip:\n\(rendered)")
    }

    /// Durations, CPU and sizes: within their documented bounds or refused.
    public static func units(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        if let d = Units.duration(text) { precondition(d <= Units.maxDuration && d >= .zero, "duration out of bounds: \(text)") }
        if let m = Units.millicores(text) { precondition(m >= 0 && m <= Units.maxMillicores, "millicores out of bounds: \(text)") }
        if let b = Units.mebibytes(text) { precondition(b >= 0 && b <= Units.maxMebibytes, "size out of bounds: \(text)") }
        _ = Units.duration(text, clamp: true)
        _ = Units.millicores(text, clamp: true)
        _ = Units.mebibytes(text, clamp: true)
    }
}
