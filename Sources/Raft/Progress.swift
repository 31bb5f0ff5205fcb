/// What a leader knows about one follower's log (etcd's Progress).
struct Progress: Sendable {
    enum State: Sendable { case probe, replicate, snapshot }

    var match: LogIndex = 0
    var next: LogIndex
    var state: State = .probe
    /// In probe state, one append is outstanding until a response or the next heartbeat.
    var probeSent = false
    /// Last index and bytes of each append in flight, oldest first (replicate state).
    var inflight: [(last: LogIndex, bytes: Int)] = []
    var inflightBytes = 0
    /// The leader's tick when this follower last answered.
    var lastHeard = 0
    /// The snapshot index being installed (snapshot state).
    var pendingSnapshot: LogIndex = 0
    /// The commit index last told to this follower.
    var sentCommit: LogIndex = 0

    init(next: LogIndex) { self.next = next }

    mutating func becomeProbe() {
        if state == .snapshot {
            next = max(match + 1, pendingSnapshot + 1)
            pendingSnapshot = 0
        } else {
            next = match + 1
        }
        state = .probe
        probeSent = false
        clearInflight()
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        clearInflight()
    }

    mutating func becomeSnapshot(_ index: LogIndex) {
        state = .snapshot
        pendingSnapshot = index
        clearInflight()
    }

    mutating func clearInflight() {
        inflight.removeAll(keepingCapacity: true)
        inflightBytes = 0
    }

    /// Records an acknowledgement up to `index`; false if it tells nothing new.
    mutating func update(_ index: LogIndex) -> Bool {
        var advanced = false
        if index > match {
            match = index
            advanced = true
            probeSent = false
        }
        next = max(next, index + 1)
        while let first = inflight.first, first.last <= index {
            inflightBytes -= first.bytes
            inflight.removeFirst()
        }
        return advanced
    }

    func isPaused(_ s: RaftSettings) -> Bool {
        switch state {
        case .probe: probeSent
        case .replicate: inflight.count >= s.maxInflightMessages || inflightBytes >= s.maxInflightBytes
        case .snapshot: true
        }
    }
}
