/// Keeps backfill checkpoints in a key-value store, one record per backfill name: for example a table in New's
/// own database, so the checkpoint lives and dies with the data it describes.
///
/// ```swift
/// let table = try SQLiteStore<String, BackfillCheckpoint<Int64>>(
///     database: newDatabase, table: "zddm_checkpoints", codec: JSONValueCodec())
/// try await table.prepare()
/// let checkpoints = KeyValueCheckpointStore(table)
/// ```
public struct KeyValueCheckpointStore<Store: KeyValueStore, Key: Codable & Sendable>: BackfillCheckpointStore
where Store.Key == String, Store.Value == BackfillCheckpoint<Key> {
    /// The store holding the checkpoints.
    public let store: Store

    /// Creates the checkpoint storage.
    /// - Parameter store: A store keyed by backfill name.
    public init(_ store: Store) {
        self.store = store
    }

    public func load(name: String) async throws -> BackfillCheckpoint<Key>? {
        try await store.read(name)?.value
    }

    public func save(_ checkpoint: BackfillCheckpoint<Key>, name: String) async throws {
        try await store.write(name, checkpoint)
    }
}
