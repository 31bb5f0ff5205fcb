import ClusterState
import Primitives
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

    /// A tagged write retried is applied once: the retry gets the first answer, a later write
    /// stays, and the memory of it survives a snapshot.
    @Test func aRetriedTaggedWriteIsAppliedOnceEvenAcrossASnapshot() throws {
        let store = ClusterStore()
        let first = ClientSessions.wrap(client: "cli-1", seq: 1, VariableStore.put("app/x", "one"))
        let a1 = store.apply(first, index: 10)
        _ = store.apply(ClientSessions.wrap(client: "cli-1", seq: 2, VariableStore.put("app/x", "two")), index: 11)
        // The first write, retried late (say after a timeout and a leader change): not applied again.
        let again = store.apply(first, index: 12)
        #expect(again == a1)
        #expect(try store.variables.query(VariableStore.get("app/x")) == VariableStore.encodeItems([("app/x", .init(value: "two", createIndex: 10, modifyIndex: 11))]))
        // The same after a restore from a snapshot.
        let copy = ClusterStore()
        try copy.restore(store.snapshot())
        #expect(copy.apply(first, index: 13) == a1)
        #expect(try copy.variables.query(VariableStore.get("app/x")) == store.variables.query(VariableStore.get("app/x")))
        // A snapshot written before tagged writes existed (two parts) still restores.
        var w = ByteWriter()
        w.blob(ClusterState().snapshot())
        w.blob(store.variables.snapshot())
        try ClusterStore().restore(w.bytes)
    }

    @Test func sessionsForgetOldAnswersAndClientsInAnOrderEveryReplicaAgreesOn() throws {
        var s = ClientSessions()
        for seq in 1...UInt64(ClientSessions.keptPerClient + 5) { s.record(client: "a", seq: seq, answer: [UInt8(seq & 0xff)], index: seq) }
        #expect(s.outcome(client: "a", seq: 1) == .forgotten)
        #expect(s.outcome(client: "a", seq: 5) == .forgotten)
        #expect(s.outcome(client: "a", seq: 6) == .duplicate([6]))
        #expect(s.outcome(client: "a", seq: 1000) == .new)
        #expect(s.outcome(client: "b", seq: 1) == .new)
        for i in 0..<ClientSessions.maxClients { s.record(client: "c\(i)", seq: 1, answer: [], index: 1000 + UInt64(i)) }
        // "a" wrote least recently: it went first.
        #expect(s.sessions.count == ClientSessions.maxClients)
        #expect(s.sessions["a"] == nil && s.sessions["c0"] != nil)
        #expect(ClientSessions.decode(s.encode()) == s)
        #expect(ClientSessions.decode(Array(s.encode().dropLast())) == nil)
        #expect(ClientSessions.parseHeader("cli-1/7")! == ("cli-1", 7))
        for bad in ["", "x", "/1", "a/0", "a/-1", "a b/1", "a/1/2", String(repeating: "a", count: 65) + "/1", "é/1"] {
            #expect(ClientSessions.parseHeader(bad) == nil, "\(bad)")
        }
    }
}
