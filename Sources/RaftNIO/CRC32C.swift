/// CRC-32C (Castagnoli), the checksum of every WAL record and snapshot file, computed
/// slicing-by-8 so checksumming stays well below the cost of the fsync it protects.
enum CRC32C {
    static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            t[0][i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 { t[k][i] = (t[k - 1][i] >> 8) ^ t[0][Int(t[k - 1][i] & 0xFF)] }
        }
        return t
    }()

    static func checksum(_ bytes: some Collection<UInt8>, seed: UInt32 = 0) -> UInt32 {
        var crc = ~seed
        let t = tables
        bytes.withContiguousStorageIfAvailable { buf in
            var i = 0
            let n = buf.count
            while i + 8 <= n {
                let lo = crc ^ (UInt32(buf[i]) | UInt32(buf[i + 1]) << 8 | UInt32(buf[i + 2]) << 16 | UInt32(buf[i + 3]) << 24)
                crc = t[7][Int(lo & 0xFF)] ^ t[6][Int((lo >> 8) & 0xFF)] ^ t[5][Int((lo >> 16) & 0xFF)] ^ t[4][Int(lo >> 24)]
                    ^ t[3][Int(buf[i + 4])] ^ t[2][Int(buf[i + 5])] ^ t[1][Int(buf[i + 6])] ^ t[0][Int(buf[i + 7])]
                i += 8
            }
            while i < n {
                crc = t[0][Int((crc ^ UInt32(buf[i])) & 0xFF)] ^ (crc >> 8)
                i += 1
            }
        } ?? {
            for b in bytes { crc = t[0][Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        }()
        return ~crc
    }
}
