import ZDDM
import ZDDMPostgres
import ZDDMSQLite

extension OpenedDatabase {
    /// Opens a fleet's shared state (`zddm control`, `zddm verify --migration`), runs `body` with its store and
    /// closes the database.
    /// - Parameters:
    ///   - url: The database's URL.
    ///   - option: The option the URL came from, for error messages.
    ///   - table: The shared state's table.
    ///   - prepare: Whether to create the table when missing (and add columns a newer version needs).
    ///   - body: What to do with the store.
    static func withFleetStateStore<T: Sendable>(
        _ url: String,
        option: String,
        table: String,
        prepare: Bool,
        _ body: (any FleetStateStore) async throws -> T
    ) async throws -> T {
        try await with(url, option: option) { database in
            let store: any FleetStateStore
            switch database {
            case .sqlite(let sqlite):
                let sqliteStore = try SQLiteFleetStateStore(database: sqlite, table: table)
                if prepare { try await sqliteStore.prepare() }
                store = sqliteStore
            case .postgres(let postgres, _):
                let postgresStore = try PostgresFleetStateStore(database: postgres, table: table)
                if prepare { try await postgresStore.prepare() }
                store = postgresStore
            }
            return try await body(store)
        }
    }
}
