import Synchronization
public import ZDDM

/// Keeps checkpoints in memory, for tests: they are gone when the process ends.
public final class MemoryCheckpointStore<Key: Codable & Sendable>: BackfillCheckpointStore {
    private let checkpoints = Mutex<[String: BackfillCheckpoint<Key>]>([:])

    /// Creates an empty store.
    public init() {}

    public func load(name: String) async throws -> BackfillCheckpoint<Key>? {
        checkpoints.withLock { $0[name] }
    }

    public func save(_ checkpoint: BackfillCheckpoint<Key>, name: String) async throws {
        checkpoints.withLock { $0[name] = checkpoint }
    }
}
