// swift-tools-version:6.2
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "caravan",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "caravan", targets: ["caravan"]),
        .executable(name: "caravan-bench", targets: ["caravan-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // Without its Foundation-based traits Hummingbird needs only FoundationEssentials, which keeps
        // ICU and the full Foundation out of the agent's memory.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
    ],
    targets: [
        // System libraries (Debian: libsodium-dev, libuv1-dev).
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // Pure cores: no sockets, no clocks, no files.
        .target(name: "CaravanModel", swiftSettings: strict),
        .target(name: "Primitives", swiftSettings: strict),
        .target(name: "Gossip", dependencies: ["Primitives"], swiftSettings: strict),
        .target(name: "Raft", dependencies: ["Primitives"], swiftSettings: strict),
        .target(name: "ClusterState", dependencies: [
            "CaravanModel", "Primitives", .product(name: "HashTreeCollections", package: "swift-collections"),
        ], swiftSettings: strict),
        .target(name: "Scheduler", dependencies: ["CaravanModel", .product(name: "HeapModule", package: "swift-collections")], swiftSettings: strict),
        .target(name: "Access", dependencies: ["Primitives"], swiftSettings: strict),

        // Sealing.
        .target(name: "Keyring", dependencies: ["CSodium"], swiftSettings: strict),

        // Shells.
        .target(name: "Framing", dependencies: [.product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        .target(name: "GossipNIO", dependencies: [
            "Gossip", "Keyring", "Framing",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "RaftNIO", dependencies: [
            "Raft", "Keyring", "Primitives", "Framing",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "Executor", dependencies: [
            "CaravanModel", "CUV", "CSodium", "CZlib",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ], swiftSettings: strict),
        .target(name: "API", dependencies: [
            "CaravanModel",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ], swiftSettings: strict),
        // The leader's decisions: no clock, no random ids, no I/O (a shell gives it those).
        .target(name: "LeaderCore", dependencies: ["CaravanModel", "ClusterState", "Scheduler",
                                                  .product(name: "HashTreeCollections", package: "swift-collections")]),
        .target(name: "Agent", dependencies: [
            "CaravanModel", "ClusterState", "Scheduler", "LeaderCore", "Access", "Keyring", "Primitives", "Framing", "Gossip", "GossipNIO", "Raft", "RaftNIO", "API", "Executor",
            .product(name: "HashTreeCollections", package: "swift-collections"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),
        .executableTarget(name: "caravan", dependencies: [
            "Agent", "API", "Keyring", "CaravanModel", "ClusterState", "LeaderCore", "CUV", "Executor",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .executableTarget(name: "caravan-bench", dependencies: [
            "Gossip", "GossipSimulation", "Raft", "RaftNIO", "RaftSimulation", "CaravanTesting", "API", "Keyring",
            "CaravanModel", "Scheduler", "ClusterState", "LeaderCore", "Agent", "Executor",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], swiftSettings: strict),

        // Test support.
        .target(name: "CaravanTesting", dependencies: ["CaravanModel"], swiftSettings: strict),
        .target(name: "GossipSimulation", dependencies: ["Gossip", "CaravanTesting"], swiftSettings: strict),
        .target(name: "RaftSimulation", dependencies: ["Raft", "CaravanTesting"], swiftSettings: strict),

        .testTarget(name: "CaravanTestingTests", dependencies: ["CaravanTesting"]),
        .testTarget(name: "CaravanModelTests", dependencies: ["CaravanModel", "CaravanTesting"]),
        .testTarget(name: "ExecutorTests", dependencies: ["Executor", "CaravanModel", "CaravanTesting",
            .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HTTPTypes", package: "swift-http-types")]),
        .testTarget(name: "SchedulerTests", dependencies: ["Scheduler", "LeaderCore", "CaravanModel", "ClusterState", "CaravanTesting",
            .product(name: "PropertyBased", package: "swift-property-based")]),
        .testTarget(name: "ClusterStateTests", dependencies: ["ClusterState", "LeaderCore", "Primitives", "CaravanModel", "CaravanTesting",
            .product(name: "PropertyBased", package: "swift-property-based")], exclude: ["Fixtures"]),
        .testTarget(name: "AccessTests", dependencies: ["Access", "Primitives"]),
        .testTarget(name: "KeyringTests", dependencies: ["Keyring",
            .product(name: "PropertyBased", package: "swift-property-based")]),
        .testTarget(name: "GossipTests", dependencies: ["Gossip", "CaravanTesting", "GossipSimulation",
            .product(name: "PropertyBased", package: "swift-property-based")]),
        .testTarget(name: "RaftTests", dependencies: ["Raft", "CaravanTesting", "RaftSimulation",
            .product(name: "PropertyBased", package: "swift-property-based")]),
        .testTarget(name: "RaftNIOTests", dependencies: ["RaftNIO", "Raft", "Keyring", "Primitives", "Framing"]),
        .testTarget(name: "GossipNIOTests", dependencies: ["GossipNIO", "Gossip", "Keyring",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio")]),
        .testTarget(name: "AgentTests", dependencies: ["Agent", "API", "Access", "Keyring", "Raft", "Scheduler", "LeaderCore", "ClusterState", "CaravanModel", "CaravanTesting", .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird")]),
        .testTarget(name: "EndToEndTests", dependencies: ["API", "Keyring", "CaravanTesting"]),
    ]
)
