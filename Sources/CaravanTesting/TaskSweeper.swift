#if canImport(Glibc)
import Glibc

/// Tasks outlive their agents by design; a test cluster or a benchmark takes its own with it:
/// every process whose working directory is under `root` (raw_exec tasks, runc), every
/// container runc recorded there (`…/runc/<id>/state.json`), and the overlays mounted there.
public enum TaskSweeper {
    public static func killTasks(under root: String) {
        for entry in listDirectory("/proc") {
            guard let pid = Int32(entry), let cwd = readLink("/proc/\(entry)/cwd"), cwd.hasPrefix(root) else { continue }
            kill(pid, SIGKILL)
        }
        for state in find(root, depth: 6) where state.hasSuffix("/state.json") && state.contains("/runc/") {
            guard let text = read(state), let pid = number(after: "\"init_process_pid\":", in: text).flatMap(Int32.init) else { continue }
            // Only if that pid is still the container's init (pids are reused, and quickly so
            // when pid_max is small): runc records the init's start time.
            guard let started = number(after: "\"init_process_start\":", in: text), started == startTime(pid) else { continue }
            kill(pid, SIGKILL)
        }
        // The containers' overlay mounts go too (lazily: a dying process may still hold one).
        for line in (read("/proc/self/mounts") ?? "").split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 1, fields[1].hasPrefix(root + "/") else { continue }
            umount2(String(fields[1]), Int32(MNT_DETACH))
        }
    }

    static func number(after key: String, in text: String) -> String? {
        guard let r = text.firstRange(of: key) else { return nil }
        let digits = String(text[r.upperBound...].prefix { $0.isNumber })
        return digits.isEmpty ? nil : digits
    }

    /// Field 22 of /proc/PID/stat (start time in clock ticks).
    static func startTime(_ pid: Int32) -> String? {
        guard let text = read("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? String(fields[19]) : nil
    }

    static func listDirectory(_ path: String) -> [String] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func readLink(_ path: String) -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buf, buf.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func find(_ root: String, depth: Int) -> [String] {
        guard depth > 0 else { return [] }
        var out: [String] = []
        for name in listDirectory(root) {
            let p = root + "/" + name
            if isDirectory(p) { out += find(p, depth: depth - 1) } else { out.append(p) }
        }
        return out
    }

    static func read(_ path: String) -> String? { readBytes(path).map { String(decoding: $0, as: UTF8.self) } }

    static func readBytes(_ path: String) -> [UInt8]? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            bytes += buf.prefix(n)
            if bytes.count > 1 << 20 { break }
        }
        return bytes
    }
}

/// The inputs the fuzzer keeps for a target (`Fuzz/corpus/<target>/`: seeds, inputs that reached
/// new code, crashers): each test suite replays its targets' corpora through the same check the
/// fuzz target runs, so a kept crasher fails `swift test` until it is fixed.
public enum FuzzCorpus {
    public static func inputs(_ target: String, from file: String = #filePath) -> [(name: String, bytes: [UInt8])] {
        var dir = file
        while let slash = dir.lastIndex(of: "/"), dir != "/" {
            dir = String(dir[..<slash])
            let corpus = (dir.isEmpty ? "" : dir) + "/Fuzz/corpus/" + target
            if TaskSweeper.isDirectory(corpus) {
                return TaskSweeper.listDirectory(corpus).sorted().compactMap { name in TaskSweeper.readBytes(corpus + "/" + name).map { (name, $0) } }
            }
        }
        return []
    }
}
#endif
