import Foundation
import Testing
@testable import CaravanModel

/// Job files as users write them: the examples parse, defaults are Nomad's, every mistake is
/// named with its line and field path, and a rendered job parses back to itself.
@Suite struct JobFileTests {
    static let examples: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Deploy/examples").standardized

    static func example(_ name: String) throws -> String {
        try String(contentsOf: examples.appendingPathComponent(name), encoding: .utf8)
    }

    static func problems(_ text: String) -> [String] {
        do {
            _ = try JobFile.parse(text, file: "t.yaml")
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }

    @Test(arguments: ["hello.yaml", "web.yaml", "web.json", "report.yaml", "node-agent.yaml"])
    func everyExampleParsesAndRoundTrips(name: String) throws {
        let job = try JobFile.parse(try Self.example(name), file: name)
        #expect(!job.groups.isEmpty)
        let again = try JobFile.parse(JobFile.render(job), file: "rendered")
        #expect(again == job)
    }

    @Test func theDesignExampleMeansWhatItSays() throws {
        let job = try JobFile.parse(try Self.example("web.yaml"))
        #expect(job.id == "web" && job.name == "web" && job.namespace == "default" && job.type == .service)
        #expect(job.constraints == [Constraint(attribute: "${attr.kernel.name}", operator: .equal, value: "linux")])
        #expect(job.update?.autoRevert == true && job.update?.minHealthyTime == .seconds(10))
        let g = job.groups[0]
        #expect(g.count == 4 && g.ports == [Port(label: "http", staticPort: nil, to: nil)])
        #expect(g.services[0].checks[0].type == .http && g.services[0].checks[0].timeout == .seconds(2))
        let t = g.tasks[0]
        #expect(t.driver == .container && t.config.image == "127.0.0.1:5000/busybox:1.36")
        // DESIGN.md's example binds every interface; several agents on one machine would then
        // collide on a port, so the example binds the node's address.
        #expect(t.config.args == ["-f", "-p", "${CARAVAN_ADDR_http}"])
        #expect(t.resources == Resources(cpuMillicores: 100, memoryMiB: 64))
        #expect(t.env == ["GREETING": "hello"])
    }

    @Test func defaultsFollowNomad() throws {
        let service = try JobFile.parse(try Self.example("hello.yaml"))
        #expect(service.priority == 50 && service.datacenters == ["*"])
        #expect(service.groups[0].restart == RestartPolicy(attempts: 2, interval: .seconds(1800), delay: .seconds(15), mode: .fail))
        #expect(service.groups[0].reschedule.unlimited && service.groups[0].reschedule.delayFunction == .exponential)
        #expect(service.groups[0].tasks[0].killTimeout == .seconds(5))
        let batch = try JobFile.parse(try Self.example("report.yaml"))
        #expect(batch.groups[0].restart.attempts == 3 && batch.groups[0].restart.interval == .seconds(86400))
        #expect(batch.groups[0].reschedule.attempts == 1 && !batch.groups[0].reschedule.unlimited)
        #expect(batch.periodic == Periodic(cron: "30 2 * * *", timeZone: "UTC", prohibitOverlap: true))
    }

    @Test func yamlAndJsonSpellingsAreTheSameJob() throws {
        let yaml = """
        id: a
        groups:
          - name: g
            count: 2
            tasks:
              - name: t
                driver: raw_exec
                config: {command: /bin/true}
                resources: {cpu: 0.5, memory: 1Gi}
        """
        let json = #"{"id": "a", "groups": [{"name": "g", "count": 2, "tasks": [{"name": "t", "driver": "raw_exec", "config": {"command": "/bin/true"}, "resources": {"cpu": "500m", "memory": 1024}}]}]}"#
        #expect(try JobFile.parse(yaml) == JobFile.parse(json))
    }

    @Test func errorsNameTheLineAndTheFieldPath() {
        let text = """
        id: web
        groups:
          - name: web
            count: -1
            tasks:
              - name: a
                driver: raw_exec
                config: {command: /bin/true}
              - name: b
                driver: docker
                resources: {cpu: 100m, memory: 0}
        """
        let p = Self.problems(text)
        #expect(p.contains("line 4: groups[0].count: must be between 0 and 100000"), "\(p)")
        #expect(p.contains("line 10: groups[0].tasks[1].driver: \"docker\" is not one of raw_exec, exec, container"), "\(p)")
        #expect(p.contains("line 11: groups[0].tasks[1].resources.memory: must be > 0"), "\(p)")
    }

    @Test func unknownKeysAreErrorsWithASuggestion() {
        let p = Self.problems("""
        id: web
        groups:
          - name: web
            taks: []
        """)
        #expect(p.contains("line 4: groups[0].taks: unknown key (did you mean tasks?)"), "\(p)")
        #expect(p.contains { $0.contains("groups[0].tasks: is required") }, "\(p)")
    }

    @Test func rulesAcrossFieldsAreChecked() {
        let p = Self.problems("""
        id: sys
        type: system
        update: {maxParallel: 2, canary: 1}
        groups:
          - name: g
            count: 3
            network: {ports: [{label: http}, {label: http}]}
            services: [{name: s, port: admin}]
            tasks:
              - {name: t, driver: container, config: {command: x}}
              - {name: t, driver: raw_exec, config: {image: busybox}}
        """)
        let expected = [
            "groups[0].count: system jobs run one per node",
            "update.canary: canaries apply to service jobs only",
            "duplicate port label \"http\"",
            "groups[0].services[0].port: no port labelled \"admin\"",
            "groups[0].tasks[0].config.image: is required for the container driver",
            "groups[0].tasks[1].name: duplicate task name",
            "groups[0].tasks[1].config.command: is required for the raw_exec driver",
            "groups[0].tasks[1].config.image: only the container driver runs images",
        ]
        for e in expected { #expect(p.contains { $0.contains(e) }, "missing \(e) in \(p)") }
        #expect(Self.problems("id: a\nupdate: {autoPromote: true}\ngroups: [{name: g, tasks: [{name: t, driver: raw_exec, config: {command: x}}]}]\n")
                == ["line 2: update.autoPromote: needs canary > 0 (there is nothing to promote)"])
    }

    @Test func syntaxErrorsAreReportedWithTheirLine() {
        #expect(Self.problems("id: a\n  bad: indent\n") == ["line 2: bad indentation (this line is indented more than the key before it)"])
        #expect(Self.problems("id: \"unclosed\n") == ["line 1: a quoted string is not closed"])
        #expect(Self.problems("id: a\nid: b\n") == ["line 2: duplicate key \"id\""])
        #expect(Self.problems("{\"id\": \"a\",\n \"groups\": [}") .first?.hasPrefix("line 2:") == true)
        #expect(Self.problems("id: &x a\n") == ["line 1: anchors and aliases are not supported"])
        #expect(Self.problems("") == ["line 1: id: is required", "line 1: groups: is required"])
    }

    @Test func unitsAreReadAsPeopleWriteThem() {
        #expect(Units.millicores("250m") == 250 && Units.millicores("0.25") == 250 && Units.millicores("2") == 2000)
        #expect(Units.millicores("1.5") == 1500 && Units.millicores("x") == nil && Units.millicores("0.0001") == nil)
        #expect(Units.mebibytes("64Mi") == 64 && Units.mebibytes("1Gi") == 1024 && Units.mebibytes("512") == 512)
        #expect(Units.mebibytes("1024Ki") == 1 && Units.mebibytes("lots") == nil)
        #expect(Units.duration("1h30m") == .seconds(5400) && Units.duration("500ms") == .milliseconds(500))
        #expect(Units.duration("10") == .seconds(10) && Units.duration("10x") == nil && Units.duration("m") == nil)
        #expect(Units.text(.seconds(5400)) == "1h30m" && Units.text(.milliseconds(1500)) == "1s500ms")
        #expect(Units.duration("365d") == .seconds(365 * 86400) && Units.duration("365d1ms") == nil && Units.duration("٣s") == nil)
        #expect(Units.millicores("1000") == 1_000_000 && Units.millicores("1000.001") == nil && Units.millicores("1000001m") == nil)
        #expect(Units.millicores("0.½") == nil && Units.millicores("٣") == nil && Units.millicores("½m") == nil && Units.millicores(".") == nil)
        #expect(Units.mebibytes("16Ti") == 16 << 20 && Units.mebibytes("16.1Ti") == nil && Units.mebibytes("1e3Mi") == nil && Units.mebibytes("nanMi") == nil)
    }

    /// Values a user controls can't overflow anything: every duration, CPU amount and size has an
    /// upper bound at parse time, and numbers past it are refused with a message naming the
    /// field and the bound (they used to be stored and then trap the leader).
    @Test(arguments: [
        ("update", "minHealthyTime", "9223372036854775"), ("update", "minHealthyTime", "366d"), ("update", "healthyDeadline", "99999999999999999999h"),
        ("task", "killTimeout", "9223372036854775807"), ("task", "killTimeout", "30000000000000000m"), ("task", "killTimeout", String(repeating: "1d", count: 400)),
        ("resources", "cpu", "10000000000000000"), ("resources", "cpu", "10000000000000000m"), ("resources", "cpu", "1001"),
        ("resources", "memory", "1e300Gi"), ("resources", "memory", "infGi"), ("resources", "memory", "17Ti"), ("resources", "memory", "99999999999999999999"),
        ("resources", "memoryMax", "9223372036854775807"),
    ])
    func hugeValuesAreRefusedWithTheirBound(place: String, key: String, value: String) {
        let task = place == "task" ? "\(key): \"\(value)\"" : ""
        let resources = place == "resources" ? "resources: {\(key): \"\(value)\"}" : ""
        let update = place == "update" ? "update: {\(key): \"\(value)\"}\n" : ""
        let text = """
        id: big
        \(update)groups:
          - name: g
            tasks:
              - name: t
                driver: raw_exec
                config: {command: /bin/true}
                \(task)\(resources)
        """
        let problems = Self.problems(text)
        #expect(problems.contains { $0.contains(key) && ($0.contains("at most") || $0.contains("must be at least")) }, "\(key)=\(value.prefix(40)): \(problems)")
    }

    static let minimalGroups = """
        groups:
          - name: g
            tasks: [{name: t, driver: raw_exec, config: {command: /bin/true}}]
        """

    /// Text the cluster stored under an earlier version (no bounds then) still reads — clamped to
    /// the bounds, the same on every replica — so a log replay or an old snapshot neither
    /// refuses it nor overflows on it.
    @Test func storedJobsPastABoundAreClampedNotRefused() throws {
        let text = """
        id: old
        update: {minHealthyTime: 9223372036854775}
        groups:
          - name: ..
            tasks:
              - {name: t, driver: raw_exec, config: {command: /bin/true}, killTimeout: 30000000000000000m, resources: {cpu: 10000000000000000, memory: 99999999999999999999}}
        """
        #expect(!Self.problems(text).isEmpty)
        let job = try JobFile.parse(text, stored: true)
        #expect(job.update?.minHealthyTime == Units.maxDuration)
        #expect(job.groups[0].tasks[0].killTimeout == Units.maxDuration)
        #expect(job.groups[0].tasks[0].resources == Resources(cpuMillicores: Units.maxMillicores, memoryMiB: Units.maxMebibytes))
        #expect(throws: JobFileError.self) { try JobFile.parse("id: x\nupdate: {minHealthyTime: 1e5s}\n" + Self.minimalGroups, stored: true) }
    }

    /// Deep nesting is refused with a message, not a crashed stack: 60 KB of `[`, of `{a:`, and
    /// of ever more indented keys.
    @Test func deepNestingIsRefusedNotACrash() {
        let flow = String(repeating: "[", count: 60_000)
        let braces = "id: x\nmeta: " + String(repeating: "{a: ", count: 20_000)
        var block = "id: x\nmeta:\n"
        for i in 0..<5_000 { block += String(repeating: " ", count: i + 1) + "k\(i):\n" }
        for text in [flow, braces, block] {
            let problems = Self.problems(text)
            #expect(problems.contains { $0.contains("nested more than 64 levels") }, "\(problems.prefix(2))")
        }
    }

    /// What the subset once misread is read right or refused: `- - a` is a list in a list,
    /// `''` inside single quotes does not end them (and a `#` after it is text), and JSON's
    /// `\b`, `\f` and surrogate pairs are read as JSON means them.
    @Test func yamlAndJsonEdgesAreReadAsTheyMean() throws {
        let nested = try YAMLSubsetParser.parse("- - a\n  - b\n- c")
        guard case .sequence(let outer, _) = nested, outer.count == 2, case .sequence(let inner, _) = outer[0], inner.count == 2 else {
            Issue.record("- - a: \(nested)"); return
        }
        #expect(Self.problems("id: x\ndatacenters:\n  - - a\n" + Self.minimalGroups).contains { $0.contains("datacenters[0]") })
        // An apostrophe in a plain item of a multi-line flow list is not a quote.
        let apostrophe = try JobFile.parse("id: x\ndatacenters: [it's, 'x]',\n  y]\n" + Self.minimalGroups)
        #expect(apostrophe.datacenters == ["it's", "x]", "y"])
        // A tab after the colon is white space, not the start of a plain value.
        let tabbed = try JobFile.parse("id: x\ndatacenters:\t[a, b]\n" + Self.minimalGroups)
        #expect(tabbed.datacenters == ["a", "b"])
        let quoted = try JobFile.parse("id: x\nmeta:\n  a: 'it''s # x'\n" + Self.minimalGroups)
        #expect(quoted.meta["a"] == "it's # x")
        let json = try JobFile.parse(#"{"id": "x", "meta": {"a": "\b\f\ud83d\ude00\u00e9"}, "groups": [{"name": "g", "tasks": [{"name": "t", "driver": "raw_exec", "config": {"command": "/bin/true"}}]}]}"#)
        #expect(json.meta["a"] == "\u{08}\u{0C}😀é")
        for bad in [#""\ud83d""#, #""\ude00""#, #""\ud83dx""#, #""\u12""#, #""\uZZZZ""#] {
            #expect(throws: SyntaxError.self) { try YAMLSubsetParser.parse("a: " + bad) }
        }
    }

    /// A megabyte of flow list over many lines, or of keys, is read in linear time (each used
    /// to take quadratic time: 80 KB took 13 s).
    @Test func largeFilesParseInLinearTime() throws {
        var list = "id: x\ndatacenters: [\n"
        for i in 0..<60_000 { list += "  dc\(i),\n" }
        list += "  ]\n" + Self.minimalGroups
        var keys = "id: x\nmeta:\n"
        for i in 0..<50_000 { keys += "  key\(i): v\n" }
        keys += Self.minimalGroups
        // Many block scalars: each is read to its own end, not to the end of the file.
        var scripts = "id: x\nmeta:\n"
        for i in 0..<20_000 { scripts += "  s\(i): |\n    echo \(i)\n    exit 0\n" }
        scripts += Self.minimalGroups
        for text in [list, keys, scripts] {
            #expect(text.utf8.count > 500_000)
            let start = ContinuousClock.now
            _ = try JobFile.parse(text)
            #expect(ContinuousClock.now - start < .seconds(20), "took \(ContinuousClock.now - start) for \(text.utf8.count) bytes")
        }
    }

    /// Names become directories on the node: `.` and `..` are refused wherever a name goes.
    @Test func dotNamesAreRefused() {
        for (field, text) in [("tasks[0].name", "id: x\ngroups:\n  - name: g\n    tasks: [{name: '..', driver: raw_exec, config: {command: /bin/true}}]"),
                              ("groups[0].name", "id: x\ngroups:\n  - name: .\n    tasks: [{name: t, driver: raw_exec, config: {command: /bin/true}}]"),
                              ("id", "id: ..\n" + Self.minimalGroups)] {
            #expect(Self.problems(text).contains { $0.contains(field) && $0.contains("not . or ..") }, "\(field): \(Self.problems(text))")
        }
    }

    @Test func cronExpressionsAreChecked() {
        #expect(Cron.problem("*/5 * * * *") == nil)
        #expect(Cron.problem("0 2 * * 1-5") == nil)
        #expect(Cron.problem("61 * * * *") != nil)
        #expect(Cron.problem("* * *") != nil)
    }

    @Test func garbageNeverCrashesTheParser() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("ab:- {}[],\"'#\n  \\1")
        for _ in 0..<3000 {
            let s = String((0..<Int.random(in: 0...60, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
            _ = Self.problems(s)
        }
    }
}

@Suite struct PeriodicTests {
    // 2026-11-25 17:50:00 UTC (a Wednesday).
    static let t0: Int64 = 1_795_629_000

    @Test func theNextLaunchFollowsTheCronFields() {
        let nightly = Periodic(cron: "30 2 * * *")
        let n = nightly.next(after: Self.t0)!
        #expect(n == 1_795_660_200, "2026-11-26 02:30 UTC")
        #expect(Periodic(cron: "*/15 * * * *").next(after: Self.t0) == Self.t0 + 600, "18:00 UTC")
        #expect(Periodic(cron: "0 9 * * 1").next(after: Self.t0)! == 1_796_029_200, "Monday 2026-11-30 09:00 UTC")
        // Both day fields restricted: either matches (the 1st of the month, or a Friday).
        #expect(Periodic(cron: "0 0 1 * 5").next(after: Self.t0)! == 1_795_737_600, "Friday 2026-11-27 00:00 UTC")
        var paris = Periodic(cron: "30 2 * * *")
        paris.timeZone = "+01:00"
        #expect(paris.next(after: Self.t0)! == 1_795_660_200 - 3600, "02:30 at +01:00 is 01:30 UTC")
    }

    @Test func timeZonesAreUTCFixedOffsetsOrNames() {
        #expect(Periodic.offsetSeconds("UTC") == 0 && Periodic.offsetSeconds("+02:00") == 7200)
        #expect(Periodic.offsetSeconds("-0530") == -19800 && Periodic.offsetSeconds("UTC+2") == 7200)
        #expect(Periodic.offsetSeconds("Europe/Paris") == nil && Periodic.offsetSeconds("+25") == nil)
        func problems(_ zone: String) -> [String] {
            JobFileTests.problems("id: r\ntype: batch\nperiodic: {cron: \"0 * * * *\", timeZone: \"\(zone)\"}\ngroups:\n  - name: g\n    tasks: [{name: t, driver: raw_exec, config: {command: /bin/true}}]\n")
        }
        for ok in ["Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+3", "EST5EDT"] { #expect(problems(ok).isEmpty, "\(ok)") }
        for bad in ["../etc/passwd", "Mars Base", "/etc/x", "+25"] {
            #expect(problems(bad) == ["line 3: periodic.timeZone: \"\(bad)\" is not UTC, a fixed offset such as +02:00, or a time zone name such as Europe/Paris"],
                    "\(problems(bad))")
        }
    }

    static func zone(_ name: String) throws -> ZoneRules {
        let bytes = try #require(FileManager.default.contents(atPath: "/usr/share/zoneinfo/" + name), "tzdata is installed")
        return try #require(ZoneRules.parse(tzif: Array(bytes)), "\(name) parses")
    }

    @Test func namedZonesFollowTheirTransitionsAndTheirRuleAfterwards() throws {
        let paris = try Self.zone("Europe/Paris"), sydney = try Self.zone("Australia/Sydney"), newYork = try Self.zone("America/New_York")
        // Recorded transitions (2026) and the POSIX rule past the last one (2045, 2046).
        for (t, p, s) in [(1_768_478_400, 3600, 39600), (1_784_116_800, 7200, 36000), (2_368_094_400, 3600, 39600), (2_383_732_800, 7200, 36000)]
            as [(Int64, Int, Int)] {
            #expect(paris.offset(at: t) == p, "Paris at \(t)")
            #expect(sydney.offset(at: t) == s, "Sydney at \(t)")
        }
        // The rule's transition instant: New York springs forward at 07:00 UTC on 2046-03-11.
        #expect(newYork.offset(at: 2_404_362_600) == -18000 && newYork.offset(at: 2_404_366_200) == -14400)
        #expect(try Self.zone("Asia/Kolkata").offset(at: 1_784_116_800) == 19800)
        #expect(ZoneRules.parse(tzif: Array("not a zone file".utf8)) == nil)
        // 09:00 in Paris, on either side of the switch to summer time (2026-03-29).
        var daily = Periodic(cron: "0 9 * * *")
        daily.timeZone = "Europe/Paris"
        #expect(daily.hasNamedZone)
        #expect(daily.next(after: 1_774_656_000, zone: paris) == 1_774_684_800, "08:00 UTC on the 28th (UTC+1)")
        #expect(daily.next(after: 1_774_688_400, zone: paris) == 1_774_767_600, "07:00 UTC on the 29th (UTC+2)")
        #expect(daily.next(after: 1_774_656_000) == nil, "without its rules a named zone has no answer")
    }

    @Test func posixRules() throws {
        let cet = try #require(PosixRule("CET-1CEST,M3.5.0,M10.5.0/3"))
        #expect(cet.standard == 3600 && cet.daylight == 7200)
        #expect(cet.start == .init(day: .monthWeekDay(3, 5, 0), time: 7200) && cet.end == .init(day: .monthWeekDay(10, 5, 0), time: 10800))
        let india = try #require(PosixRule("<+0530>-5:30"))
        #expect(india.standard == 19800 && india.daylight == nil && india.offset(at: 0) == 19800)
        #expect(PosixRule("AEST-10AEDT,M10.1.0,M4.1.0/3")?.offset(at: 2_368_094_400) == 39600)
        for bad in ["", "X", "CET", "CET-1CEST,M13.1.0,M10.5.0", "CET-1CEST,M3.5.0"] { #expect(PosixRule(bad) == nil, "\(bad)") }
    }

    @Test func aLaunchIsTheJobWithoutItsSchedule() throws {
        let job = try JobFile.parse(try JobFileTests.example("report.yaml"))
        let child = Periodic.child(of: job, at: 1_795_662_600)
        #expect(child.id == "nightly-report-periodic-1795662600" && child.periodic == nil)
        #expect(child.meta["caravan.periodic.parent"] == "nightly-report")
        #expect(try JobFile.parse(JobFile.render(child)) == child)
    }
}
