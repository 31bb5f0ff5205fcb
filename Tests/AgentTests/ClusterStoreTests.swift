import Testing
@testable import Agent

/// The state machine behind Raft: a snapshot brings back everything, and a snapshot that can't
/// be read is an error (the member stops), never a silently empty state.
@Suite struct ClusterStoreTests {
    @Test func aSnapshotRestoresVariablesAndADamagedOneIsRefused() throws {
        let store = ClusterStore()
        for i in 0..<50 {
            _ = store.apply(VariableStore.put("app/k\(i)", "v\(i)"), index: UInt64(i + 1))
        }
        let snap = store.snapshot()
        let copy = ClusterStore()
        try copy.restore(snap)
        #expect(copy.snapshot() == snap)
        #expect(throws: (any Error).self) { try ClusterStore().restore(Array(snap.dropLast(3))) }
        #expect(throws: (any Error).self) { try ClusterStore().restore([1, 2, 3]) }
        // A refused restore leaves the state it had untouched.
        #expect(throws: (any Error).self) { try copy.restore(snap + [0]) }
        #expect(copy.snapshot() == snap)
    }
}
