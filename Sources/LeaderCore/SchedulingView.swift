import CaravanModel
import ClusterState
import Scheduler

/// The cluster state as the scheduler reads it: the nodes and what is used on them as the
/// state keeps them (``ClusterUse``), and each job's own allocations from the state's index —
/// nothing is copied or added up per job, however many allocations the cluster holds.
public struct SchedulingView: Sendable {
    public let state: ClusterState

    public init(_ state: ClusterState) {
        self.state = state
    }

    /// Every node, by slot.
    public var nodes: [Node] { state.use.nodes }

    /// What the scheduler needs to reconcile `job` (nil when purged) as version `version`; the
    /// job's kept versions let it tell in-place updates from destructive ones.
    public func input(for key: ClusterState.JobKey, job: Job?, version: Int, stopped: Bool, now: Int64?) -> SchedulerInput {
        var input = SchedulerInput(job: job, jobVersion: version, jobStopped: stopped, cluster: state.use,
                                   jobAllocations: state.allocations(ofJob: key), previousVersions: Self.previousVersions(state, key), now: now)
        input.promoted = state.jobs[key].map { $0.version == version && $0.promoted } ?? false
        input.quota = state.namespaces[key.namespace]?.quota
        return input
    }

    /// Every namespace's quota, for the plan applier.
    public var quotas: [String: Quota] { state.namespaces.compactMapValues(\.quota) }

    /// The job's kept versions by number.
    public static func previousVersions(_ state: ClusterState, _ key: ClusterState.JobKey) -> [Int: Job] {
        Dictionary((state.versions[key] ?? []).map { ($0.version, $0.job) }, uniquingKeysWith: { a, _ in a })
    }

    /// What `Scheduler.awaitingPromotion` reads about a job's current version — its kept
    /// predecessors and whether it was promoted — without the cluster's nodes and allocations.
    public static func promotionInput(_ state: ClusterState, _ key: ClusterState.JobKey, _ rec: ClusterState.JobRecord) -> SchedulerInput {
        var input = SchedulerInput(job: rec.job, jobVersion: rec.version, jobStopped: rec.stopped, cluster: ClusterUse(),
                                   jobAllocations: [], previousVersions: previousVersions(state, key))
        input.promoted = rec.promoted
        return input
    }
}
