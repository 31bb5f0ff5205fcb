/// Membership updates waiting to be piggybacked, newest knowledge per member only.
///
/// Status changes (tier 0) always go before metadata-only changes (tier 1), so a death notice is
/// never crowded out by capacity updates; within a tier the least-sent go first, then the newest.
struct BroadcastQueue: Sendable {
    struct Item: Sendable {
        var message: Message
        var tier: Int
        var transmits: Int
        var order: UInt64
        var size: Int
    }

    private(set) var items: [String: Item] = [:]
    private var counter: UInt64 = 0

    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }

    /// Queues a message about its subject, replacing anything older queued about the same member.
    mutating func enqueue(_ message: Message, lowPriority: Bool = false) {
        guard let subject = message.subject else { return }
        counter += 1
        items[subject] = Item(message: message, tier: lowPriority ? 1 : 0, transmits: 0, order: counter,
                              size: Codec.size(of: message))
    }

    func queued(about name: String) -> Message? { items[name]?.message }

    /// Takes as many messages as fit in `budget` bytes; each is dropped after `limit` sends.
    mutating func take(budget: Int, limit: Int) -> [Message] {
        guard !items.isEmpty, budget > 0 else { return [] }
        let ordered = items.sorted { a, b in
            let x = a.value, y = b.value
            if x.tier != y.tier { return x.tier < y.tier }
            if x.transmits != y.transmits { return x.transmits < y.transmits }
            return x.order > y.order
        }
        var left = budget
        var out: [Message] = []
        for (key, item) in ordered {
            if left < 8 { break }
            guard item.size <= left else { continue }
            left -= item.size
            out.append(item.message)
            if item.transmits + 1 >= limit {
                items[key] = nil
            } else {
                items[key]!.transmits += 1
            }
        }
        return out
    }
}
