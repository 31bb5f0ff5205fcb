import CaravanTesting
import Testing
@testable import CaravanModel

/// Rendering a job and parsing it back gives the same job, for generated jobs that use every
/// field, every operator, driver, hook and mode the schema has, and awkward strings — not only
/// for the examples. (A `distinct_hosts` constraint once rendered with an empty attribute that
/// its own parser refused, so such a job could not be registered at all.)
@Suite struct JobRoundTripTests {
    /// What a failure prints: the first field that differs.
    static func difference(_ a: Job, _ b: Job) -> String {
        let pairs: [(String, String, String)] = [("header", "\(a.id) \(a.name) \(a.namespace) \(a.type) \(a.priority) \(a.datacenters)", "\(b.id) \(b.name) \(b.namespace) \(b.type) \(b.priority) \(b.datacenters)"),
                                                 ("meta", "\(a.meta)", "\(b.meta)"), ("constraints", "\(a.constraints)", "\(b.constraints)"),
                                                 ("affinities", "\(a.affinities)", "\(b.affinities)"), ("spreads", "\(a.spreads)", "\(b.spreads)"),
                                                 ("update", "\(String(describing: a.update))", "\(String(describing: b.update))"),
                                                 ("periodic", "\(String(describing: a.periodic))", "\(String(describing: b.periodic))")]
        for (what, x, y) in pairs where x != y { return "\(what): \(x) ≠ \(y)" }
        for (g, h) in zip(a.groups, b.groups) where g != h {
            for (t, u) in zip(g.tasks, h.tasks) where t != u { return "task: \(t) ≠ \(u)" }
            return "group: \(g) ≠ \(h)"
        }
        return "groups: \(a.groups.count) ≠ \(b.groups.count)"
    }

    @Test(arguments: 0..<8)
    func everyGeneratedJobRendersAndParsesBackToItself(batch: Int) throws {
        var seen = Set<String>()
        for seed in UInt64(batch * 250)..<UInt64(batch * 250 + 250) {
            var gen = JobGenerator(seed: seed)
            let job = gen.job()
            let text = JobFile.render(job)
            let again: Job
            do { again = try JobFile.parse(text, file: "rendered") } catch {
                Issue.record("seed \(seed): the rendered job does not parse: \(error)\n\(text)")
                continue
            }
            #expect(again == job, "seed \(seed): \(Self.difference(job, again))")
            // Rendering is canonical: the parsed job renders to the same text.
            #expect(JobFile.render(again) == text, "seed \(seed)")
            for c in job.constraints + job.groups.flatMap(\.constraints) { seen.insert("op \(c.operator.rawValue)") }
            for g in job.groups {
                for t in g.tasks { seen.insert("driver \(t.driver.rawValue)"); if let l = t.lifecycle { seen.insert("hook \(l.hook.rawValue)") } }
                for s in g.services { for c in s.checks { seen.insert("check \(c.type.rawValue)") } }
                seen.insert("restart \(g.restart.mode.rawValue)")
                seen.insert("delay \(g.reschedule.delayFunction.rawValue)")
            }
            seen.insert("type \(job.type.rawValue)")
        }
        // Every operator, driver, hook, check, mode and job type was generated in this batch.
        let expected = Constraint.Operator.allCases.map { "op \($0.rawValue)" } + TaskSpec.Driver.allCases.map { "driver \($0.rawValue)" }
            + Lifecycle.Hook.allCases.map { "hook \($0.rawValue)" } + Check.Kind.allCases.map { "check \($0.rawValue)" }
            + RestartPolicy.Mode.allCases.map { "restart \($0.rawValue)" } + ReschedulePolicy.DelayFunction.allCases.map { "delay \($0.rawValue)" }
            + Job.Kind.allCases.map { "type \($0.rawValue)" }
        #expect(Set(expected).subtracting(seen).isEmpty, "never generated: \(Set(expected).subtracting(seen).sorted())")
    }

    /// The reported case, as a user writes it.
    @Test func aDistinctHostsConstraintRoundTrips() throws {
        let text = """
        id: spread-out
        constraints:
          - operator: distinct_hosts
        groups:
          - name: g
            count: 3
            constraints: [{operator: distinct_hosts, value: "true"}]
            tasks: [{name: t, driver: raw_exec, config: {command: /bin/sleep}}]
        """
        let job = try JobFile.parse(text)
        #expect(job.constraints == [Constraint(attribute: "", operator: .distinctHosts, value: "")])
        #expect(try JobFile.parse(JobFile.render(job)) == job)
    }

    /// Registry credentials come whole: a login without its password is refused with a clear
    /// error (it was stored with an empty password that the job's own rendering then refused).
    @Test func registryAuthNeedsBothUsernameAndPassword() {
        let text = """
        id: c
        groups:
          - name: g
            tasks: [{name: t, driver: container, config: {image: "127.0.0.1:5000/x:1", auth: {username: u}}}]
        """
        #expect(throws: JobFileError.self) { try JobFile.parse(text) }
        do { _ = try JobFile.parse(text) } catch {
            #expect(error.problems.map(\.description).contains { $0.contains("config.auth.password") && $0.contains("required") }, "\(error)")
        }
    }
}
