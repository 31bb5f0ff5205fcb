/// Reads the part of YAML job files use — block mappings and lists by indentation, flow
/// mappings and lists (`{a: 1}`, `[x, y]`, also over several lines), plain, single- and
/// double-quoted scalars, literal (`|`) and folded (`>`) block scalars with their chomping
/// (`-`, `+`) and indentation indicators, comments — and therefore JSON too. Anchors, aliases,
/// tags and several documents are refused with a clear message rather than misread.
///
/// Written for the job-file schema so the model needs no Foundation; every node keeps its line.
public struct YAMLSubsetParser {
    struct Line { var number: Int; var indent: Int; var text: Substring; var hadComment = false }

    private var lines: [Line] = []
    private var pos = 0
    private let source: [Substring]
    /// Nesting of collections so far; past ``maxDepth`` the document is refused (a file of
    /// `[[[[…` must not run the parser out of stack).
    private var depth = 0
    static let maxDepth = 64

    public static func parse(_ text: String) throws(SyntaxError) -> DocumentNode {
        var p = YAMLSubsetParser(try normalised(text))
        return try p.document()
    }

    /// The text with CR LF and CR as LF. Refused: the other characters YAML 1.1 readers take as
    /// line breaks (U+0085, U+2028, U+2029), and a combining mark or joiner right after a
    /// character that means something to YAML (`#́` is neither `#` nor a plain character to
    /// every reader alike).
    static func normalised(_ text: String) throws(SyntaxError) -> String {
        let structural: Set<Unicode.Scalar> = ["#", ":", ",", "[", "]", "{", "}", "\"", "'", "\\", "-", "?", "|", ">",
                                               "&", "*", "!", "%", "@", "`", " ", "\t"]
        var out = String.UnicodeScalarView()
        var line = 1
        var previous: Unicode.Scalar = "\n"
        for u in text.unicodeScalars {
            switch u.value {
            case 0x0A:
                if previous != "\r" { out.append("\n"); line += 1 }
            case 0x0D:
                out.append("\n"); line += 1
            case 0x85, 0x2028, 0x2029:
                throw SyntaxError(line: line, message: "the character U+\(String(u.value, radix: 16, uppercase: true)) (a line or paragraph separator) is not allowed; write \\n in a quoted string")
            default:
                if structural.contains(previous), u.properties.isGraphemeExtend || u.value == 0x200D || (0xFE00...0xFE0F).contains(u.value) {
                    throw SyntaxError(line: line, message: "a combining mark or joiner follows '\(previous)'; quote the value")
                }
                out.append(u)
            }
            previous = u
        }
        return String(out)
    }

    init(_ text: String) {
        source = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (i, raw) in source.enumerated() {
            var t = raw
            if t.hasSuffix("\r") { t = t.dropLast() }
            let stripped = Self.stripComment(t)
            let content = stripped.drop { $0 == " " }
            if content.isEmpty { continue }
            lines.append(Line(number: i + 1, indent: stripped.count - content.count, text: Self.trimRight(content),
                              hadComment: stripped.count < t.count))
        }
    }

    static func trimRight(_ s: Substring) -> Substring {
        var s = s
        while let last = s.last, last == " " || last == "\t" { s = s.dropLast() }
        return s
    }

    /// Removes a `#` comment that is not inside quotes (a `#` must follow a space or start the line).
    static func stripComment(_ s: Substring) -> Substring {
        var quote: Character? = nil
        var prev: Character = " "
        var i = s.startIndex
        while i < s.endIndex {
            let c = s[i]
            if let q = quote {
                if c == "\\" && q == "\"" { i = s.index(after: i); if i < s.endIndex { i = s.index(after: i) }; prev = "x"; continue }
                if c == "'" && q == "'" {
                    // '' is a quote inside a single-quoted string, not its end.
                    let next = s.index(after: i)
                    if next < s.endIndex, s[next] == "'" { i = s.index(after: next); prev = "x"; continue }
                }
                if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                if prev == " " || prev == "[" || prev == "{" || prev == "," || prev == ":" || prev == "-" { quote = c }
            } else if c == "#" && (prev == " " || prev == "\t" || i == s.startIndex) {
                return s[s.startIndex..<i]
            }
            prev = c
            i = s.index(after: i)
        }
        return s
    }

