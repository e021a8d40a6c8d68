import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMTesting

@Suite("PostgreSQL stores pass the conformance suite", .postgres, .serialized)
struct PostgresConformanceTests {
    @Test("Key-value table, String keys, JSON values")
    func keyValueString() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            try await StoreConformanceSuite(
                makeStore: {
                    let store = try PostgresStore<String, String>(database: database, table: uniqueTableName("kvs"))
                    try await store.prepare()
                    return store
                },
                key: { "key-\($0)" },
                value: { "value-\($0)" },
                areInIncreasingOrder: utf8Order
            ).run()
        }
    }

    @Test("Key-value table, Int64 keys (negative ones too), raw byte values, custom column names")
    func keyValueInt64() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            try await StoreConformanceSuite(
                makeStore: {
                    let store = try PostgresStore<Int64, [UInt8]>(
                        database: database,
                        table: uniqueTableName("kvi"),
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
    }

    @Test("Key-value table, byte keys")
    func keyValueBytes() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            try await StoreConformanceSuite(
                makeStore: {
                    let store = try PostgresStore<KeyBytes, Int>(database: database, table: uniqueTableName("kvb"))
                    try await store.prepare()
                    return store
                },
                key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0xff]) },
                value: { $0 },
                areInIncreasingOrder: { $0 < $1 }
            ).run()
        }
    }

    @Test("Own table through a row mapping, String keys")
    func tableString() async throws {
        try await runTableConformance(keyType: "text", key: { "key-\($0)" }, areInIncreasingOrder: utf8Order)
    }

    @Test("Own table through a row mapping, Int64 keys (negative ones too)")
    func tableInt64() async throws {
        try await runTableConformance(keyType: "bigint", key: { Int64($0) - 50 }, areInIncreasingOrder: { $0 < $1 })
    }

    @Test("Own table through a row mapping, byte keys")
    func tableBytes() async throws {
        try await runTableConformance(
            keyType: "bytea",
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0x01]) },
            areInIncreasingOrder: { $0 < $1 }
        )
    }

    private func runTableConformance<Key: SQLKey>(
        keyType: String,
        key: @escaping @Sendable (Int) -> Key,
        areInIncreasingOrder: @escaping @Sendable (Key, Key) -> Bool
    ) async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            try await StoreConformanceSuite(
                makeStore: {
                    let table = uniqueTableName("notes")
                    try await database.execute(
                        "CREATE TABLE \"\(table)\" (id \(keyType) PRIMARY KEY, body text NOT NULL)"
                    )
                    let store = try PostgresTableStore<Key, String>(
                        database: database,
                        mapping: RowMapping(
                            table: table,
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
}
