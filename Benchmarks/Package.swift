// swift-tools-version:6.1

import PackageDescription

// Benchmarks live in their own package so the main package's tests never build them.
// Run (from this folder):
//   ../.ci/with-postgres swift package benchmark --target ProxyBenchmarks --no-progress
//   ../.ci/with-postgres ./run-backfill-bench.sh          (backfill vs COPY vs row by row, peak memory)
//   ./run-hot-path-bench.sh                                (proxy vs store vs the original, in-memory, mallocs)
let package = Package(
    name: "zddm-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "zddm", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.3.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/ordo-one/malloc-interposer.git", from: "1.6.1"),
    ],
    targets: [
        .executableTarget(
            name: "ProxyBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ZDDM", package: "zddm"),
                .product(name: "ZDDMTesting", package: "zddm"),
                .product(name: "ZDDMSQL", package: "zddm"),
                .product(name: "ZDDMSQLite", package: "zddm"),
                .product(name: "ZDDMPostgres", package: "zddm"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Benchmarks/ProxyBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "BackfillBench",
            dependencies: [
                .product(name: "ZDDM", package: "zddm"),
                .product(name: "ZDDMSQL", package: "zddm"),
                .product(name: "ZDDMSQLite", package: "zddm"),
                .product(name: "ZDDMPostgres", package: "zddm"),
                .product(name: "ZDDMTesting", package: "zddm"),
            ],
            path: "Sources/BackfillBench"
        ),
        .executableTarget(
            name: "WriteCostBench",
            dependencies: [
                .product(name: "ZDDM", package: "zddm"),
                .product(name: "ZDDMSQL", package: "zddm"),
                .product(name: "ZDDMSQLite", package: "zddm"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Sources/WriteCostBench"
        ),
        .executableTarget(
            name: "HotPathBench",
            dependencies: [
                .product(name: "ZDDM", package: "zddm"),
                .product(name: "ZDDMTesting", package: "zddm"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ],
            path: "Sources/HotPathBench"
        ),
    ],
    swiftLanguageModes: [.v6]
)
