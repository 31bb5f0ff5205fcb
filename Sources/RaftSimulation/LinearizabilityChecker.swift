/// Checks a history of register operations for linearizability (Wing & Gong's search with
/// Lowe's memoisation, as Porcupine does), one key at a time: a history is linearizable when
/// every key's sub-history is.
///
/// Each operation has a call time and either a return time or none (the client never heard
/// back: the operation may or may not have taken effect, at any time after its call). Reads
/// that never returned are dropped; they change nothing.
public enum LinearizabilityChecker {
    public struct Op: Sendable {
        public enum Kind: Sendable, Equatable { case write(String), read(String?) }
        public var kind: Kind
        public var call: Duration
        public var ret: Duration?
        public init(kind: Kind, call: Duration, ret: Duration?) {
            self.kind = kind
            self.call = call
            self.ret = ret
        }
    }

    /// Nil when linearizable; otherwise the key whose history is not.
    public static func check(_ history: [RaftSimulator.Operation]) -> String? {
        var byKey: [String: [Op]] = [:]
        for o in history where !o.failed {
            switch o.kind {
            case .write(let k, let v): byKey[k, default: []].append(Op(kind: .write(v), call: o.call, ret: o.ret))
            case .read(let k):
                guard let r = o.ret else { continue }
                byKey[k, default: []].append(Op(kind: .read(o.readValue), call: o.call, ret: r))
            }
        }
        for (k, ops) in byKey.sorted(by: { $0.key < $1.key }) where !isLinearizable(ops) { return k }
        return nil
    }

    private struct Key: Hashable { var done: [UInt64]; var state: String? }

    /// Whether one register's history has a legal sequential order that respects real time.
    public static func isLinearizable(_ ops: [Op]) -> Bool {
        let ops = ops.sorted { $0.call < $1.call }
        let words = (ops.count + 63) / 64
        var seen = Set<Key>()
        var done = [UInt64](repeating: 0, count: words)
        var remaining = ops.count

        func isDone(_ i: Int) -> Bool { done[i / 64] & (1 << UInt64(i % 64)) != 0 }
        func flip(_ i: Int) { done[i / 64] ^= 1 << UInt64(i % 64) }

        func search(_ state: String?) -> Bool {
            if remaining == 0 { return true }
            // Only an operation called before every pending one returned can go next.
            var minRet: Duration? = nil
            for i in ops.indices where !isDone(i) {
                if let r = ops[i].ret, minRet == nil || r < minRet! { minRet = r }
            }
            for i in ops.indices where !isDone(i) {
                if let m = minRet, ops[i].call > m { break }
                let next: String?
                switch ops[i].kind {
                case .write(let v): next = v
                case .read(let v):
                    guard v == state else { continue }
                    next = state
                }
                flip(i); remaining -= 1
                if seen.insert(Key(done: done, state: next)).inserted, search(next) { return true }
                flip(i); remaining += 1
            }
            return false
        }
        return search(nil)
    }
}
