import Logging

/// The agent's log lines, as `StreamLogHandler` writes them to standard error, with metadata
/// turned into text only when a line is written: the stream handler formats its metadata on every
/// change, and the HTTP server sets a request id on every request, though few of them log anything.
struct LogOutput: LogHandler {
    var stream: StreamLogHandler
    var metadata: Logger.Metadata = [:]

    init(label: String, level: Logger.Level) {
        stream = StreamLogHandler.standardError(label: label)
        stream.logLevel = level
    }

    var logLevel: Logger.Level {
        get { stream.logLevel }
        set { stream.logLevel = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { stream.metadataProvider }
        set { stream.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = stream
        line.metadata = metadata
        line.log(event: event)
    }
}