    mutating func document() throws(SyntaxError) -> DocumentNode {
        if let first = lines.first, first.text == "---" { lines.removeFirst() }
        guard let first = lines.first else { return .null(line: 1) }
        // A marker counts at the start of a line only (indented, it may be block scalar text).
        func isMarker(_ l: Line) -> Bool { l.indent == 0 && (l.text == "---" || l.text == "...") }
        if let marker = lines.first(where: isMarker) {
            throw SyntaxError(line: marker.number, message: "only one document per job file")
        }
        if first.text.hasPrefix("{") || first.text.hasPrefix("[") {
            // JSON, or a flow collection spanning the file.
            var text = ""
            var lineOf: [Int] = []
            var balance = Balance()
            for (k, l) in lines.enumerated() {
                if k > 0 { try checkContinuation(balance, previous: lines[k - 1], next: l) }
                balance.feed(l.text)
                balance.feed(" ")
                for c in l.text { text.append(c); lineOf.append(l.number) }
                text.append(" "); lineOf.append(l.number)
            }
            var f = FlowParser(chars: Array(text), lines: lineOf)
            let node = try f.value()
            f.skipSpace()
            guard f.atEnd else { throw SyntaxError(line: f.line, message: "unexpected text after the end of the document") }
            return node
        }
        let node = try block(indent: first.indent)
        if pos < lines.count { throw SyntaxError(line: lines[pos].number, message: "bad indentation") }
        return node
    }

    private mutating func block(indent: Int) throws(SyntaxError) -> DocumentNode {
        let l = lines[pos]
        if l.text.hasPrefix("- ") || l.text == "-" { return try sequence(indent: indent) }
        return try mapping(indent: indent)
    }

    private mutating func deeper(_ line: Int) throws(SyntaxError) {
        depth += 1
        if depth > Self.maxDepth { throw SyntaxError(line: line, message: "nested more than \(Self.maxDepth) levels deep") }
    }

    private mutating func sequence(indent: Int) throws(SyntaxError) -> DocumentNode {
        let startLine = lines[pos].number
        try deeper(startLine)
        defer { depth -= 1 }
        var items: [DocumentNode] = []
        while pos < lines.count, lines[pos].indent == indent, lines[pos].text.hasPrefix("- ") || lines[pos].text == "-" {
            let l = lines[pos]
            let rest = l.text.dropFirst(1).drop { $0 == " " || $0 == "\t" }
            if rest.isEmpty {
                pos += 1
                if pos < lines.count, lines[pos].indent > indent {
                    items.append(try block(indent: lines[pos].indent))
                } else {
                    items.append(.null(line: l.number))
                }
                continue
            }
            // "- key: value" starts a mapping whose keys line up with `key`; "- - x" a list
            // whose items line up with the inner dash.
            let itemIndent = indent + (l.text.count - rest.count)
            if rest.hasPrefix("- ") || rest == "-" {
                lines[pos] = Line(number: l.number, indent: itemIndent, text: rest)
                items.append(try sequence(indent: itemIndent))
            } else if Self.mappingKey(rest) != nil && !rest.hasPrefix("{") && !rest.hasPrefix("[") && !rest.hasPrefix("\"") && !rest.hasPrefix("'") {
                lines[pos] = Line(number: l.number, indent: itemIndent, text: rest)
                items.append(try mapping(indent: itemIndent))
            } else {
                pos += 1
                items.append(try inlineValue(rest, line: l.number, parentIndent: indent))
            }
        }
        if pos < lines.count, lines[pos].indent > indent {
            throw SyntaxError(line: lines[pos].number, message: "bad indentation in a list")
        }
        return .sequence(items, line: startLine)
    }

