// swift-tools-version:6.1

import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "zddm",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ZDDM", targets: ["ZDDM"]),
        .library(name: "ZDDMTesting", targets: ["ZDDMTesting"]),
        .library(name: "ZDDMSQL", targets: ["ZDDMSQL"]),
        .library(name: "ZDDMSQLite", targets: ["ZDDMSQLite"]),
        .library(name: "ZDDMPostgres", targets: ["ZDDMPostgres"]),
        .library(name: "ZDDMControl", targets: ["ZDDMControl"]),
        .executable(name: "zddm", targets: ["zddm"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.3.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(
            url: "https://github.com/apple/swift-configuration.git",
            from: "1.4.0",
            traits: [.defaults, "Reloading"]
        ),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .target(
            name: "ZDDM",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ZDDMTesting",
            dependencies: ["ZDDM"],
            swiftSettings: strict
        ),
        .target(
            name: "ZDDMSQL",
            dependencies: ["ZDDM"],
            swiftSettings: strict
        ),
        .target(
            name: "ZDDMSQLite",
            dependencies: ["ZDDM", "ZDDMSQL", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict
        ),
        .target(
            name: "ZDDMPostgres",
            dependencies: [
                "ZDDM",
                "ZDDMSQL",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "ZDDMControl",
            dependencies: [
                "ZDDM",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The operator commands (backfill, verify, gate): no testing module in their graph. The only target that
        // bootstraps the metrics system (Prometheus) and serves it over HTTP.
        .target(
            name: "ZDDMCLI",
            dependencies: [
                "ZDDM",
                "ZDDMSQL",
                "ZDDMSQLite",
                "ZDDMPostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The demo and the hidden multi-process worker, built on ZDDMTesting's fault injection.
        .target(
            name: "ZDDMDemo",
            dependencies: [
                "ZDDM",
                "ZDDMSQL",
                "ZDDMSQLite",
                "ZDDMPostgres",
                "ZDDMCLI",
                "ZDDMControl",
                "ZDDMTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "zddm",
            dependencies: [
                "ZDDMCLI",
                "ZDDMDemo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZDDMTests",
            dependencies: [
                "ZDDM",
                "ZDDMTesting",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZDDMControlTests",
            dependencies: [
                "ZDDM",
                "ZDDMControl",
                "ZDDMTesting",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZDDMCLITests",
            dependencies: [
                "ZDDM", "ZDDMSQL", "ZDDMSQLite", "ZDDMPostgres", "ZDDMTesting", "ZDDMDemo", "ZDDMCLI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ZDDMStoreTests",
            dependencies: [
                "ZDDM",
                "ZDDMTesting",
                "ZDDMSQL",
                "ZDDMSQLite",
                "ZDDMPostgres",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
