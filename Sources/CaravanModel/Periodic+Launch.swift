/// When periodic jobs launch: five-field cron in UTC, a fixed offset or a named time zone,
/// evaluated on whole minutes of Unix time, and the child job each launch registers.
extension Periodic {
    /// The time zone as an offset from UTC in seconds: `UTC`, `Z`, `+02:00`, `-0530`, `UTC+2`.
    /// Nil for anything else, such as a named zone (`Europe/Paris`; see ``ZoneRules``).
    public static func offsetSeconds(_ zone: String) -> Int? {
        var z = Substring(zone)
        if z == "UTC" || z == "Z" || z == "GMT" { return 0 }
        if z.hasPrefix("UTC") || z.hasPrefix("GMT") { z = z.dropFirst(3) }
        guard let sign = z.first, sign == "+" || sign == "-" else { return nil }
        let digits = z.dropFirst().filter { $0 != ":" }
        guard !digits.isEmpty, digits.count <= 4, digits.allSatisfy(\.isNumber) else { return nil }
        let h: Int, m: Int
        if digits.count <= 2 { h = Int(digits)!; m = 0 } else { h = Int(digits.prefix(digits.count - 2))!; m = Int(digits.suffix(2))! }
        guard h <= 14, m < 60 else { return nil }
        return (sign == "-" ? -1 : 1) * (h * 3600 + m * 60)
    }

    /// Whether the time zone is a name for the tz database rather than UTC or a fixed offset.
    public var hasNamedZone: Bool { Self.offsetSeconds(timeZone) == nil && ZoneRules.isZoneName(timeZone) }

    /// The first launch strictly after `after` (Unix seconds), or nil if none within a year.
    /// A named time zone needs its rules (`zone`, read from the tz database); without them there
    /// is no answer.
    public func next(after: Int64, zone: ZoneRules? = nil) -> Int64? {
        let offsetAt: (Int64) -> Int
        if let fixed = Self.offsetSeconds(timeZone) {
            offsetAt = { _ in fixed }
        } else if let zone {
            offsetAt = { zone.offset(at: $0) }
        } else {
            return nil
        }
        guard let fields = Cron.fields(cron) else { return nil }
        var t = (after / 60 + 1) * 60
        for _ in 0..<(366 * 24 * 60) {
            let local = t + Int64(offsetAt(t))
            let c = CivilTime(unix: local)
            if fields[3].contains(c.month) && fields[1].contains(c.hour) && fields[0].contains(c.minute)
                && Cron.dayMatches(fields, day: c.day, weekday: c.weekday) {
                return t
            }
            t += 60
        }
        return nil
    }

    /// The job a launch at `time` registers: the periodic job without its schedule, named
    /// `<id>-periodic-<time>`.
    public static func child(of job: Job, at time: Int64) -> Job {
        var c = job
        c.id = "\(job.id)-periodic-\(time)"
        c.name = c.id
        c.periodic = nil
        c.meta["caravan.periodic.parent"] = job.id
        return c
    }
}

/// Minutes, hours, day, month and weekday of a Unix time (proleptic Gregorian, UTC).
struct CivilTime {
    var minute: Int, hour: Int, day: Int, month: Int, year: Int, weekday: Int

    init(unix: Int64) {
        let days = Int(unix >= 0 ? unix / 86400 : -((-unix + 86399) / 86400))
        let secs = Int(unix - Int64(days) * 86400)
        hour = secs / 3600
        minute = (secs % 3600) / 60
        weekday = ((days % 7) + 11) % 7  // 1970-01-01 was a Thursday (4)
        // Days to civil date (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        day = doy - (153 * mp + 2) / 5 + 1
        month = mp < 10 ? mp + 3 : mp - 9
        year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    }

    /// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}

extension Cron {
    /// The set of values each field allows, or nil if the expression is invalid.
    static func fields(_ expr: String) -> [Set<Int>]? {
        guard problem(expr) == nil else { return nil }
        let parts = expr.split(separator: " ", omittingEmptySubsequences: true)
        var out: [Set<Int>] = []
        for (i, f) in parts.enumerated() {
            var set = Set<Int>()
            for part in f.split(separator: ",") {
                let stepParts = part.split(separator: "/", omittingEmptySubsequences: false)
                let step = stepParts.count == 2 ? Int(stepParts[1])! : 1
                var lo = ranges[i].lowerBound, hi = ranges[i].upperBound
                if stepParts[0] != "*" {
                    let b = stepParts[0].split(separator: "-").map { Int($0)! }
                    lo = b[0]
                    hi = b.count == 2 ? b[1] : (stepParts.count == 2 ? ranges[i].upperBound : b[0])
                }
                var v = lo
                while v <= hi { set.insert(i == 4 && v == 7 ? 0 : v); v += step }
            }
            out.append(set)
        }
        // Remember whether day-of-month and day-of-week were restricted (cron's OR rule).
        out.append(parts[2] == "*" ? [] : [1])
        out.append(parts[4] == "*" ? [] : [1])
        return out
    }

    /// Cron's rule: when both day fields are restricted, either may match.
    static func dayMatches(_ f: [Set<Int>], day: Int, weekday: Int) -> Bool {
        let domRestricted = !f[5].isEmpty, dowRestricted = !f[6].isEmpty
        let dom = f[2].contains(day), dow = f[4].contains(weekday)
        if domRestricted && dowRestricted { return dom || dow }
        return dom && dow
    }
}
