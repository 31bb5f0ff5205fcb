import API
import CaravanModel
import ClusterState
import Executor
import FoundationEssentials
import Logging
import RaftNIO
import ServiceLifecycle

/// This agent's side of running work: watches the allocations the cluster assigns to this node,
/// hands them to the executor, and commits what the executor reports (`clientUpdate`).
///
/// Allocations are read through the leader (ReadIndex: linearizable, so an allocation absent
/// from the answer is really gone) as a blocking query: the leader answers as soon as an
/// allocation or job changes, or after `wait` (the executor syncs then as well).
struct NodeClient: Service {
    let agent: Agent
    var wait: Duration = .seconds(5)
    /// The pause after a failed read (no leader yet, the leader unreachable).
    var retry: Duration = .milliseconds(250)
    /// How often images no task uses are collected (beyond the 3 most recently used).
    var imageCollection: Duration = .seconds(300)
    /// How often logs are rotated and allocations' disk use checked.
    var diskCheck: Duration = .seconds(2)

    func run() async throws {
        let executor = agent.executor
        let found = await executor.recover()
        if found > 0 { agent.logger.info("found running tasks again after a restart", metadata: ["tasks": "\(found)"]) }
        var jobs: [String: Job] = [:]
        // Log rotation and each allocation's disk allowance, beside the loop below.
        let diskWatch = Task { await executor.watchDisk(every: diskCheck) }
        defer { diskWatch.cancel() }
        var lastCollect = ContinuousClock.now
        var index: UInt64 = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let q = ClusterQuery(kind: .nodeAllocations, id: agent.config.name)
                // Linearizable, never this agent's possibly lagging copy: an allocation missing from
                // a stale view (a voter still replaying its log after a restart) would be killed.
                // Without a leader the read fails and the tasks run on as they are.
                let (agent, after, wait) = (agent, index, wait)
                let read = try await cancelWhenGracefulShutdown { try await agent.read(q, after: after, wait: wait) }
                index = read.index
                let views = try read.decode([AssignmentView].self)
                var assignments: [Assignment] = []
                var texts = Set<String>()
                for v in views {
                    texts.insert(v.job)
                    let job: Job
                    if let j = jobs[v.job] { job = j } else {
                        guard let j = try? JobFile.parse(v.job, file: "cluster state", stored: true) else { continue }
                        jobs[v.job] = j
                        job = j
                    }
                    assignments.append(Assignment(allocation: Self.allocation(v.allocation), job: job))
                }
                jobs = jobs.filter { texts.contains($0.key) }
                await executor.sync(assignments)
            } catch {
                if Task.isShuttingDownGracefully { break }
                agent.logger.debug("cannot read this node's allocations yet", metadata: ["error": "\(error)"])
                index = 0
                try? await Task.sleep(for: retry)
            }
            if ContinuousClock.now - lastCollect > imageCollection {
                let (images, blobs) = await agent.images.collect()
                if !images.isEmpty || blobs > 0 {
                    agent.logger.info("unused images removed", metadata: ["images": "\(images.count)", "blobs": "\(blobs)"])
                }
                lastCollect = .now
            }
        }
        // Tasks keep running when the agent stops; the next run finds them again.
    }

    static func allocation(_ v: AllocationView) -> Allocation {
        var a = Allocation(id: v.id, jobID: v.jobID, jobVersion: v.jobVersion, group: v.group, name: v.name, nodeID: v.node,
                           cpuMillicores: v.cpuMillicores, memoryMiB: v.memoryMiB, diskMiB: v.diskMiB)
        a.namespace = v.namespace
        a.ports = v.ports
        a.desiredStatus = Allocation.DesiredStatus(rawValue: v.desiredStatus) ?? .stop
        a.desiredDescription = v.desiredDescription
        a.clientStatus = Allocation.ClientStatus(rawValue: v.clientStatus) ?? .pending
        a.clientDescription = v.clientDescription
        return a
    }

    /// Commits the executor's reports as one `clientUpdate`; false to have them retried.
    static func commit(_ reports: [AllocationReport], raft: RaftNode, logger: Logger) async -> Bool {
        let updates = reports.map {
            ClientAllocationUpdate(allocationID: $0.allocationID, clientStatus: $0.clientStatus, description: $0.description,
                                   taskStates: $0.taskStates, checks: $0.checks.mapValues(\.rawValue))
        }
        do {
            let answer = try await raft.apply(Command.clientUpdate(updates).encode(), timeout: .seconds(5))
            return answer.first == 0
        } catch {
            logger.debug("could not report allocation status", metadata: ["error": "\(error)"])
            return false
        }
    }
}