    private mutating func mapping(indent: Int) throws(SyntaxError) -> DocumentNode {
        let startLine = lines[pos].number
        try deeper(startLine)
        defer { depth -= 1 }
        var entries: [(key: String, value: DocumentNode, line: Int)] = []
        var keys = Set<String>()
        while pos < lines.count, lines[pos].indent == indent {
            let l = lines[pos]
            if l.text.hasPrefix("- ") || l.text == "-" {
                throw SyntaxError(line: l.number, message: "a list item where a key was expected")
            }
            guard let (key, rest) = Self.mappingKey(l.text) else {
                throw SyntaxError(line: l.number, message: "expected `key: value`, found \"\(l.text)\"")
            }
            guard keys.insert(key).inserted else {
                throw SyntaxError(line: l.number, message: "duplicate key \"\(key)\"")
            }
            pos += 1
            let value: DocumentNode
            if rest.isEmpty {
                if pos < lines.count, lines[pos].indent > indent {
                    value = try block(indent: lines[pos].indent)
                } else if pos < lines.count, lines[pos].indent == indent, lines[pos].text.hasPrefix("- ") || lines[pos].text == "-" {
                    value = try sequence(indent: indent)  // a list may sit at its key's indentation
                } else {
                    value = .null(line: l.number)
                }
            } else {
                value = try inlineValue(rest, line: l.number, parentIndent: indent)
            }
            entries.append((key, value, l.number))
        }
        if pos < lines.count, lines[pos].indent > indent {
            throw SyntaxError(line: lines[pos].number, message: "bad indentation (this line is indented more than the key before it)")
        }
        return .mapping(entries, line: startLine)
    }

    /// A value on the same line as its key or dash; a flow collection may continue on the
    /// following, more indented lines.
    private mutating func inlineValue(_ text: Substring, line: Int, parentIndent: Int) throws(SyntaxError) -> DocumentNode {
        if text.hasPrefix("&") || text.hasPrefix("*") { throw SyntaxError(line: line, message: "anchors and aliases are not supported") }
        if text.hasPrefix("!") { throw SyntaxError(line: line, message: "tags are not supported") }
        if text.hasPrefix("|") || text.hasPrefix(">") {
            return try blockScalar(header: text, line: line, parentIndent: parentIndent)
        }
        if text.hasPrefix("{") || text.hasPrefix("[") {
            var s = String(text)
            var lineOf = Array(repeating: line, count: s.count)
            // The balance is carried from line to line (re-reading the whole text for each
            // added line was quadratic).
            var balance = Balance()
            balance.feed(s)
            var previous = lines[pos - 1]
            while !balance.closed, pos < lines.count, lines[pos].indent > parentIndent {
                try checkContinuation(balance, previous: previous, next: lines[pos])
                previous = lines[pos]
                s += " " + lines[pos].text
                balance.feed(" " + lines[pos].text)
                lineOf += Array(repeating: lines[pos].number, count: lines[pos].text.count + 1)
                pos += 1
            }
            s += " "; lineOf.append(lineOf.last ?? line)
            var f = FlowParser(chars: Array(s), lines: lineOf, depth: depth)
            let node = try f.value()
            f.skipSpace()
            guard f.atEnd else { throw SyntaxError(line: f.line, message: "unexpected text after a flow collection") }
            return node
        }
        var f = FlowParser(chars: Array(text), lines: Array(repeating: line, count: text.count), inFlow: false)
        let node = try f.value()
        f.skipSpace()
        guard f.atEnd else { throw SyntaxError(line: line, message: "unexpected text after a value: \"\(text)\"") }
        return node
    }

