#if canImport(Glibc)
import Glibc
#endif

/// An idle agent's resident memory is mostly program code, not data: the kernel maps a block of
/// pages around each code page touched (fault-around), so starting up leaves most of the binary
/// and of Swift's libraries mapped — code an idle agent does not run again — while what the agent
/// itself allocated is a few MiB. `release()` drops this process's mappings of its executable
/// file pages; the pages stay in the page cache (shared with every other process that maps them),
/// and what runs next is mapped again on its first use. Only executable mappings of files are
/// touched: they are never written, so nothing is lost (the writable and relocated read-only data
/// are left alone).
enum CodePages {
    /// How long after start, then how often, an agent lets go of code it no longer runs.
    static let firstAfter: Duration = .seconds(15)
    static let every: Duration = .seconds(300)

    /// Bytes of executable file mappings advised; 0 if /proc/self/maps cannot be read.
    @discardableResult
    static func release() -> Int {
        guard let f = fopen("/proc/self/maps", "r") else { return 0 }
        defer { fclose(f) }
        var buffer = [CChar](repeating: 0, count: 4096)
        var total = 0
        while fgets(&buffer, Int32(buffer.count), f) != nil {
            let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            // start-end perms offset dev inode path
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[1] == "r-xp", fields[5].hasPrefix("/") else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16), hi > lo,
                  let start = UnsafeMutableRawPointer(bitPattern: lo) else { continue }
            if madvise(start, Int(hi - lo), MADV_DONTNEED) == 0 { total += Int(hi - lo) }
        }
        return total
    }
}
