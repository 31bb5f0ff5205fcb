import CaravanModel
import ClusterState
import Executor
import Scheduler

/// The cluster state as the scheduler reads it: the node and allocation lists are built once
/// per state, not once per job scheduled against it.
struct SchedulingView {
    let state: ClusterState
    let nodes: [Node]
    let allocations: [Allocation]

    init(_ state: ClusterState) {
        self.state = state
        nodes = Array(state.nodes.values)
        allocations = Array(state.allocations.values)
    }

    /// What the scheduler needs to reconcile `job` (nil when purged) as version `version`; the
    /// job's kept versions let it tell in-place updates from destructive ones.
    func input(for key: ClusterState.JobKey, job: Job?, version: Int, stopped: Bool, now: Int64? = Executor.unixMillis()) -> SchedulerInput {
        let previous = Dictionary((state.versions[key] ?? []).map { ($0.version, $0.job) }, uniquingKeysWith: { a, _ in a })
        var input = SchedulerInput(job: job, jobVersion: version, jobStopped: stopped, nodes: nodes, allocations: allocations,
                                   previousVersions: previous, now: now)
        input.promoted = state.jobs[key].map { $0.version == version && $0.promoted } ?? false
        return input
    }
}