    /// A literal (`|`) or folded (`>`) block scalar whose header is on source line `line`: its
    /// text is the following lines indented more than the parent (or by the indentation
    /// indicator), read raw — `#` and blank lines are part of it. Chomping: clip (one final line
    /// break), `-` strip (none), `+` keep (all trailing blank lines). Folding joins lines with a
    /// space, except around blank and more-indented lines, as YAML 1.2 does.
    private mutating func blockScalar(header: Substring, line: Int, parentIndent: Int) throws(SyntaxError) -> DocumentNode {
        let folded = header.first == ">"
        var chomp: Character = " "
        var increment: Int?
        for c in header.dropFirst() {
            if (c == "-" || c == "+") && chomp == " " {
                chomp = c
            } else if let d = c.wholeNumberValue, d >= 1, d <= 9, increment == nil, c.isASCII {
                increment = d
            } else {
                throw SyntaxError(line: line, message: "invalid block scalar header \"\(header)\" (expected | or > with an optional - or + and indentation digit)")
            }
        }
        // The raw lines after the header: (spaces of indentation, the whole line).
        // Read only as far as the scalar goes: up to the first line with text that is indented
        // less than the scalar (so a file of many block scalars is read once, not once each).
        var raw: [(spaces: Int, text: Substring)] = []
        var n = line  // source index of the line after the header
        // The text after the last line break is a line only if it is not empty.
        let lineCount = source.last?.isEmpty == true ? source.count - 1 : source.count
        var fixed = increment.map { parentIndent + $0 }
        var mostBlank = 0
        while n < lineCount {
            var t = source[n]
            if t.hasSuffix("\r") { t = t.dropLast() }
            let spaces = t.prefix { $0 == " " }.count
            if spaces < t.count {
                // The first line with text sets the indentation, unless the header did.
                let indent = fixed ?? max(parentIndent + 1, mostBlank, spaces)
                fixed = indent
                if spaces < indent { break }
            } else if fixed == nil {
                mostBlank = max(mostBlank, spaces)
            }
            raw.append((spaces, t))
            n += 1
        }
        func isBlank(_ r: (spaces: Int, text: Substring)) -> Bool { r.spaces == r.text.count }
        let indent = fixed ?? max(parentIndent + 1, mostBlank)
        // Lines belong to the scalar while blank (at any indentation) or indented by `indent`.
        var items: [Substring?] = []  // nil: an empty line
        for (k, r) in raw.enumerated() {
            if isBlank(r) && r.spaces <= indent {
                // An empty line counts for its line break; the file's last, without one, adds nothing.
                if line + k + 1 < source.count { items.append(nil) }
                continue
            }
            guard r.spaces >= indent else { break }
            items.append(r.text.dropFirst(indent))
        }
        // Blank lines at the end are not the scalar's past what chomping keeps; a following
        // line less indented than the scalar belongs to the parent.
        var consumed = items.count
        var trailing = 0
        while trailing < items.count, items[items.count - 1 - trailing] == nil { trailing += 1 }
        let body = items.dropLast(trailing)
        var out = ""
        var i = body.startIndex
        var breaks = 0
        while i < body.endIndex, body[i] == nil { breaks += 1; i += 1 }
        var lineBreak = ""
        while i < body.endIndex, let text = body[i] {
            out += String(repeating: "\n", count: breaks)
            let leadingNonSpace = !(text.first == " " || text.first == "\t")
            out += text
            // The last line of a file that does not end with a line break has none.
            lineBreak = line + i - body.startIndex + 1 < source.count ? "\n" : ""
            i += 1
            breaks = 0
            while i < body.endIndex, body[i] == nil { breaks += 1; i += 1 }
            guard i < body.endIndex, let next = body[i] else { break }
            if folded && leadingNonSpace && !(next.first == " " || next.first == "\t") {
                if breaks == 0 { out += " " }
            } else {
                out += lineBreak
            }
        }
        breaks += trailing
        switch chomp {
        case "-": break
        case "+": out += lineBreak + String(repeating: "\n", count: breaks)
        default: out += lineBreak
        }
        // Trailing blank lines are consumed either way; the next line of the document follows.
        consumed = items.count
        let last = line + consumed  // the 1-based number of the scalar's last line
        while pos < lines.count, lines[pos].number <= last { pos += 1 }
        return .scalar(out, quoted: true, line: line)
    }

