import Foundation
import ZDDM
import ZDDMPostgres
import ZDDMSQL

/// Registers the PostgreSQL pair when POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD and
/// POSTGRES_DB are set (each store a fresh table in that database).
func registerPostgres() {
    let environment = ProcessInfo.processInfo.environment
    guard let host = environment["POSTGRES_HOST"], let port = environment["POSTGRES_PORT"],
        let user = environment["POSTGRES_USER"], let password = environment["POSTGRES_PASSWORD"],
        let database = environment["POSTGRES_DB"]
    else {
        print(
            "PostgreSQL benchmarks skipped: set POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB"
        )
        return
    }
    let url = "postgres://\(user):\(password)@\(host):\(port)/\(database)?sslmode=disable"
    @Sendable func store(_ role: String) async throws -> PostgresStore<Int64, [UInt8]> {
        let connection = try await PostgresDatabase.connect(url: url)
        let table = "bench_\(role)_\(UUID().uuidString.prefix(8).lowercased())"
        let store = try PostgresStore<Int64, [UInt8]>(database: connection, table: table, codec: RawBytesValueCodec())
        try await store.prepare()
        return store
    }
    register("postgres", makeOld: { try await store("old") }, makeNew: { try await store("new") })

    // The same with versions: Old's table with change capture (its triggers version every change and record it),
    // New's with a version column and fenced writes. "postgres-versioned write: store directly" against "postgres
    // write: store directly" is what the triggers cost a writer of Old.
    @Sendable func versionedOld() async throws -> PostgresStore<Int64, [UInt8]> {
        let connection = try await PostgresDatabase.connect(url: url)
        let table = "bench_vold_\(UUID().uuidString.prefix(8).lowercased())"
        let plain = try PostgresStore<Int64, [UInt8]>(database: connection, table: table, codec: RawBytesValueCodec())
        try await plain.prepare()
        let schema = try ChangeCaptureSchema(table: table, keyColumn: "key")
        try await PostgresChangeCapture(database: connection, schema: schema).install()
        let store = try PostgresStore<Int64, [UInt8]>(
            database: connection,
            table: table,
            changeCapture: schema,
            codec: RawBytesValueCodec()
        )
        try await store.prepare()
        return store
    }
    @Sendable func versionedNew() async throws -> PostgresStore<Int64, [UInt8]> {
        let connection = try await PostgresDatabase.connect(url: url)
        let table = "bench_vnew_\(UUID().uuidString.prefix(8).lowercased())"
        let store = try PostgresStore<Int64, [UInt8]>(
            database: connection,
            table: table,
            versionColumn: "zddm_version",
            codec: RawBytesValueCodec()
        )
        try await store.prepare()
        return store
    }
    register("postgres-versioned", makeOld: { try await versionedOld() }, makeNew: { try await versionedNew() })
}
