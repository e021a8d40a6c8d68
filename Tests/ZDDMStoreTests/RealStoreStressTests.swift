import Foundation
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMSQLite
import ZDDMTesting

/// The seed for this run: `ZDDM_STRESS_SEED` replays a failure, otherwise a fresh random seed.
private func seed() -> UInt64 {
    if let text = ProcessInfo.processInfo.environment["ZDDM_STRESS_SEED"], let seed = UInt64(text) { return seed }
    return UInt64.random(in: 0...UInt64.max)
}

private func sqliteStore(_ directory: TemporaryDirectory) async throws -> SQLiteStore<String, String> {
    let database = try SQLiteDatabase.open(url: "sqlite:\(directory.file())")
    let store = try SQLiteStore<String, String>(database: database, table: "kv", codec: JSONValueCodec<String>())
    try await store.prepare()
    return store
}

private func configuration(
    seed: UInt64,
    failures: Bool
)
    -> MigrationStressTest<
        SQLiteStore<String, String>, SQLiteStore<String, String>
    >.Configuration
{
    var configuration = MigrationStressTest<SQLiteStore<String, String>, SQLiteStore<String, String>>.Configuration(
        seed: seed
    )
    configuration.tasks = 6
    configuration.operationsPerTask = 120
    configuration.maxDelay = .microseconds(500)
    if failures {
        configuration.newFailureRate = 0.3
        configuration.flipControls = true
    }
    return configuration
}

@Suite("Migration invariants with real stores", .serialized)
struct RealStoreStressTests {
    @Test("SQLite → SQLite, delays only: invariants 1-4", arguments: [false, true])
    func sqliteToSQLite(failures: Bool) async throws {
        let seed = seed()
        print("stress seed \(seed) (replay with ZDDM_STRESS_SEED=\(seed))")
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let report = try await MigrationStressTest(
            old: try await sqliteStore(directory),
            new: try await sqliteStore(directory),
            configuration: configuration(seed: seed, failures: failures),
            key: { "key-\($0)" },
            value: { "value-\($0)" }
        ).run()
        print(report)
        #expect(report.violations.isEmpty, "\(report.violations.prefix(5)) — ZDDM_STRESS_SEED=\(seed)")
        if failures { #expect(report.injectedNewFailures > 0) }
    }

    @Test(
        "SQLite → PostgreSQL: invariants 1-4, and 1-3 with 30% New failures and flips",
        .postgres,
        arguments: [
            false, true,
        ]
    )
    func sqliteToPostgres(failures: Bool) async throws {
        let seed = seed()
        print("stress seed \(seed) (replay with ZDDM_STRESS_SEED=\(seed))")
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("stress")
            let new = try PostgresStore<String, String>(
                database: database,
                table: table,
                codec: JSONValueCodec<String>()
            )
            try await new.prepare()
            var configuration = MigrationStressTest<SQLiteStore<String, String>, PostgresStore<String, String>>
                .Configuration(seed: seed)
            configuration.tasks = 6
            configuration.operationsPerTask = 120
            configuration.maxDelay = .microseconds(500)
            if failures {
                configuration.newFailureRate = 0.3
                configuration.flipControls = true
            }
            let report = try await MigrationStressTest(
                old: try await sqliteStore(directory),
                new: new,
                configuration: configuration,
                key: { "key-\($0)" },
                value: { "value-\($0)" }
            ).run()
            print(report)
            try await database.execute("DROP TABLE \"\(table)\"")
            #expect(report.violations.isEmpty, "\(report.violations.prefix(5)) — ZDDM_STRESS_SEED=\(seed)")
        }
    }
}
