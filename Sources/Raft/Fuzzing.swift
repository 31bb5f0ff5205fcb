/// What the Raft fuzz target (`Fuzz/run.sh raft`) and its corpus replay run: any bytes decode
/// as a message or are refused (indexes and lengths bounded), and a message encodes back to
/// itself.
public enum RaftFuzzing {
    public static func message(_ bytes: [UInt8]) {
        if let m = RaftCodec.decodeMessage(bytes) {
            precondition(RaftCodec.decodeMessage(RaftCodec.encode(m)) == m, "message round trip")
        }
    }
}
