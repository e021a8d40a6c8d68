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

/// Opens key-value tables from `sqlite:` and `postgres://` URLs.
package enum StoreOpener {
    /// Opens a table.
    /// - Parameters:
    ///   - url: The database URL.
    ///   - table: The table.
    ///   - codec: How values are stored.
    ///   - create: Create the table when missing; otherwise a missing table is an error.
    ///   - fresh: Empty the database first (the demo's own files and tables only).
    ///   - busyTimeout: How long an SQLite write waits for another process's lock.
    package static func open<Key: SQLKey & Codable, Value: Sendable>(
        _ url: String,
        table: String,
        codec: some ValueCodec<Value>,
        create: Bool,
        fresh: Bool = false,
        busyTimeout: Duration = .seconds(5)
    ) async throws -> OpenedStore<Key, Value> {
        if url.hasPrefix("sqlite:") {
            let location = try SQLiteURL(url)
            if fresh, let path = location.filePath {
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            } else if !create, let path = location.filePath, !FileManager.default.fileExists(atPath: path) {
                throw ZDDMError(.invalidArgument, message: "no SQLite database at \(path)")
            }
            let database = try SQLiteDatabase(location, busyTimeout: busyTimeout)
            let store = try SQLiteStore<Key, Value>(database: database, table: table, codec: codec)
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
            let database = try await PostgresDatabase.connect(url: location)
            do {
                let store = try PostgresStore<Key, Value>(database: database, table: table, codec: codec)
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
