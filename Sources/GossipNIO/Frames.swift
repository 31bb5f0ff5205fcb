import NIOCore

/// Splits a TCP byte stream into length-prefixed frames (4-byte big-endian length).
///
/// A length above `maxFrame` closes the connection: a peer cannot make us buffer without bound.
final class LengthPrefixedFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maxFrame: Int

    init(maxFrame: Int) { self.maxFrame = maxFrame }

    struct FrameTooLarge: Error { let length: Int }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= maxFrame else { throw FrameTooLarge(length: Int(length)) }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

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

extension ByteBuffer {
    mutating func writeFrame(_ payload: [UInt8]) {
        writeInteger(UInt32(payload.count))
        writeBytes(payload)
    }
}
