import API
import Executor
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Reads this machine's capacity from /proc and the data directory's file system.
public enum HostFingerprint {
    public static func capacity(dataDir: String) -> CapacityView {
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        var mhz = 0
        if let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) {
            for line in cpuinfo.split(separator: "\n") where line.hasPrefix("cpu MHz") {
                if let v = line.split(separator: ":").last.flatMap({ Double(String($0.filter { !$0.isWhitespace })) }) {
                    mhz = max(mhz, Int(v))
                }
            }
        }
        let memoryMiB = Int(ProcessInfo.processInfo.physicalMemory / (1 << 20))
        var diskMiB = 0
        var st = statvfs()
        if statvfs(dataDir, &st) == 0 {
            diskMiB = Int(UInt64(st.f_bavail) * UInt64(st.f_frsize) / (1 << 20))
        }
        return CapacityView(cpuCores: cores, cpuMHz: mhz, cpuMillicores: cores * 1000, memoryMiB: memoryMiB, diskMiB: diskMiB)
    }
}

extension HostFingerprint {
    /// Host attributes for constraints: kernel, architecture, OS and cgroup version.
    public static func attributes(cgroup: String) -> [String: String] {
        var u = utsname()
        uname(&u)
        func field<T>(_ v: T) -> String {
            withUnsafeBytes(of: v) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        var attrs = ["kernel.name": field(u.sysname).lowercased(), "kernel.version": field(u.release).split(separator: "-").first.map(String.init) ?? "",
                     "cpu.arch": HostPlatform.architecture, "cgroup.version": cgroup]
        if let os = try? String(contentsOfFile: "/etc/os-release", encoding: .utf8) {
            for line in os.split(separator: "\n") {
                let kv = line.split(separator: "=", maxSplits: 1)
                guard kv.count == 2 else { continue }
                let v = String(kv[1].filter { $0 != "\"" })
                if kv[0] == "ID" { attrs["os.name"] = v }
                if kv[0] == "VERSION_ID" { attrs["os.version"] = v }
            }
        }
        return attrs
    }
}
