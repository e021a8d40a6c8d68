import Testing
import ZDDM
import ZDDMSQL
import ZDDMSQLite
import ZDDMTesting

@Suite("SQLite stores pass the conformance suite")
struct SQLiteConformanceTests {
    @Test("Key-value table, String keys, JSON values")
    func keyValueString() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try await StoreConformanceSuite(
            makeStore: {
                let store = try SQLiteStore<String, String>(
                    database: try SQLiteDatabase.open(url: "sqlite:" + directory.file()),
                    table: "kv"
                )
                try await store.prepare()
                return store
            },
            key: { "key-\($0)" },
            value: { "value-\($0)" },
            areInIncreasingOrder: utf8Order
        ).run()
    }

    @Test("Key-value table, Int64 keys (negative ones too), raw byte values, custom column names")
    func keyValueInt64() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try await StoreConformanceSuite(
            makeStore: {
                let store = try SQLiteStore<Int64, [UInt8]>(
                    database: try SQLiteDatabase.open(url: "sqlite://" + directory.file()),
                    table: "numbers",
                    keyColumn: "id",
                    valueColumn: "payload",
                    tombstoneColumn: "deleted",
                    codec: .rawBytes
                )
                try await store.prepare()
                return store
            },
            key: { Int64($0) - 50 },
            value: { Array("v\($0)".utf8) },
            areInIncreasingOrder: { $0 < $1 }
        ).run()
    }

    @Test("Key-value table, byte keys, in one in-memory database with a fresh table per store")
    func keyValueBytes() async throws {
        let database = try SQLiteDatabase.open(url: "sqlite::memory:")
        try await StoreConformanceSuite(
            makeStore: {
                let store = try SQLiteStore<KeyBytes, Int>(database: database, table: uniqueTableName("kb"))
                try await store.prepare()
                return store
            },
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0xff]) },
            value: { $0 },
            areInIncreasingOrder: { $0 < $1 }
        ).run()
    }

    @Test("Own table through a row mapping, String keys")
    func tableString() async throws {
        try await runTableConformance(keyType: "TEXT", key: { "key-\($0)" }, areInIncreasingOrder: utf8Order)
    }

    @Test("Own table through a row mapping, Int64 keys (negative ones too)")
    func tableInt64() async throws {
        try await runTableConformance(keyType: "INTEGER", key: { Int64($0) - 50 }, areInIncreasingOrder: { $0 < $1 })
    }

    @Test("Own table through a row mapping, byte keys")
    func tableBytes() async throws {
        try await runTableConformance(
            keyType: "BLOB",
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0x01]) },
            areInIncreasingOrder: { $0 < $1 }
        )
    }

    private func runTableConformance<Key: SQLKey>(
        keyType: String,
        key: @escaping @Sendable (Int) -> Key,
        areInIncreasingOrder: @escaping @Sendable (Key, Key) -> Bool
    ) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try await StoreConformanceSuite(
            makeStore: {
                let database = try SQLiteDatabase.open(url: "sqlite:" + directory.file())
                try await database.execute(
                    "CREATE TABLE notes (id \(keyType) PRIMARY KEY NOT NULL, body TEXT NOT NULL)"
                )
                let store = try SQLiteTableStore<Key, String>(
                    database: database,
                    mapping: RowMapping(
                        table: "notes",
                        keyColumn: "id",
                        valueColumns: ["body"],
                        encode: { ["body": .text($0)] },
                        decode: { try $0.text("body") }
                    )
                )
                try await store.prepare()
                return store
            },
            key: key,
            value: { "note \($0)" },
            areInIncreasingOrder: areInIncreasingOrder
        ).run()
    }
}
