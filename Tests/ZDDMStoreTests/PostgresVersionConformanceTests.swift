import Foundation
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMTesting

@Suite("PostgreSQL stores with versions pass the conformance suite", .postgres, .serialized)
struct PostgresVersionConformanceTests {
    // MARK: New's role: a key-value table keeping the versions it is given

    @Test("Key-value table as New (fence), String keys")
    func fenceString() async throws {
        try await runFence(key: { "key-\($0)" }, areInIncreasingOrder: utf8Order)
    }

    @Test("Key-value table as New (fence), Int64 keys")
    func fenceInt64() async throws {
        try await runFence(key: { Int64($0) - 50 }, areInIncreasingOrder: { $0 < $1 })
    }

    @Test("Key-value table as New (fence), byte keys")
    func fenceBytes() async throws {
        try await runFence(
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0xff]) },
            areInIncreasingOrder: { $0 < $1 }
        )
    }

    // MARK: Old's role: change capture on a key-value table

    @Test("Key-value table as Old (change capture), String keys")
    func captureString() async throws {
        try await runCapture(key: { "key-\($0)" }, areInIncreasingOrder: utf8Order)
    }

    @Test("Key-value table as Old (change capture), Int64 keys")
    func captureInt64() async throws {
        try await runCapture(key: { Int64($0) - 50 }, areInIncreasingOrder: { $0 < $1 })
    }

    @Test("Key-value table as Old (change capture), byte keys")
    func captureBytes() async throws {
        try await runCapture(
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0x02]) },
            areInIncreasingOrder: { $0 < $1 }
        )
    }

    // MARK: Old's role: change capture on the user's own table

    @Test("Own table as Old (change capture), String keys")
    func tableCaptureString() async throws {
        try await runTableCapture(keyType: "text", key: { "key-\($0)" }, areInIncreasingOrder: utf8Order)
    }

    @Test("Own table as Old (change capture), Int64 keys")
    func tableCaptureInt64() async throws {
        try await runTableCapture(keyType: "bigint", key: { Int64($0) - 50 }, areInIncreasingOrder: { $0 < $1 })
    }

    @Test("Own table as Old (change capture), byte keys")
    func tableCaptureBytes() async throws {
        try await runTableCapture(
            keyType: "bytea",
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0x03]) },
            areInIncreasingOrder: { $0 < $1 }
        )
    }

    // MARK: New's role: the user's own table keeping the versions it is given

    @Test("Own table as New (fence), String keys")
    func tableFenceString() async throws {
        try await runTableFence(keyType: "text", key: { "key-\($0)" }, areInIncreasingOrder: utf8Order)
    }

    @Test("Own table as New (fence), Int64 keys")
    func tableFenceInt64() async throws {
        try await runTableFence(keyType: "bigint", key: { Int64($0) - 50 }, areInIncreasingOrder: { $0 < $1 })
    }

    @Test("Own table as New (fence), byte keys")
    func tableFenceBytes() async throws {
        try await runTableFence(
            keyType: "bytea",
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0x04]) },
            areInIncreasingOrder: { $0 < $1 }
        )
    }

    @Test("Own table as New: prepare adds the version column to both tables; checkSchema names it when missing")
    func tableFenceSchema() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("newschema")
            try await database.execute("CREATE TABLE \"\(table)\" (id bigint PRIMARY KEY, body text NOT NULL)")
            let store = try versionedTableStore(Int64.self, database: database, table: table)
            let missing = await #expect(throws: ZDDMError.self) { try await store.checkSchema() }
            #expect(missing?.code == .invalidArgument)
            try await store.prepare()
            try await store.prepare()  // idempotent
            try await store.checkSchema()
            #expect(try await store.writeIfNewer(7, .value("seven", version: 3)))
            #expect(try await store.readVersioned(7) == .value("seven", version: 3))
            #expect(store.capabilities.contains(.versions) && !store.capabilities.contains(.changeCapture))
            await #expect(throws: ZDDMError.self) { try await store.writeVersioned(8, "eight") }
            #expect(throws: ZDDMError.self) {
                try PostgresTableStore<Int64, String>(
                    database: database,
                    mapping: notesMapping(table),
                    changeCapture: ChangeCaptureSchema(table: table, keyColumn: "id"),
                    versionColumn: "zddm_version"
                )
            }
            #expect(throws: ZDDMError.self) {
                try PostgresTableStore<Int64, String>(
                    database: database,
                    mapping: notesMapping(table),
                    versionColumn: "body"
                )
            }
        }
    }

    // MARK: Fleet state

    @Test("PostgresFleetStateStore passes the fleet-state suite")
    func fleetState() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("fleet")
            try await FleetStateConformanceSuite(
                makeStore: {
                    let store = try PostgresFleetStateStore(database: database, table: table)
                    try await store.prepare()
                    return store
                },
                prefix: "run-\(UUID().uuidString.lowercased())"
            ).run()
        }
    }

    @Test("PostgresFleetStateStore in the default table, shared by two stores (two prefixes)")
    func fleetStateDefaultTable() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            for _ in 0..<2 {
                try await FleetStateConformanceSuite(
                    makeStore: {
                        let store = try PostgresFleetStateStore(database: database)
                        try await store.prepare()
                        return store
                    },
                    prefix: "run-\(UUID().uuidString.lowercased())"
                ).run()
            }
        }
    }

    @Test("PostgresFleetStateStore on a table an earlier version created: an error naming the fix, prepare() adds it")
    func fleetStateOlderTable() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("fleet_old")
            try await database.execute(
                """
                CREATE TABLE "\(table)" (migration text PRIMARY KEY, stage text NOT NULL DEFAULT 'off', \
                rate float8 NOT NULL DEFAULT 0, high_water float8 NOT NULL DEFAULT 0, \
                killswitch boolean NOT NULL DEFAULT false, behind bigint NOT NULL DEFAULT 0, \
                caught_up bigint NOT NULL DEFAULT 0, lease_holder text, lease_token bigint, \
                lease_expires timestamptz, last_token bigint NOT NULL DEFAULT 0)
                """
            )
            try await database.execute(
                "INSERT INTO \"\(table)\" (migration, stage, rate, high_water, behind, caught_up) "
                    + "VALUES ('m', 'live', 1, 1, 4, 4)"
            )
            let store = try PostgresFleetStateStore(database: database, table: table)
            do {
                _ = try await store.state(of: "m")
                Issue.record("a table without verified_behind must not read")
            } catch let error as ZDDMError {
                #expect(error.message.contains("prepare() adds it"), "\(error)")
            }
            try await store.prepare()
            try await store.prepare()
            var state = try await store.state(of: "m")
            #expect(state == FleetState(stage: .live, rate: 1, highWaterRate: 1, behind: 4, caughtUp: 4))
            state = try await store.recordCleanVerify("m", startedAt: 4)
            #expect(state.permitsRampdown)
            #expect(try await store.update("m", FleetControlChange(stage: .rampdown)).stage == .rampdown)
            try await database.execute("DROP TABLE \"\(table)\"")
        }
    }

    // MARK: Runners

    private func runFence<Key: SQLKey>(
        key: @escaping @Sendable (Int) -> Key,
        areInIncreasingOrder: @escaping @Sendable (Key, Key) -> Bool
    ) async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            try await StoreConformanceSuite(
                makeStore: {
                    let store = try PostgresStore<Key, String>(
                        database: database,
                        table: uniqueTableName("fence"),
                        versionColumn: "zddm_version"
                    )
                    try await store.prepare()
                    return store
                },
                key: key,
                value: { "value-\($0)" },
                areInIncreasingOrder: areInIncreasingOrder,
                versionRoles: [.fence]
            ).run()
        }
    }

    private func runCapture<Key: SQLKey>(
        key: @escaping @Sendable (Int) -> Key,
        areInIncreasingOrder: @escaping @Sendable (Key, Key) -> Bool
    ) async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            try await StoreConformanceSuite(
                makeStore: { try await capturedKeyValueStore(Key.self, database: database) },
                key: key,
                value: { "value-\($0)" },
                areInIncreasingOrder: areInIncreasingOrder,
                versionRoles: [.assigns]
            ).run()
        }
    }

    private func runTableFence<Key: SQLKey>(
        keyType: String,
        key: @escaping @Sendable (Int) -> Key,
        areInIncreasingOrder: @escaping @Sendable (Key, Key) -> Bool
    ) async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            try await StoreConformanceSuite(
                makeStore: {
                    let table = uniqueTableName("newtable")
                    try await database.execute(
                        "CREATE TABLE \"\(table)\" (id \(keyType) PRIMARY KEY, body text NOT NULL)"
                    )
                    let store = try versionedTableStore(Key.self, database: database, table: table)
                    try await store.prepare()
                    return store
                },
                key: key,
                value: { "note \($0)" },
                areInIncreasingOrder: areInIncreasingOrder,
                versionRoles: [.fence]
            ).run()
        }
    }

    private func runTableCapture<Key: SQLKey>(
        keyType: String,
        key: @escaping @Sendable (Int) -> Key,
        areInIncreasingOrder: @escaping @Sendable (Key, Key) -> Bool
    ) async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            try await StoreConformanceSuite(
                makeStore: {
                    try await capturedTableStore(Key.self, keyType: keyType, database: database)
                },
                key: key,
                value: { "note \($0)" },
                areInIncreasingOrder: areInIncreasingOrder,
                versionRoles: [.assigns]
            ).run()
        }
    }
}

