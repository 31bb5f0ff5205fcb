import API
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
