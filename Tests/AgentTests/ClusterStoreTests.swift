import CaravanModel
import Access
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

    /// A snapshot file is restored only when what it holds is what the API would accept: a job
    /// that is not a valid job file (a count of -1 crashed the leader) or an allocation id that
    /// could name another directory is refused, naming it. A file without ACLs is never applied
    /// over a cluster that has them.
    @Test func aRestoreRefusesInvalidJobsPathIdsAndDroppingACLs() throws {
        func file(_ build: (inout ClusterState) -> Void) throws -> ClusterStore.Parts {
            var s = ClusterState()
            build(&s)
            return try ClusterStore.parts(ClusterStore.encode(state: s.snapshot(), variables: VariableStore.encodeSnapshot(([], [])),
                                                              sessions: ClientSessions().encode(), acl: ACLState().encode()))
        }
        let good = try JobFile.parse("id: web\ngroups:\n  - name: g\n    tasks: [{name: t, driver: raw_exec, config: {command: /bin/true}}]\n")
        var negative = good
        negative.groups[0].count = -1
        let ok = try file { s in _ = s.apply(.register(good), index: 1) }
        #expect(ClusterStore.refusal(ok) == nil)
        let bad = try file { s in _ = s.apply(.register(negative), index: 1) }
        #expect(ClusterStore.refusal(bad)?.contains("job default/web (version 0) is not a valid job") == true, "\(ClusterStore.refusal(bad) ?? "")")
        let escape = try file { s in
            _ = s.apply(.register(good), index: 1)
            _ = s.apply(.upsertNode(Node(id: "n1", address: "10.0.0.1", cpuMillicores: 1000, memoryMiB: 1024, diskMiB: 1000)), index: 1)
            _ = s.apply(.applyPlan(allocations: [Allocation(id: "../../victim", jobID: "web", jobVersion: 0, group: "g", name: "web.g[0]", nodeID: "n1",
                                                            cpuMillicores: 100, memoryMiB: 32, diskMiB: 300)], evaluations: []), index: 2)
        }
        #expect(ClusterStore.refusal(escape) == "allocation id \"../../victim\" is not one an allocation can have")
        #expect(!Allocation.isValidID("..") && !Allocation.isValidID("a/b") && Allocation.isValidID("0f3a9c2e-1b2c-4d5e-8f90-a1b2c3d4e5f6"))
        // Over a cluster with ACLs, a file without them is refused in the log itself.
        let store = ClusterStore()
        _ = store.apply(ACLCommand.bootstrap(Token(accessor: "acc", secretHash: Array(repeating: 7, count: 32), name: "boot", kind: .management, policies: [], createTime: 1)).encode(), index: 1)
        let answer = store.apply(ClusterStore.restore(ok, members: []), index: 2)
        #expect(ClientSessions.decodeRefusal(answer)?.code == "acl_not_in_snapshot")
        #expect(store.current.jobs.isEmpty && store.acl.bootstrapped)
    }

    /// A tagged write retried is applied once: the retry gets the first answer, a later write
    /// stays, and the memory of it survives a snapshot.
    @Test func aRetriedTaggedWriteIsAppliedOnceEvenAcrossASnapshot() throws {
        let store = ClusterStore()
        let first = ClientSessions.wrap(client: "1700000000000-cli", seq: 1, stamp: 1_700_000_000_000, VariableStore.put("app/x", "one"))
        let a1 = store.apply(first, index: 10)
        _ = store.apply(ClientSessions.wrap(client: "1700000000000-cli", seq: 2, stamp: 1_700_000_000_001, VariableStore.put("app/x", "two")), index: 11)
        // The first write, retried late (say after a timeout and a leader change): not applied again.
        let again = store.apply(first, index: 12)
        #expect(again == a1)
        #expect(try store.variables.query(VariableStore.get("app/x")) == VariableStore.encodeItems([("app/x", VariableStore.Item(value: "two", createIndex: 10, modifyIndex: 11))]))
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

    @Test func sessionsForgetOldAnswersAndClientsButNeverApplyAForgottenWriteAgain() throws {
        let t0: Int64 = 1_700_000_000_000
        var s = ClientSessions()
        s.advance(to: t0)
        let a = "\(t0)-a"
        for seq in 1...UInt64(ClientSessions.keptPerClient + 5) { s.record(client: a, seq: seq, answer: [UInt8(seq & 0xff)]) }
        #expect(s.outcome(client: a, seq: 5) == .refused("write_forgotten", "write \(a)/5 is older than the answers kept for its client: it may have been applied already and is not applied again"))
        #expect(s.outcome(client: a, seq: 6) == .duplicate([6]))
        #expect(s.outcome(client: a, seq: 1000) == .new)
        // Pushed out by newer clients: a late retry of a's is refused, not applied again.
        for i in 0..<ClientSessions.maxClients {
            s.advance(to: t0 + 1 + Int64(i))
            s.record(client: "\(t0 + 1 + Int64(i))-c\(i)", seq: 1, answer: [])
        }
        #expect(s.sessions.count == ClientSessions.maxClients && s.sessions[a] == nil)
        if case .refused(let code, _) = s.outcome(client: a, seq: 6) { #expect(code == "session_expired") } else { Issue.record("a's retry was not refused") }
        // A client created after the watermark is new; one from far in the future is refused.
        #expect(s.outcome(client: "\(t0 + 50_000)-new", seq: 1) == .new)
        if case .refused(let code, _) = s.outcome(client: "\(t0 + 10_000_000)-future", seq: 1) { #expect(code == "invalid_header") } else { Issue.record("future client accepted") }
        // Ten idle minutes expire a session the same way.
        var e = ClientSessions()
        e.advance(to: t0)
        e.record(client: "\(t0)-idle", seq: 1, answer: [7])
        e.advance(to: t0 + ClientSessions.expiry + 20_000)
        #expect(e.sessions.isEmpty)
        if case .refused(let code, _) = e.outcome(client: "\(t0)-idle", seq: 1) { #expect(code == "session_expired") } else { Issue.record("expired retry accepted") }
        #expect(ClientSessions.decode(s.encode()) == s)
        #expect(ClientSessions.decode(Array(s.encode().dropLast())) == nil)
        #expect(ClientSessions.parseHeader("1700000000000-cli-1/7")! == ("1700000000000-cli-1", 7))
        for bad in ["", "x", "/1", "1-a/0", "1-a/-1", "1-a b/1", "1-a/1/2", "abc-x/1", "1-/1", "1-" + String(repeating: "a", count: 63) + "/1", "1-é/1"] {
            #expect(ClientSessions.parseHeader(bad) == nil, "\(bad)")
        }
        // A tag inside a tag is refused.
        let inner = ClientSessions.wrap(client: "\(t0)-x", seq: 1, stamp: t0, [0x41])
        #expect(ClientSessions.unwrap(ClientSessions.wrap(client: "\(t0)-y", seq: 1, stamp: t0, inner)) == nil)
    }

    /// A string cut to a byte limit is cut between characters, so it always reads back (a task
    /// failure message cut inside a character made the node's status update undecodable).
    @Test func stringsCutToALimitStillReadBack() {
        for text in [String(repeating: "é", count: 300), String(repeating: "😀", count: 300), "a" + String(repeating: "日本", count: 200)] {
            for limit in [0, 1, 2, 3, 5, 255, 511] {
                var w = ByteWriter()
                w.string(text, max: limit)
                var r = ByteReader(w.bytes)
                let back = r.string(max: 1 << 20)
                #expect(back != nil && text.hasPrefix(back!) && back!.utf8.count <= limit, "\(limit)")
            }
        }
    }
}