    /// Before line `next` joins a flow collection that `balance` has read so far: a quoted string
    /// may not run on to it (its line break would be folded, and a `#` in it was taken for a
    /// comment), a blank line may not come between (it would be a line break in a value), and a
    /// value cut by a comment may not continue on it. Refusing keeps the reading YAML's.
    func checkContinuation(_ balance: Balance, previous: Line, next: Line) throws(SyntaxError) {
        if balance.quote != nil {
            throw SyntaxError(line: previous.number, message: "a quoted string inside […] or {…} runs on to the next line; keep it on one line (write \\n for a line break)")
        }
        if next.number > previous.number + 1,
           source[previous.number..<(next.number - 1)].contains(where: { $0.allSatisfy { $0 == " " || $0 == "\t" } }) {
            throw SyntaxError(line: previous.number + 1, message: "a blank line inside […] or {…}; remove it")
        }
        if previous.hadComment, let last = previous.text.last, !"[{,".contains(last),
           let first = next.text.first, !",]}".contains(first) {
            throw SyntaxError(line: next.number, message: "a value inside […] or {…} continues after a comment; put the comment after a comma")
        }
    }

    /// Whether the brackets opened so far are closed, fed a piece at a time.
    struct Balance {
        var depth = 0
        var quote: Character? = nil
        var escaped = false
        /// The last character outside quotes: a quote opens a string only where a value starts
        /// (`it's` in a plain scalar is an apostrophe, as the flow parser reads it).
        var previous: Character = " "
        var closed: Bool { depth <= 0 }

        mutating func feed(_ s: some StringProtocol) {
            for c in s {
                if let q = quote {
                    if escaped { escaped = false; continue }
                    if c == "\\" && q == "\"" { escaped = true; continue }
                    if c == q { quote = nil }
                    continue
                }
                defer { previous = c }
                switch c {
                case "\"", "'":
                    if " \t[{,:".contains(previous) { quote = c }
                case "{", "[": depth += 1
                case "}", "]": depth -= 1
                default: break
                }
            }
        }
    }

    /// Splits `key: rest` (the key may be quoted); nil if the line is not a mapping entry.
    static func mappingKey(_ text: Substring) -> (String, Substring)? {
        if text.hasPrefix("\"") || text.hasPrefix("'") {
            var f = FlowParser(chars: Array(text), lines: Array(repeating: 0, count: text.count))
            guard case .scalar(let k, _, _)? = try? f.quoted() else { return nil }
            let rest = text.dropFirst(f.index)
            guard rest.hasPrefix(":") else { return nil }
            return (k, rest.dropFirst().drop { $0 == " " })
        }
        var i = text.startIndex
        while i < text.endIndex {
            if text[i] == ":" {
                let next = text.index(after: i)
                if next == text.endIndex || text[next] == " " || text[next] == "\t" {
                    let key = trimRight(text[text.startIndex..<i])
                    guard let first = key.first, !key.contains("{"), !key.contains("["), !key.contains(" #"), !key.contains("\t#"),
                          FlowParser.canStartPlain(first, key.dropFirst().first) else { return nil }
                    return (String(key), text[next...].drop { $0 == " " || $0 == "\t" })
                }
            }
            i = text.index(after: i)
        }
        return nil
    }
}

/// Flow-style values: `{...}`, `[...]`, quoted and plain scalars.
struct FlowParser {
    let chars: [Character]
    let lines: [Int]
    var index = 0
    var inFlow = true
    var depth: Int

    init(chars: [Character], lines: [Int], inFlow: Bool = true, depth: Int = 0) {
        self.chars = chars
        self.lines = lines
        self.inFlow = inFlow
        self.depth = depth
    }

    private mutating func deeper() throws(SyntaxError) {
        depth += 1
        if depth > YAMLSubsetParser.maxDepth { throw SyntaxError(line: line, message: "nested more than \(YAMLSubsetParser.maxDepth) levels deep") }
    }

