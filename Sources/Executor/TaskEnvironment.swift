import CaravanModel
import FoundationEssentials

/// The environment a task sees (Nomad's, with a CARAVAN_ prefix): identity, limits, directories
/// and ports, then the task's own `env`, whose values may refer to the others as `${NAME}`.
public enum TaskEnvironment {
    /// The search path for programs the agent runs (runc and its helpers) and for tasks that
    /// bring none.
    public static let hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    public static func build(allocation a: Allocation, job: Job, group: TaskGroup, task: TaskSpec, node: String,
                             directories d: TaskDirectories, isolated: Bool, address: String = "127.0.0.1") -> [String: String] {
        var env: [String: String] = [:]
        if !isolated {
            // raw_exec inherits the agent's environment, as Nomad's does.
            env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CARAVAN_") }
        }
        if env["PATH"] == nil { env["PATH"] = Self.hostPath }
        env["CARAVAN_ALLOC_ID"] = a.id
        env["CARAVAN_SHORT_ALLOC_ID"] = String(a.id.prefix(8))
        env["CARAVAN_ALLOC_NAME"] = a.name
        if let open = a.name.lastIndex(of: "["), let idx = Int(a.name[a.name.index(after: open)...].dropLast()) {
            env["CARAVAN_ALLOC_INDEX"] = String(idx)
        }
        env["CARAVAN_JOB_ID"] = a.jobID
        env["CARAVAN_JOB_NAME"] = job.name
        env["CARAVAN_NAMESPACE"] = a.namespace
        env["CARAVAN_GROUP_NAME"] = group.name
        env["CARAVAN_TASK_NAME"] = task.name
        env["CARAVAN_NODE_NAME"] = node
        env["CARAVAN_CPU_LIMIT"] = String(task.resources.cpuMillicores)
        env["CARAVAN_MEMORY_LIMIT"] = String(task.resources.memoryMiB)
        if let max = task.resources.memoryMaxMiB { env["CARAVAN_MEMORY_MAX_LIMIT"] = String(max) }
        env["CARAVAN_ALLOC_DIR"] = isolated ? "/alloc" : d.shared
        env["CARAVAN_TASK_DIR"] = isolated ? "/local" : d.local
        env["CARAVAN_SECRETS_DIR"] = isolated ? "/secrets" : d.secrets
        for (label, port) in a.ports {
            let key = label.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }
            let k = String(key)
            for name in Set([k, label]) {
                env["CARAVAN_PORT_\(name)"] = String(port)
                env["CARAVAN_HOST_PORT_\(name)"] = String(port)
                // Tasks share the host network: binding the node's address (not every
                // interface) lets several agents on one machine use the same port numbers.
                env["CARAVAN_IP_\(name)"] = address
                env["CARAVAN_ADDR_\(name)"] = "\(address):\(port)"
            }
        }
        for (k, v) in job.meta { env["CARAVAN_META_\(k)"] = v }
        for (k, v) in group.meta { env["CARAVAN_META_\(k)"] = v }
        for (k, v) in task.meta { env["CARAVAN_META_\(k)"] = v }
        let base = env
        for (k, v) in task.env { env[k] = interpolate(v, base) }
        return env
    }

    /// Replaces `${NAME}` with the variable's value; unknown names are left as written.
    public static func interpolate(_ text: String, _ env: [String: String]) -> String {
        guard text.contains("${") else { return text }
        var out = ""
        var rest = Substring(text)
        while let start = rest.firstRange(of: "${") {
            out += rest[..<start.lowerBound]
            let after = rest[start.upperBound...]
            guard let end = after.firstIndex(of: "}") else { out += rest[start.lowerBound...]; return out }
            let name = String(after[..<end])
            out += env[name] ?? "${\(name)}"
            rest = after[after.index(after: end)...]
        }
        return out + rest
    }
}
