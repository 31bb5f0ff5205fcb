import NIOCore

/// Splits a TCP byte stream into length-prefixed frames (4-byte big-endian length).
///
/// A length above `maxFrame` closes the connection: a peer cannot make us buffer without bound.
/// The limit may start small and be raised (on the channel's loop) once the peer has proved who
/// it is, so an unauthenticated connection never makes us buffer more than a little.
public final class LengthPrefixedFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer
    public var maxFrame: Int

    public init(maxFrame: Int) { self.maxFrame = maxFrame }

    public struct FrameTooLarge: Error { public let length: Int }

    public func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= maxFrame else { throw FrameTooLarge(length: Int(length)) }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

extension ByteBuffer {
    public mutating func writeFrame(_ payload: [UInt8]) {
        writeInteger(UInt32(payload.count))
        writeBytes(payload)
    }
}

/// Open connections per remote address and in all, each capped: `admit` counts a new one in,
/// or says no when either cap is reached; `leave` counts one out. Not synchronised: the owner
/// keeps it on one event loop or behind a lock.
public struct ConnectionCounts: Sendable {
    public let maxPerAddress: Int
    public let maxTotal: Int
    private var open: [String: Int] = [:]
    public private(set) var total = 0

    public init(maxPerAddress: Int, maxTotal: Int) {
        self.maxPerAddress = maxPerAddress
        self.maxTotal = maxTotal
    }

    public mutating func admit(_ address: String) -> Bool {
        guard open[address, default: 0] < maxPerAddress, total < maxTotal else { return false }
        open[address, default: 0] += 1
        total += 1
        return true
    }

    public mutating func leave(_ address: String) {
        guard let n = open[address] else { return }
        open[address] = n > 1 ? n - 1 : nil
        total -= 1
    }
}
