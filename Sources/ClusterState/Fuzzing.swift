/// What the cluster-state fuzz targets (`Fuzz/run.sh command|snapshot`) and their corpus replay
/// run: a replicated command or a snapshot from anywhere never traps a replica.
public enum ClusterStateFuzzing {
    /// A state with a job in it, so commands that name one have something to act on.
    static let seeded: ClusterState = {
        var s = ClusterState()
        _ = s.apply(.registerJob(text: """
            id: web
            groups:
              - name: g
                count: 2
                tasks: [{name: t, driver: raw_exec, config: {command: /bin/true}}]
            """), index: 1)
        return s
    }()

    /// Decodes and applies the bytes as one command; what decodes re-encodes to the same
    /// command, and the state after it survives a snapshot and restore.
    public static func command(_ bytes: [UInt8]) {
        if case .command(let c) = Command.decode(bytes) {
            precondition(Command.decode(c.encode()) == .command(c), "command round trip")
        }
        var s = seeded
        // Only a command that changed the state can break its snapshot.
        guard case .applied = s.apply(bytes, index: 2) else { return }
        let snapshot = s.snapshot()
        guard let restored = try? ClusterState.restore(snapshot) else { preconditionFailure("a state's own snapshot does not restore") }
        precondition(restored.snapshot() == snapshot, "snapshot round trip")
    }

    /// Restores the bytes as a snapshot; one that restores snapshots back to the same bytes'
    /// meaning.
    public static func snapshot(_ bytes: [UInt8]) {
        guard let s = try? ClusterState.restore(bytes) else { return }
        let again = s.snapshot()
        guard let t = try? ClusterState.restore(again) else { preconditionFailure("a restored state's snapshot does not restore") }
        precondition(t.snapshot() == again, "snapshot round trip")
    }
}
