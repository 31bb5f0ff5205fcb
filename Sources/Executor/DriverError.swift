/// Why a task could not be started or run; the message is the task event users see.
public struct DriverError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The task event type to record (`Driver Failure`, `Failed Validation`, `Image Pull Failed`).
    public var event: String
    /// False when trying again cannot help (bad config, missing command): no restart.
    public var recoverable: Bool
    public init(_ description: String, event: String = "Driver Failure", recoverable: Bool = true) {
        self.description = description
        self.event = event
        self.recoverable = recoverable && event != "Failed Validation"
    }
}
