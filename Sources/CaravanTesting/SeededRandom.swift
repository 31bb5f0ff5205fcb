/// A deterministic random source for simulations: the same seed gives the same run.
///
/// SplitMix64: tiny, fast and good enough to drive network faults in tests. Print the seed when a
/// check fails so the run can be repeated exactly.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    public let seed: UInt64
    private var state: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        self.state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// True with the given probability (0...1).
    public mutating func chance(_ probability: Double) -> Bool {
        guard probability > 0 else { return false }
        return Double.random(in: 0..<1, using: &self) < probability
    }

    /// A fresh seed derived from this source, for handing to a node under test.
    public mutating func derive() -> UInt64 { next() }
}