    var atEnd: Bool { index >= chars.count }
    var line: Int { lines.isEmpty ? 0 : lines[min(index, lines.count - 1)] }

    mutating func skipSpace() { while index < chars.count, chars[index] == " " || chars[index] == "\t" { index += 1 } }

    mutating func value() throws(SyntaxError) -> DocumentNode {
        skipSpace()
        guard index < chars.count else { return .null(line: line) }
        switch chars[index] {
        case "{": return try mapping()
        case "[": return try sequence()
        case "\"", "'": return try quoted()
        default: return try plain()
        }
    }

    mutating func mapping() throws(SyntaxError) -> DocumentNode {
        let start = line
        try deeper()
        defer { depth -= 1 }
        index += 1
        var entries: [(key: String, value: DocumentNode, line: Int)] = []
        var keys = Set<String>()
        skipSpace()
        if index < chars.count, chars[index] == "}" { index += 1; return .mapping([], line: start) }
        while true {
            skipSpace()
            let keyLine = line
            let keyNode = try (index < chars.count && (chars[index] == "\"" || chars[index] == "'")) ? quoted() : plain(stopAtColon: true)
            guard case .scalar(let key, _, _) = keyNode, !key.isEmpty else { throw SyntaxError(line: keyLine, message: "expected a key in a {…} mapping") }
            skipSpace()
            guard index < chars.count, chars[index] == ":" else { throw SyntaxError(line: line, message: "expected ':' after key \"\(key)\"") }
            index += 1
            let v = try value()
            guard keys.insert(key).inserted else { throw SyntaxError(line: keyLine, message: "duplicate key \"\(key)\"") }
            entries.append((key, v, keyLine))
            skipSpace()
            guard index < chars.count else { throw SyntaxError(line: line, message: "a { mapping is not closed with }") }
            if chars[index] == "," { index += 1; skipSpace(); if index < chars.count, chars[index] == "}" { index += 1; break }; continue }
            if chars[index] == "}" { index += 1; break }
            throw SyntaxError(line: line, message: "expected ',' or '}' in a mapping, found '\(chars[index])'")
        }
        return .mapping(entries, line: start)
    }

    mutating func sequence() throws(SyntaxError) -> DocumentNode {
        let start = line
        try deeper()
        defer { depth -= 1 }
        index += 1
        var items: [DocumentNode] = []
        skipSpace()
        if index < chars.count, chars[index] == "]" { index += 1; return .sequence([], line: start) }
        while true {
            items.append(try value())
            skipSpace()
            guard index < chars.count else { throw SyntaxError(line: line, message: "a [ list is not closed with ]") }
            if chars[index] == "," { index += 1; skipSpace(); if index < chars.count, chars[index] == "]" { index += 1; break }; continue }
            if chars[index] == "]" { index += 1; break }
            throw SyntaxError(line: line, message: "expected ',' or ']' in a list, found '\(chars[index])'")
        }
        return .sequence(items, line: start)
    }

