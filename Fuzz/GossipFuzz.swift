// libFuzzer entry point for the gossip decoders and the sealed-frame opener.
// Built by Fuzz/run.sh together with the Gossip (and Keyring) sources; not part of the package.

#if FUZZ_SEALED
let ring = Keyring(primary: SecretKey(bytes: Array(repeating: 7, count: 32)))
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    #if FUZZ_SEALED
    if case .success(let payload) = ring.open(bytes) {
        _ = Codec.decodePacket(payload)
    }
    #elseif FUZZ_STREAM
    if let m = Codec.decodeStream(bytes) {
        // What decodes must encode back to the same message.
        precondition(Codec.decodeStream(Codec.encodeStream(m)) == m, "stream round trip")
    }
    #else
    if let ms = Codec.decodePacket(bytes) {
        precondition(Codec.decodePacket(Codec.encodePacket(ms)) == ms, "packet round trip")
    }
    #endif
    return 0
}
