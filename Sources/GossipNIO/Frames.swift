import Framing
import NIOCore

/// Kinds of TCP frames (first byte of the opened payload).
enum StreamKind: UInt8 {
    /// A gossip stream message (join, state exchange), encoded by `Gossip.Codec`.
    case gossip = 1
    /// A keyring query fanned out by an operator command.
    case keyringQuery = 2
    case keyringReply = 3
    /// A liveness ping over TCP, echoed back; used when UDP probes fail.
    case liveness = 4
}
