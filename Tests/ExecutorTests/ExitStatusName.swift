import Executor

/// The executor's exit status under a name of its own: Swift Testing also has an `ExitStatus`, and
/// the module's name is shadowed by its `Executor` actor, so files that import both cannot spell it.
typealias ProcessExitStatus = ExitStatus
