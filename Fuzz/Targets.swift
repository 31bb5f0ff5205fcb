// libFuzzer entry point for every decoder that takes bytes from outside the agent. Fuzz/run.sh
// compiles this file once per target with -D FUZZ_<TARGET>, against the package's own modules
// built with coverage instrumentation; each target calls the same check the unit tests use to
// replay Fuzz/corpus/<target>/ (so a crasher kept there fails `swift test` until it is fixed).

#if FUZZ_PACKET || FUZZ_STREAM || FUZZ_SEALED
import Gossip
#endif
#if FUZZ_SEALED
import Keyring
let ring = Keyring(primary: try! SecretKey(base64: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="))
#endif
#if FUZZ_RAFT
import Raft
#endif
#if FUZZ_COMMAND || FUZZ_SNAPSHOT
import ClusterState
#endif
#if FUZZ_JOBFILE || FUZZ_UNITS
import CaravanModel
#endif
#if FUZZ_EXECFRAME
import API
#endif
#if FUZZ_LAYER || FUZZ_MANIFEST
import Executor
#if canImport(Glibc)
import Glibc
#endif
let scratch: String = {
    let dir = "/tmp/caravan-fuzz-layer-\(getpid())"
    mkdir(dir, 0o700)
    return dir
}()
#endif

func check(_ bytes: [UInt8]) {
    #if FUZZ_PACKET
    GossipFuzzing.packet(bytes)
    #elseif FUZZ_STREAM
    GossipFuzzing.stream(bytes)
    #elseif FUZZ_SEALED
    if case .success(let payload) = ring.open(bytes) { GossipFuzzing.packet(payload) }
    #elseif FUZZ_RAFT
    RaftFuzzing.message(bytes)
    #elseif FUZZ_COMMAND
    ClusterStateFuzzing.command(bytes)
    #elseif FUZZ_SNAPSHOT
    ClusterStateFuzzing.snapshot(bytes)
    #elseif FUZZ_JOBFILE
    JobFileFuzzing.jobFile(bytes)
    #elseif FUZZ_UNITS
    JobFileFuzzing.units(bytes)
    #elseif FUZZ_EXECFRAME
    ExecFrame.fuzzCheck(bytes)
    #elseif FUZZ_LAYER
    ImageFuzzing.layer(bytes, scratch: scratch)
    #elseif FUZZ_MANIFEST
    ImageFuzzing.manifest(bytes)
    #endif
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    check(Array(UnsafeRawBufferPointer(start: start, count: count)))
    return 0
}
