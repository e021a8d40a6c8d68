// swift-tools-version:6.1

import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "UserService",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "user-service", targets: ["UserServiceApp"]),
        .library(name: "UserService", targets: ["UserService"]),
    ],
    dependencies: [
        // The parent package, named explicitly: a path dependency's identity is otherwise its folder's name.
        .package(name: "zddm", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .target(
            name: "UserService",
            dependencies: [
                .product(name: "ZDDM", package: "zddm"),
                .product(name: "ZDDMSQL", package: "zddm"),
                .product(name: "ZDDMSQLite", package: "zddm"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "UserServiceApp",
            dependencies: [
                "UserService",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "UserServiceTests",
            dependencies: [
                "UserService",
                .product(name: "ZDDM", package: "zddm"),
                .product(name: "ZDDMSQL", package: "zddm"),
                .product(name: "ZDDMSQLite", package: "zddm"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
