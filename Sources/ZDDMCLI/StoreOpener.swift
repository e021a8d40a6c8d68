import Foundation
package import ZDDM
import ZDDMPostgres
package import ZDDMSQL
import ZDDMSQLite

/// A store opened from a URL, its checkpoint storage, and how to close it.
package struct OpenedStore<Key: SQLKey & Codable, Value: Sendable>: Sendable, CustomStringConvertible {
    package let store: AnyKeyValueStore<Key, Value>
    /// Checkpoints live in New's database, in the `zddm_checkpoints` table.
    package let checkpoints: AnyCheckpointStore<Key>
    /// Creates the checkpoint table when missing.
    package let prepareCheckpoints: @Sendable () async throws -> Void
    package let description: String
    package let close: @Sendable () async -> Void
}

/// Whether a table opened by ``StoreOpener`` keeps versions, and in which role.
package enum StoreVersions: Sendable, Equatable {
    /// No versions.
    case none
    /// Old's table with change capture installed: its triggers keep the versions in this column.
    case old(column: String)
    /// New's table: it keeps the versions it is given in this column (added when missing and `create` is set).
    case new(column: String)
}

/// Opens key-value tables from `sqlite:` and `postgres://` URLs.
package enum StoreOpener {
    /// Whether change capture is installed on a table.
    /// - Parameters:
    ///   - url: The database URL.
    ///   - table: The table.
    ///   - versionColumn: The version column the capture keeps.
    /// - Returns: `true` when the triggers, tables and column are all in place.
    /// - Throws: When the database cannot be opened or read.
    package static func captureInstalled(_ url: String, table: String, versionColumn: String) async throws -> Bool {
        let schema = try ChangeCaptureSchema(table: table, keyColumn: "key", versionColumn: versionColumn)
        if url.hasPrefix("sqlite:") {
            let location = try SQLiteURL(url)
            if let path = location.filePath, !FileManager.default.fileExists(atPath: path) { return false }
            let database = try SQLiteDatabase(location)
            defer { try? database.close() }
            return try await SQLiteChangeCapture(database: database, schema: schema).status().isInstalled
        }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            let database = try await PostgresDatabase.connect(url: PostgresURL(url))
            do {
                let installed = try await PostgresChangeCapture(database: database, schema: schema).status().isInstalled
                await database.shutdown()
                return installed
            } catch {
                await database.shutdown()
                throw error
            }
        }
        return false
    }

    /// Opens a table.
    /// - Parameters:
    ///   - url: The database URL.
    ///   - table: The table.
    ///   - codec: How values are stored.
    ///   - create: Create the table when missing; otherwise a missing table is an error.
    ///   - fresh: Empty the database first (the demo's own files and tables only).
    ///   - busyTimeout: How long an SQLite write waits for another process's lock.
    ///   - versions: Whether the table keeps versions, and in which role.
    ///   - steadyConnections: For PostgreSQL, the connections the pool keeps open, unpinged, for its whole life.
    package static func open<Key: SQLKey & Codable, Value: Sendable>(
        _ url: String,
        table: String,
        codec: some ValueCodec<Value>,
        create: Bool,
        fresh: Bool = false,
        busyTimeout: Duration = .seconds(5),
        versions: StoreVersions = .none,
        steadyConnections: Int = 1
    ) async throws -> OpenedStore<Key, Value> {
        if url.hasPrefix("sqlite:") {
            let location = try SQLiteURL(url)
            if fresh, let path = location.filePath {
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            } else if !create, let path = location.filePath, !FileManager.default.fileExists(atPath: path) {
                throw ZDDMError(.invalidArgument, message: "no SQLite database at \(path)")
            }
            let database = try SQLiteDatabase(location, busyTimeout: busyTimeout)
            let store: SQLiteStore<Key, Value>
            switch versions {
            case .none: store = try SQLiteStore(database: database, table: table, codec: codec)
            case .old(let column):
                store = try SQLiteStore(
                    database: database,
                    table: table,
                    versionColumn: column,
                    changeCapture: true,
                    codec: codec
                )
            case .new(let column):
                store = try SQLiteStore(database: database, table: table, versionColumn: column, codec: codec)
            }
            if create { try await store.prepare() } else { try await store.checkSchema() }
            let checkpoints = try SQLiteStore<String, BackfillCheckpoint<Key>>(
                database: database,
                table: "zddm_checkpoints",
                codec: JSONValueCodec<BackfillCheckpoint<Key>>()
            )
            return OpenedStore(
                store: AnyKeyValueStore(store),
                checkpoints: AnyCheckpointStore(KeyValueCheckpointStore(checkpoints)),
                prepareCheckpoints: { try await checkpoints.prepare() },
                description: "\(database.url)",
                close: { try? database.close() }
            )
        }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            let location = try PostgresURL(url)
            let database = try await PostgresDatabase.connect(url: location, steadyConnections: steadyConnections)
            do {
                let store: PostgresStore<Key, Value>
                switch versions {
                case .none: store = try PostgresStore(database: database, table: table, codec: codec)
                case .old(let column):
                    store = try PostgresStore(
                        database: database,
                        table: table,
                        changeCapture: ChangeCaptureSchema(table: table, keyColumn: "key", versionColumn: column),
                        codec: codec
                    )
                case .new(let column):
                    store = try PostgresStore(database: database, table: table, versionColumn: column, codec: codec)
                }
                if fresh { try await database.execute("DROP TABLE IF EXISTS \(store.schema.table.quoted)") }
                if create { try await store.prepare() } else { try await store.checkSchema() }
                let checkpoints = try PostgresStore<String, BackfillCheckpoint<Key>>(
                    database: database,
                    table: "zddm_checkpoints",
                    codec: JSONValueCodec<BackfillCheckpoint<Key>>()
                )
                if fresh { try await database.execute("DROP TABLE IF EXISTS zddm_checkpoints") }
                return OpenedStore(
                    store: AnyKeyValueStore(store),
                    checkpoints: AnyCheckpointStore(KeyValueCheckpointStore(checkpoints)),
                    prepareCheckpoints: { try await checkpoints.prepare() },
                    description: "\(location)",
                    close: { await database.shutdown() }
                )
            } catch {
                await database.shutdown()
                throw error
            }
        }
        throw ZDDMError(.invalidArgument, message: "unsupported store URL; use sqlite:PATH or postgres://USER@HOST/DB")
    }
}
