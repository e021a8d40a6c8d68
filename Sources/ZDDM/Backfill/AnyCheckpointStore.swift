/// A type-erased checkpoint store, for choosing where checkpoints live at run time (a folder or New's database,
/// say) where a concrete type is needed.
public struct AnyCheckpointStore<Key: Codable & Sendable>: BackfillCheckpointStore {
    /// The wrapped checkpoint store.
    public let base: any BackfillCheckpointStore<Key>

    /// Wraps a checkpoint store.
    /// - Parameter base: The checkpoint store.
    public init(_ base: any BackfillCheckpointStore<Key>) {
        self.base = base
    }

    public func load(name: String) async throws -> BackfillCheckpoint<Key>? {
        try await base.load(name: name)
    }

    public func save(_ checkpoint: BackfillCheckpoint<Key>, name: String) async throws {
        try await base.save(checkpoint, name: name)
    }
}
