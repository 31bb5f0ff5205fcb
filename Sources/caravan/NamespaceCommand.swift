import API
import ArgumentParser
import FoundationEssentials

struct NamespaceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "namespace", abstract: "Namespaces: jobs kept apart, with access and quotas of their own.",
        discussion: """
            caravan namespace apply team-a --memory 2Gi --cpu 4000m --instances 20
            caravan job run --namespace team-a web.yaml        # or namespace: team-a in the file
            caravan namespace status team-a                    # what it uses against its quota
            caravan namespace apply team-a --enabled-drivers exec,container   # no raw_exec there

            An instance that would take a namespace past its quota is not placed; its job's status
            says why (namespace team-a: memory 2048Mi of 2048Mi used).
            """,
        subcommands: [Apply.self, List.self, Status.self, Delete.self])

    static func amount(_ used: Int?, _ limit: Int?, _ unit: String) -> String {
        "\(used ?? 0)\(unit)" + (limit.map { " of \($0)\(unit)" } ?? "")
    }

    /// Which drivers a namespace allows, as one line.
    static func drivers(_ c: NamespaceCapabilities?) -> String {
        let enabled = c?.enabledTaskDrivers.map { $0.isEmpty ? "none" : $0.joined(separator: ", ") } ?? "all"
        let disabled = c?.disabledTaskDrivers ?? []
        return enabled + (disabled.isEmpty ? "" : " except " + disabled.joined(separator: ", "))
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "apply", abstract: "Make or change a namespace (its description, quota and drivers); what is not given stays as it was.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The namespace.") var name: String
        @Option(help: "A description.") var description: String?
        @Option(help: "Quota: CPU its live instances may hold together (2000m, 4).") var cpu: String?
        @Option(help: "Quota: memory (512Mi, 2Gi).") var memory: String?
        @Option(help: "Quota: live instances.") var instances: Int?
        @Option(help: "The only task drivers its jobs may use, comma-separated (raw_exec, exec, container); `all` for every one.") var enabledDrivers: String?
        @Option(help: "Task drivers its jobs may not use, comma-separated; `none` for no such rule.") var disabledDrivers: String?
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            // What is not given is kept from the namespace as it is (the API replaces the whole).
            // Only "no such namespace" means there is nothing to keep: any other failure stops
            // here, before a PUT could replace what it could not read.
            let existing = try await client.find("/v1/namespace/" + CaravanClient.escape(name), as: NamespaceView.self)
            var quota = existing?.quota.map { q in
                QuotaSpec(cpu: q.cpuMillicores.map { "\($0)m" }, memory: q.memoryMiB.map { "\($0)Mi" }, instances: q.instances)
            }
            if cpu != nil || memory != nil || instances != nil {
                var q = quota ?? QuotaSpec()
                if let cpu { q.cpu = cpu }
                if let memory { q.memory = memory }
                if let instances { q.instances = instances }
                quota = q
            }
            var capabilities = existing?.capabilities
            func names(_ s: String, _ flag: String) throws -> [String] {
                let list = s.split(separator: ",").map { String($0.filter { $0 != " " }) }.filter { !$0.isEmpty }
                guard !list.isEmpty else { throw CLIError.usage("\(flag): name at least one driver (raw_exec, exec, container)") }
                return list
            }
            if let enabledDrivers {
                var c = capabilities ?? NamespaceCapabilities()
                c.enabledTaskDrivers = enabledDrivers == "all" ? nil : try names(enabledDrivers, "--enabled-drivers")
                capabilities = c
            }
            if let disabledDrivers {
                var c = capabilities ?? NamespaceCapabilities()
                c.disabledTaskDrivers = disabledDrivers == "none" ? nil : try names(disabledDrivers, "--disabled-drivers")
                capabilities = c
            }
            let body = NamespaceRequest(description: description ?? existing?.description, quota: quota,
                                        capabilities: capabilities ?? NamespaceCapabilities())
            let v: NamespaceView = try await client.call(.PUT, "/v1/namespace/" + CaravanClient.escape(name), body: body, write: true)
            if json { return try printJSON(v) }
            print("namespace \(v.name) applied (index \(v.modifyIndex))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "The namespaces you may see.")
        @OptionGroup var client: ClientOptions
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let all: [NamespaceView] = try await client.call(.GET, "/v1/namespaces")
            if json { return try printJSON(all) }
            printTable(["NAME", "JOBS", "CPU", "MEMORY", "INSTANCES", "DRIVERS", "DESCRIPTION"], all.map {
                [$0.name, "\($0.jobs)", NamespaceCommand.amount($0.used.cpuMillicores, $0.quota?.cpuMillicores, "m"),
                 NamespaceCommand.amount($0.used.memoryMiB, $0.quota?.memoryMiB, "Mi"),
                 NamespaceCommand.amount($0.used.instances, $0.quota?.instances, ""), NamespaceCommand.drivers($0.capabilities), $0.description]
            })
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "A namespace: its jobs and what they use against its quota.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The namespace.") var name: String
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() async throws {
            let v: NamespaceView = try await client.call(.GET, "/v1/namespace/" + CaravanClient.escape(name))
            if json { return try printJSON(v) }
            print("Name        = \(v.name)")
            print("Description = \(v.description)")
            print("Jobs        = \(v.jobs)")
            print("CPU         = \(NamespaceCommand.amount(v.used.cpuMillicores, v.quota?.cpuMillicores, "m"))")
            print("Memory      = \(NamespaceCommand.amount(v.used.memoryMiB, v.quota?.memoryMiB, "Mi"))")
            print("Instances   = \(NamespaceCommand.amount(v.used.instances, v.quota?.instances, ""))")
            if v.quota == nil { print("(no quota)") }
            print("Drivers     = \(NamespaceCommand.drivers(v.capabilities))")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete an empty namespace.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The namespace.") var name: String

        func run() async throws {
            let _: [String: Bool] = try await client.call(.DELETE, "/v1/namespace/" + CaravanClient.escape(name), write: true)
            print("namespace \(name) deleted")
        }
    }
}
