/// A named time zone's UTC offsets over time, read from a compiled tz database file (TZif,
/// RFC 8536): the recorded transitions, then the POSIX rule of the file's footer for the years
/// after them. Pure: the bytes come from whoever reads `/usr/share/zoneinfo/<name>`.
public struct ZoneRules: Sendable, Equatable {
    /// Transition instants (Unix seconds), ascending, and the offset (seconds east of UTC) from each.
    public var transitions: [Int64]
    public var offsets: [Int]
    /// The offset before the first transition.
    public var initialOffset: Int
    /// What applies after the last transition (nil: the last offset stays).
    public var rule: PosixRule?

    /// The offset from UTC in effect at `t` (Unix seconds).
    public func offset(at t: Int64) -> Int {
        if let last = transitions.last, t >= last, let rule { return rule.offset(at: t) }
        if transitions.isEmpty { return rule?.offset(at: t) ?? initialOffset }
        // The last transition at or before t.
        var lo = 0, hi = transitions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if transitions[mid] <= t { lo = mid + 1 } else { hi = mid }
        }
        return lo == 0 ? initialOffset : offsets[lo - 1]
    }

    /// Whether `name` looks like a tz database name (`Europe/Paris`, `America/Argentina/Buenos_Aires`,
    /// `Etc/GMT+3`, `EST5EDT`): the check every agent makes alike, without the database.
    public static func isZoneName(_ name: String) -> Bool {
        guard !name.isEmpty, name.count <= 64, !name.hasPrefix("/"), !name.hasSuffix("/"), !name.contains("..") else { return false }
        return name.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { part in
            !part.isEmpty && part.first!.isLetter && part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_+-".contains($0)) }
        }
    }

    /// Parses a TZif file (versions 1–4); nil if the bytes are not one.
    public static func parse(tzif bytes: [UInt8]) -> ZoneRules? {
        func u32(_ at: Int) -> Int? {
            guard at >= 0, at + 4 <= bytes.count else { return nil }
            return Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
        }
        func i32(_ at: Int) -> Int? { u32(at).map { Int(Int32(truncatingIfNeeded: $0)) } }
        func i64(_ at: Int) -> Int64? {
            guard let hi = u32(at), let lo = u32(at + 4) else { return nil }
            return Int64(bitPattern: UInt64(hi) << 32 | UInt64(lo))
        }
        struct Header { var isut, isstd, leap, time, type, char: Int }
        func header(_ at: Int) -> Header? {
            guard bytes.count >= at + 44, Array(bytes[at..<at + 4]) == Array("TZif".utf8),
                  let a = u32(at + 20), let b = u32(at + 24), let c = u32(at + 28), let d = u32(at + 32), let e = u32(at + 36), let f = u32(at + 40),
                  e > 0, d < 1 << 20, e < 256, f < 1 << 16, c < 1 << 16 else { return nil }
            return Header(isut: a, isstd: b, leap: c, time: d, type: e, char: f)
        }
        guard let h1 = header(0) else { return nil }
        let version = bytes[4]
        var h = h1, at = 44, timeSize = 4
        if version >= UInt8(ascii: "2") {
            // Skip the 32-bit block; the 64-bit one follows with its own header.
            let v1 = h1.time * 4 + h1.time + h1.type * 6 + h1.char + h1.leap * 8 + h1.isstd + h1.isut
            guard let h2 = header(44 + v1) else { return nil }
            h = h2
            at = 44 + v1 + 44
            timeSize = 8
        }
        var times: [Int64] = []
        for i in 0..<h.time {
            guard let t = timeSize == 8 ? i64(at + i * 8) : i32(at + i * 4).map(Int64.init) else { return nil }
            times.append(t)
        }
        at += h.time * timeSize
        guard at + h.time + h.type * 6 <= bytes.count else { return nil }
        let typeIndex = bytes[at..<at + h.time].map(Int.init)
        at += h.time
        var typeOffsets: [Int] = []
        for i in 0..<h.type {
            guard let off = i32(at + i * 6) else { return nil }
            typeOffsets.append(off)
        }
        at += h.type * 6 + h.char + h.leap * (timeSize + 4) + h.isstd + h.isut
        guard typeIndex.allSatisfy({ $0 < typeOffsets.count }) else { return nil }
        var rule: PosixRule?
        if version >= UInt8(ascii: "2"), at < bytes.count, bytes[at] == UInt8(ascii: "\n") {
            let rest = bytes[(at + 1)...]
            if let end = rest.firstIndex(of: UInt8(ascii: "\n")), end > at + 1 {
                rule = PosixRule(String(decoding: bytes[(at + 1)..<end], as: UTF8.self))
            }
        }
        return ZoneRules(transitions: times, offsets: typeIndex.map { typeOffsets[$0] }, initialOffset: typeOffsets[0], rule: rule)
    }
}

/// A POSIX TZ rule such as `CET-1CEST,M3.5.0,M10.5.0/3`: standard and daylight offsets, and when
/// daylight time starts and ends each year (`Mm.w.d[/time]`, `Jn[/time]` or `n[/time]`).
public struct PosixRule: Sendable, Equatable {
    /// Seconds east of UTC.
    public var standard: Int
    public var daylight: Int?
    public var start: Transition?
    public var end: Transition?

