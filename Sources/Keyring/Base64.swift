import CSodium

/// Standard base64 (with padding) through libsodium, so the module needs no Foundation.
public enum Base64 {
    public static func encode(_ bytes: [UInt8]) -> String {
        precondition(sodiumReady, "libsodium failed to initialise")
        let variant = Int32(sodium_base64_VARIANT_ORIGINAL)
        let len = sodium_base64_encoded_len(bytes.count, variant)
        var out = [CChar](repeating: 0, count: len)
        _ = out.withUnsafeMutableBufferPointer { o in
            bytes.withUnsafeBufferPointer { b in
                sodium_bin2base64(o.baseAddress!, len, b.baseAddress, b.count, variant)
            }
        }
        return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func decode(_ text: String) -> [UInt8]? {
        precondition(sodiumReady, "libsodium failed to initialise")
        let input = Array(text.utf8)
        guard !input.isEmpty else { return nil }
        var out = [UInt8](repeating: 0, count: input.count)
        var outLen = 0
        let rc = out.withUnsafeMutableBufferPointer { o in
            input.withUnsafeBufferPointer { i in
                i.withMemoryRebound(to: CChar.self) { ic in
                    sodium_base642bin(o.baseAddress!, o.count, ic.baseAddress!, ic.count, nil, &outLen, nil,
                                      Int32(sodium_base64_VARIANT_ORIGINAL))
                }
            }
        }
        guard rc == 0 else { return nil }
        return Array(out.prefix(outLen))
    }
}
