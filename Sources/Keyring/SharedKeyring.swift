import Synchronization

/// The cluster keyring as several shells see it: gossip owns rotations and publishes each new
/// ring here; the Raft transport reads the current one for every frame it seals or opens.
public final class SharedKeyring: Sendable {
    private let ring: Mutex<Keyring>

    public init(_ keyring: Keyring) { ring = Mutex(keyring) }

    public var current: Keyring {
        get { ring.withLock { $0 } }
        set { ring.withLock { $0 = newValue } }
    }
}
