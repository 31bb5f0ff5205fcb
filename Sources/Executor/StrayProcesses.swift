#if canImport(Glibc)
import Glibc
#endif

/// Processes of a task that no handle tracks: an agent killed between starting a task and
/// saving its state comes back without the process's pid, and would otherwise start a second
/// copy beside the first. Before a plain-process task starts, every process whose environment
/// names the same allocation and task (`CARAVAN_ALLOC_ID`, `CARAVAN_TASK_NAME`, set by the
/// agent at spawn and inherited by the task's children) is killed. Containers need no sweep:
/// runc's container of the same name is force-deleted before each start.
enum StrayProcesses {
    /// Kills the strays of this task; returns their pids.
    @discardableResult
    static func kill(allocation: String, task: String) -> [Int32] {
        let marks = [Array("CARAVAN_ALLOC_ID=\(allocation)".utf8), Array("CARAVAN_TASK_NAME=\(task)".utf8)]
        let me = getpid()
        var killed: [Int32] = []
        for entry in listDirectory("/proc") {
            guard let pid = Int32(entry), pid > 1, pid != me, let environ = readSmallBytes("/proc/\(pid)/environ") else { continue }
            let variables = environ.split(separator: 0, omittingEmptySubsequences: true)
            guard marks.allSatisfy({ mark in variables.contains { $0.elementsEqual(mark) } }) else { continue }
            if Glibc.kill(pid, SIGKILL) == 0 { killed.append(pid) }
        }
        return killed
    }
}