    public enum Day: Sendable, Equatable {
        /// Month 1–12, week 1–5 (5 = last), weekday 0–6 (Sunday = 0).
        case monthWeekDay(Int, Int, Int)
        /// Day 1–365, February 29 never counted.
        case julianNoLeap(Int)
        /// Day 0–365, February 29 counted in leap years.
        case julian(Int)
    }

    public struct Transition: Sendable, Equatable {
        public var day: Day
        /// Seconds after local midnight (in the time in effect before the change).
        public var time: Int
    }

    public init?(_ text: String) {
        var s = Substring(text)
        func name() -> Bool {
            if s.first == "<" {
                guard let close = s.firstIndex(of: ">") else { return false }
                s = s[s.index(after: close)...]
                return true
            }
            let n = s.prefix { $0.isLetter }
            guard n.count >= 3 else { return false }
            s = s.dropFirst(n.count)
            return true
        }
        /// `[+-]hh[:mm[:ss]]` in seconds.
        func clock() -> Int? {
            var sign = 1
            if s.first == "+" { s = s.dropFirst() } else if s.first == "-" { sign = -1; s = s.dropFirst() }
            var parts: [Int] = []
            while parts.count < 3 {
                let d = s.prefix { $0.isNumber }
                guard !d.isEmpty, let v = Int(d) else { break }
                parts.append(v)
                s = s.dropFirst(d.count)
                guard s.first == ":" else { break }
                s = s.dropFirst()
            }
            guard let hh = parts.first, hh <= 167 else { return nil }
            return sign * (hh * 3600 + (parts.count > 1 ? parts[1] * 60 : 0) + (parts.count > 2 ? parts[2] : 0))
        }
        func transition() -> Transition? {
            let day: Day
            if s.first == "M" {
                s = s.dropFirst()
                let f = s.prefix { $0.isNumber || $0 == "." }.split(separator: ".").compactMap { Int($0) }
                s = s.dropFirst(s.prefix { $0.isNumber || $0 == "." }.count)
                guard f.count == 3, (1...12).contains(f[0]), (1...5).contains(f[1]), (0...6).contains(f[2]) else { return nil }
                day = .monthWeekDay(f[0], f[1], f[2])
            } else if s.first == "J" {
                s = s.dropFirst()
                let d = s.prefix { $0.isNumber }
                s = s.dropFirst(d.count)
                guard let n = Int(d), (1...365).contains(n) else { return nil }
                day = .julianNoLeap(n)
            } else {
                let d = s.prefix { $0.isNumber }
                s = s.dropFirst(d.count)
                guard let n = Int(d), (0...365).contains(n) else { return nil }
                day = .julian(n)
            }
            var time = 7200
            if s.first == "/" {
                s = s.dropFirst()
                guard let t = clock() else { return nil }
                time = t
            }
            return Transition(day: day, time: time)
        }
        guard name(), let std = clock() else { return nil }
        standard = -std  // POSIX counts west of UTC as positive
        guard !s.isEmpty else { daylight = nil; start = nil; end = nil; return }
        guard name() else { return nil }
        if let c = s.first, c == "+" || c == "-" || c.isNumber {
            guard let d = clock() else { return nil }
            daylight = -d
        } else {
            daylight = standard + 3600
        }
        guard s.first == "," else { return nil }
        s.removeFirst()
        guard let a = transition(), s.first == "," else { return nil }
        s.removeFirst()
        guard let b = transition(), s.isEmpty else { return nil }
        start = a
        end = b
    }

    /// The offset in effect at `t` (Unix seconds).
    public func offset(at t: Int64) -> Int {
        guard let daylight, let start, let end else { return standard }
        let year = CivilTime(unix: t + Int64(standard)).year
        // Transition instants in UTC: each local time is in the offset in effect before it.
        let on = Self.localSeconds(start, year: year) - Int64(standard)
        let off = Self.localSeconds(end, year: year) - Int64(daylight)
        let inDaylight = on < off ? (t >= on && t < off) : !(t >= off && t < on)
        return inDaylight ? daylight : standard
    }

    /// Local seconds since the epoch at which a transition happens in `year`.
    static func localSeconds(_ tr: Transition, year: Int) -> Int64 {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
        let day: Int
        switch tr.day {
        case .julian(let n): day = CivilTime.daysFromCivil(year: year, month: 1, day: 1) + n
        case .julianNoLeap(let n): day = CivilTime.daysFromCivil(year: year, month: 1, day: 1) + n - 1 + (leap && n >= 60 ? 1 : 0)
        case .monthWeekDay(let m, let w, let d):
            let first = CivilTime.daysFromCivil(year: year, month: m, day: 1)
            let firstWeekday = ((first % 7) + 11) % 7  // 1970-01-01 was a Thursday
            var date = first + (d - firstWeekday + 7) % 7 + (w - 1) * 7
            let nextMonth = m == 12 ? CivilTime.daysFromCivil(year: year + 1, month: 1, day: 1) : CivilTime.daysFromCivil(year: year, month: m + 1, day: 1)
            while date >= nextMonth { date -= 7 }  // week 5 = the last such weekday
            day = date
        }
        return Int64(day) * 86400 + Int64(tr.time)
    }
}