/// A fresh key-value table with change capture installed, and a store playing Old over it.
func capturedKeyValueStore<Key: SQLKey>(
    _: Key.Type,
    database: PostgresDatabase,
    table: String = uniqueTableName("old")
) async throws -> PostgresStore<Key, String> {
    try await PostgresStore<Key, String>(database: database, table: table).prepare()
    let schema = try ChangeCaptureSchema(table: table, keyColumn: "key")
    try await PostgresChangeCapture(database: database, schema: schema).install()
    let store = try PostgresStore<Key, String>(database: database, table: table, changeCapture: schema)
    try await store.prepare()
    return store
}

/// A fresh user's table `(id, body)` with change capture installed, and a table store playing Old over it.
func capturedTableStore<Key: SQLKey>(
    _: Key.Type,
    keyType: String,
    database: PostgresDatabase,
    table: String = uniqueTableName("legacy")
) async throws -> PostgresTableStore<Key, String> {
    try await database.execute("CREATE TABLE \"\(table)\" (id \(keyType) PRIMARY KEY, body text NOT NULL)")
    let schema = try ChangeCaptureSchema(table: table, keyColumn: "id")
    try await PostgresChangeCapture(database: database, schema: schema).install()
    let store = try PostgresTableStore<Key, String>(
        database: database,
        mapping: RowMapping(
            table: table,
            keyColumn: "id",
            valueColumns: ["body"],
            encode: { ["body": .text($0)] },
            decode: { try $0.text("body") }
        ),
        changeCapture: schema
    )
    try await store.prepare()
    return store
}

/// The mapping of a user's table `(id, body)`.
func notesMapping(_ table: String) throws -> RowMapping<String> {
    try RowMapping(
        table: table,
        keyColumn: "id",
        valueColumns: ["body"],
        encode: { ["body": .text($0)] },
        decode: { try $0.text("body") }
    )
}

/// A table store playing New over a user's table `(id, body)`, with versions in `zddm_version`.
func versionedTableStore<Key: SQLKey>(
    _: Key.Type,
    database: PostgresDatabase,
    table: String
) throws -> PostgresTableStore<Key, String> {
    try PostgresTableStore<Key, String>(
        database: database,
        mapping: notesMapping(table),
        versionColumn: "zddm_version"
    )
}
