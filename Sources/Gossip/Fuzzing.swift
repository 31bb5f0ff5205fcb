/// What the gossip fuzz targets (`Fuzz/run.sh packet|stream|sealed`) and their corpus replay in
/// the tests run: any bytes decode or are refused, and what decodes encodes back to the same.
public enum GossipFuzzing {
    public static func packet(_ bytes: [UInt8]) {
        if let ms = Codec.decodePacket(bytes) {
            precondition(Codec.decodePacket(Codec.encodePacket(ms)) == ms, "packet round trip")
        }
    }

    public static func stream(_ bytes: [UInt8]) {
        if let m = Codec.decodeStream(bytes) {
            precondition(Codec.decodeStream(Codec.encodeStream(m)) == m, "stream round trip")
        }
    }
}
