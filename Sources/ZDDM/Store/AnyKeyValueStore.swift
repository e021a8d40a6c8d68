/// A type-erased store, for choosing a store at run time (from a URL, say) where a concrete type is needed.
///
/// It forwards every call and the capabilities of the store it wraps.
public struct AnyKeyValueStore<Key: Hashable & Sendable, Value: Sendable>: KeyValueStore {
    /// The wrapped store.
    public let base: any KeyValueStore<Key, Value>

    /// Wraps a store.
    /// - Parameter base: The store.
    public init(_ base: any KeyValueStore<Key, Value>) {
        self.base = base
    }

    public var capabilities: StoreCapabilities { base.capabilities }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        try await base.read(key)
    }

    public func write(_ key: Key, _ value: Value) async throws {
        try await base.write(key, value)
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        try await base.insertIfAbsent(key, value)
    }

    public func delete(_ key: Key) async throws {
        try await base.delete(key)
    }

    public func writeTombstone(_ key: Key) async throws {
        try await base.writeTombstone(key)
    }

    public func invalidate(_ key: Key) async throws {
        try await base.invalidate(key)
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        try await base.keys(after: cursor, limit: limit)
    }

    public func keysIncludingDeleted(after cursor: Key?, limit: Int) async throws -> [Key] {
        try await base.keysIncludingDeleted(after: cursor, limit: limit)
    }

    public func listsKey(_ first: Key, before second: Key) -> Bool? {
        base.listsKey(first, before: second)
    }

    public func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>] {
        try await base.readMany(keys)
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        try await base.insertManyIfAbsent(entries)
    }

    public func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>? {
        try await base.readVersioned(key)
    }

    public func versionedRecords(
        after cursor: Key?,
        limit: Int
    ) async throws -> [(key: Key, record: VersionedRecord<Value>)] {
        try await base.versionedRecords(after: cursor, limit: limit)
    }

    public func writeManyIfNewerCounting(
        _ entries: [(key: Key, record: VersionedRecord<Value>)]
    ) async throws -> FencedWriteCount {
        try await base.writeManyIfNewerCounting(entries)
    }

    public func keyVersions(after cursor: Key?, limit: Int) async throws -> [KeyVersion<Key>] {
        try await base.keyVersions(after: cursor, limit: limit)
    }

    public func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>] {
        try await base.readManyVersioned(keys)
    }

    public func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64 {
        try await base.writeVersioned(key, value)
    }

    public func deleteVersioned(_ key: Key) async throws -> UInt64 {
        try await base.deleteVersioned(key)
    }

    public func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool {
        try await base.writeIfNewer(key, record)
    }

    public func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key> {
        try await base.writeManyIfNewer(entries)
    }

    public func capturedChanges(limit: Int) async throws -> [CapturedChange<Key>] {
        try await base.capturedChanges(limit: limit)
    }

    public func removeCapturedChanges(_ changes: [CapturedChange<Key>]) async throws {
        try await base.removeCapturedChanges(changes)
    }

    public func changeBacklog() async throws -> ChangeBacklog {
        try await base.changeBacklog()
    }
}
