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
}