    mutating func quoted() throws(SyntaxError) -> DocumentNode {
        let start = line
        let q = chars[index]
        index += 1
        var out = ""
        while index < chars.count {
            let c = chars[index]
            if q == "'" && c == "'" {
                if index + 1 < chars.count, chars[index + 1] == "'" { out.append("'"); index += 2; continue }
                index += 1
                return .scalar(out, quoted: true, line: start)
            }
            if q == "\"" && c == "\"" { index += 1; return .scalar(out, quoted: true, line: start) }
            if q == "\"" && c == "\\" {
                index += 1
                guard index < chars.count else { break }
                switch chars[index] {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                case "0": out.append("\0")
                case "\"": out.append("\"")
                case "\\": out.append("\\")
                case "/": out.append("/")
                case "b": out.append("\u{08}")
                case "f": out.append("\u{0C}")
                case "u":
                    guard let v = hex4(at: index + 1) else { throw SyntaxError(line: start, message: "bad \\u escape: four hex digits must follow") }
                    index += 4
                    var code = v
                    if (0xD800...0xDBFF).contains(v) {
                        // A UTF-16 surrogate pair, as JSON writes characters past U+FFFF.
                        guard index + 2 < chars.count, chars[index + 1] == "\\", chars[index + 2] == "u",
                              let low = hex4(at: index + 3), (0xDC00...0xDFFF).contains(low) else {
                            throw SyntaxError(line: start, message: "bad \\u escape: a high surrogate must be followed by a low one")
                        }
                        code = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                        index += 6
                    }
                    guard let scalar = Unicode.Scalar(code) else { throw SyntaxError(line: start, message: "bad \\u escape: a lone surrogate") }
                    out.unicodeScalars.append(scalar)
                default: throw SyntaxError(line: start, message: "unknown escape \\\(chars[index])")
                }
                index += 1
                continue
            }
            out.append(c)
            index += 1
        }
        throw SyntaxError(line: start, message: "a quoted string is not closed")
    }

    /// Four hex digits at `i`, as a number.
    func hex4(at i: Int) -> UInt32? {
        guard i + 4 <= chars.count else { return nil }
        let s = String(chars[i..<i + 4])
        guard s.allSatisfy(\.isHexDigit) else { return nil }
        return UInt32(s, radix: 16)
    }

    /// Characters that cannot start a plain scalar (YAML's indicators; quotes and brackets
    /// start other nodes, `&`, `*`, `!`, `|`, `>` are handled before a plain scalar is read).
    static let indicators: Set<Character> = [",", "[", "]", "{", "}", "#", "&", "*", "!", "|", ">", "'", "\"", "%", "@", "`"]

    /// Whether `c` followed by `next` may start a plain scalar: not an indicator, and not `-`,
    /// `?` or `:` followed by white space (a list item, a complex key, a value).
    static func canStartPlain(_ c: Character, _ next: Character?) -> Bool {
        if indicators.contains(c) || c == "\t" { return false }
        if c == "-" || c == "?" || c == ":" { return !(next == nil || next == " " || next == "\t") }
        return true
    }

    mutating func plain(stopAtColon: Bool = false) throws(SyntaxError) -> DocumentNode {
        let start = line
        var out = ""
        if index < chars.count, !Self.canStartPlain(chars[index], index + 1 < chars.count ? chars[index + 1] : nil)
            || (inFlow && (chars[index] == ":" || chars[index] == "?")) {
            throw SyntaxError(line: start, message: "a value cannot start with '\(chars[index])' unless it is quoted")
        }
        while index < chars.count {
            let c = chars[index]
            // Brackets and commas end a plain scalar inside […] and {…}.
            if inFlow && (c == "," || c == "}" || c == "]" || c == "{" || c == "[") { break }
            if c == ":" {
                let next = index + 1 < chars.count ? chars[index + 1] : " "
                let ends = next == " " || next == "\t" || next == "," || next == "}" || next == "]"
                // `{a:b}` is one plain scalar `a:b` to YAML, not a key and a value.
                if (stopAtColon && (ends || !inFlow)) || (inFlow && ends) { break }
                // `a: b: c` is not a value with a colon in it: YAML refuses it, and so do we.
                if !inFlow && (next == " " || next == "\t") {
                    throw SyntaxError(line: start, message: "a value cannot contain ': ' unless it is quoted")
                }
            }
            out.append(c)
            index += 1
        }
        while out.last == " " { out.removeLast() }
        // ` #` would start a comment: a quote earlier on the line made it look like a string.
        if out.contains(" #") || out.contains("\t#") {
            throw SyntaxError(line: start, message: "a value cannot contain ' #' unless it is quoted")
        }
        if out.isEmpty || out == "~" || out == "null" { return out.isEmpty && stopAtColon ? .scalar("", quoted: false, line: start) : .null(line: start) }
        return .scalar(out, quoted: false, line: start)
    }
}
