/// What a store holds for a key: a value, or a tombstone recording that the key was deleted.
///
/// A read that finds nothing returns `nil` rather than a record.
public enum StoreRecord<Value: Sendable>: Sendable {
    /// A live value.
    case value(Value)
    /// The key was deleted. A fill never overwrites a tombstone; only a write does.
    case tombstone

    /// The value, or `nil` for a tombstone.
    @inlinable
    public var value: Value? {
        if case .value(let value) = self { return value }
        return nil
    }

    /// Whether this record is a tombstone.
    @inlinable
    public var isTombstone: Bool {
        if case .tombstone = self { return true }
        return false
    }
}

extension StoreRecord: Equatable where Value: Equatable {}
extension StoreRecord: Hashable where Value: Hashable {}

/// What a store can do, declared by the store rather than discovered by failing.
///
/// The proxy checks these when it is created: New must support ``atomicInsertIfAbsent`` and ``tombstones``.
/// Backfill and verify need ``orderedKeys``.
public struct StoreCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `insertIfAbsent` is one atomic step: a concurrent write or tombstone can never be overwritten by it.
    public static let atomicInsertIfAbsent = StoreCapabilities(rawValue: 1 << 0)
    /// The store keeps tombstones (``KeyValueStore/writeTombstone(_:)``).
    public static let tombstones = StoreCapabilities(rawValue: 1 << 1)
    /// The store lists its keys in a stable order, in pages (``KeyValueStore/keys(after:limit:)``).
    public static let orderedKeys = StoreCapabilities(rawValue: 1 << 2)
    /// `readMany` and `insertManyIfAbsent` are done natively in few round trips, not one call per key.
    public static let batches = StoreCapabilities(rawValue: 1 << 3)
    /// The store keeps a version per key. As Old it assigns them: every change, by any writer, makes the key's
    /// version larger inside the change's own transaction, and a deletion keeps it (``KeyValueStore/writeVersioned(_:_:)``,
    /// ``KeyValueStore/deleteVersioned(_:)``, ``KeyValueStore/readVersioned(_:)``). As New it keeps the versions it
    /// is given and stores a record only over an older one (``KeyValueStore/writeIfNewer(_:_:)``).
    public static let versions = StoreCapabilities(rawValue: 1 << 4)
    /// The store records every change (key and version) in a change table, whoever made it
    /// (``KeyValueStore/capturedChanges(limit:)``).
    public static let changeCapture = StoreCapabilities(rawValue: 1 << 5)

    /// Everything a New store needs.
    public static let newStoreRequirements: StoreCapabilities = [.atomicInsertIfAbsent, .tombstones]
}

/// A key-value store that can play Old or New in a migration.
///
/// Every method may be called from many tasks at once. Methods a store cannot perform throw a ``ZDDMError`` with
/// code ``ZDDMError/Code/unsupported``, and the store leaves the matching flag out of ``capabilities``: a store
/// that cannot do something atomically says so instead of pretending.
///
/// When a method throws, the operation has either taken effect or not, and it must not take effect later (a
/// driver that times out must cancel the statement, not leave it running): the proxy's safety relies on it.
///
/// Semantics every implementation follows (the conformance suite in `ZDDMTesting` checks them):
///
/// | operation | effect |
/// | --- | --- |
/// | ``read(_:)`` | the key's record (value or tombstone), or `nil` when the store holds nothing |
/// | ``write(_:_:)`` | upsert: the value replaces whatever was there, a tombstone included |
/// | ``insertIfAbsent(_:_:)`` | stores the value only when the store holds nothing for the key; never replaces a value or a tombstone; returns whether it stored |
/// | ``delete(_:)`` | removes whatever the store holds for the key (value or tombstone); no error when there is nothing |
/// | ``writeTombstone(_:)`` | upsert of a tombstone |
/// | ``invalidate(_:)`` | forgets the key so the next read finds nothing; by default the same as ``delete(_:)`` |
/// | ``keys(after:limit:)`` | up to `limit` keys that hold a value, strictly after the cursor, in the store's order |
///
/// Stores with ``StoreCapabilities/versions`` also implement the versioned operations:
///
/// | operation | effect |
/// | --- | --- |
/// | ``writeVersioned(_:_:)`` | a ``write(_:_:)`` that returns the version the change got; every change makes the key's version larger |
/// | ``deleteVersioned(_:)`` | a ``delete(_:)`` that returns the version the deletion got (the current version when there was nothing to delete); the version survives the deletion |
/// | ``readVersioned(_:)`` | the key's record and version; a key deleted at version *v* reads as a tombstone at *v*; `nil` for a key never written |
/// | ``writeIfNewer(_:_:)`` | stores the record (value or tombstone) with its version when the store holds nothing for the key or an older version; returns whether it stored |
///
/// Stores with ``StoreCapabilities/changeCapture`` list their change table (``capturedChanges(limit:)``), remove
/// entries once applied (``removeCapturedChanges(_:)``) and report its size (``changeBacklog()``).
public protocol KeyValueStore<Key, Value>: Sendable {
    /// The key type.
    associatedtype Key: Hashable & Sendable
    /// The value type.
    associatedtype Value: Sendable

    /// What this store supports.
    var capabilities: StoreCapabilities { get }

    /// Reads a key.
    /// - Parameter key: The key.
    /// - Returns: The record, or `nil` when the store holds nothing for the key.
    /// - Throws: When the store fails.
    func read(_ key: Key) async throws -> StoreRecord<Value>?

    /// Stores a value, replacing any value or tombstone (upsert).
    /// - Parameters:
    ///   - key: The key.
    ///   - value: The value.
    /// - Throws: When the store fails.
    func write(_ key: Key, _ value: Value) async throws

    /// Stores a value only if the store holds nothing (no value, no tombstone) for the key.
    /// - Parameters:
    ///   - key: The key.
    ///   - value: The value.
    /// - Returns: `true` if the value was stored, `false` if something was already there.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` if the store cannot do it.
    func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool

    /// Removes whatever the store holds for the key. Removing a missing key is not an error.
    /// - Parameter key: The key.
    /// - Throws: When the store fails.
    func delete(_ key: Key) async throws

    /// Records that the key was deleted, replacing any value (an upsert of a tombstone).
    /// - Parameter key: The key.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` if the store keeps no tombstones.
    func writeTombstone(_ key: Key) async throws

    /// Forgets the key (value or tombstone) so that the next read finds nothing.
    /// - Parameter key: The key.
    /// - Throws: When the store fails.
    func invalidate(_ key: Key) async throws

    /// Lists keys that hold a value, in the store's stable order, strictly after a cursor.
    /// - Parameters:
    ///   - cursor: The last key of the previous page, or `nil` to start at the beginning.
    ///   - limit: The largest number of keys to return; at least 1.
    /// - Returns: Up to `limit` keys in order; fewer than `limit` only at the end.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/orderedKeys``.
    func keys(after cursor: Key?, limit: Int) async throws -> [Key]

    /// Lists keys that hold a value or whose deletion the store remembers with a version, in the same order as
    /// ``keys(after:limit:)``, strictly after a cursor: what a backfill with versions copies, so that New gets a
    /// tombstone for every key Old deleted.
    ///
    /// The default lists ``keys(after:limit:)``: a store that keeps no deleted versions has nothing more to list.
    /// - Parameters:
    ///   - cursor: The last key of the previous page, or `nil` to start at the beginning.
    ///   - limit: The largest number of keys to return; at least 1.
    /// - Returns: Up to `limit` keys in order, each once; fewer than `limit` only at the end.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/orderedKeys``.
    func keysIncludingDeleted(after cursor: Key?, limit: Int) async throws -> [Key]

    /// Whether one key comes before another in the order the store lists its keys (``keys(after:limit:)``).
    ///
    /// A backfill or verify split into chunks (see ``ChunkedBackfill``) uses it to stop a chunk at its last key.
    /// The default returns `nil`: the store cannot say, and chunked runs refuse it.
    /// - Parameters:
    ///   - first: A key.
    ///   - second: Another key.
    /// - Returns: `true` when `first` is listed before `second`, `false` when not, `nil` when the store cannot say.
    func listsKey(_ first: Key, before second: Key) -> Bool?

    /// Reads many keys at once.
    /// - Parameter keys: The keys.
    /// - Returns: The records found; keys the store holds nothing for are left out.
    /// - Throws: When the store fails.
    func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>]

    /// Inserts many values, each only if the store holds nothing for its key.
    /// - Parameter entries: The keys and values; each key at most once.
    /// - Returns: The keys that were inserted.
    /// - Throws: When the store fails.
    func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key>

    /// Reads a key with its version.
    /// - Parameter key: The key.
    /// - Returns: The record and its version (a deleted key is a tombstone at the deletion's version), or `nil` for a
    ///   key never written.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/versions``.
    func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>?

    /// Reads many keys with their versions.
    /// - Parameter keys: The keys.
    /// - Returns: The records found; keys never written are left out.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/versions``.
    func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>]

    /// Lists keys with their versions, in the order of ``keysIncludingDeleted(after:limit:)``, strictly after a
    /// cursor, without their values: what a verify by versions compares.
    ///
    /// The default lists the keys, then reads their records with ``readManyVersioned(_:)``; the SQL stores read
    /// keys and versions in one ordered statement.
    /// - Parameters:
    ///   - cursor: The last key of the previous page, or `nil` to start at the beginning.
    ///   - limit: The largest number of keys to return; at least 1.
    /// - Returns: Up to `limit` keys in order, each once; fewer than `limit` only at the end.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/versions``.
    func keyVersions(after cursor: Key?, limit: Int) async throws -> [KeyVersion<Key>]

    /// Lists keys with their records and versions, in the order of ``keysIncludingDeleted(after:limit:)``, strictly
    /// after a cursor: what a backfill with versions copies, read in one pass.
    ///
    /// The default lists the keys, then reads them with ``readManyVersioned(_:)``; SQLite's store reads both in
    /// one ordered statement.
    /// - Parameters:
    ///   - cursor: The last key of the previous page, or `nil` to start at the beginning.
    ///   - limit: The largest number of keys to return; at least 1.
    /// - Returns: Up to `limit` keys in order, each once, with their records; fewer than `limit` only at the end.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/versions``.
    func versionedRecords(after cursor: Key?, limit: Int) async throws -> [(key: Key, record: VersionedRecord<Value>)]

    /// Stores a value (upsert) and returns the version the store gave the change.
    /// - Parameters:
    ///   - key: The key.
    ///   - value: The value.
    /// - Returns: The key's new version, larger than any it had.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/versions``.
    func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64

    /// Deletes a key and returns the version of the deletion.
    /// - Parameter key: The key.
    /// - Returns: The version the deletion gave the key, or its current version (0 if never written) when the store
    ///   held no value.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/versions``.
    func deleteVersioned(_ key: Key) async throws -> UInt64

    /// Stores a record with its version if the store holds nothing for the key or an older version (the fence).
    /// - Parameters:
    ///   - key: The key.
    ///   - record: The value or tombstone, and Old's version of it.
    /// - Returns: Whether the record was stored (`false` when the store holds this version or a newer one).
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/versions``.
    func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool

    /// Fenced writes of many records, each as ``writeIfNewer(_:_:)``.
    /// - Parameter entries: The keys and records; each key at most once.
    /// - Returns: The keys whose record was stored.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/versions``.
    func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key>

    /// Fenced writes of many records, as ``writeManyIfNewer(_:)``, returning only how many values and tombstones
    /// were stored: what a backfill counts, without sending the keys back.
    /// - Parameter entries: The keys and records.
    /// - Returns: The numbers of values and of tombstones stored.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/versions``.
    func writeManyIfNewerCounting(
        _ entries: [(key: Key, record: VersionedRecord<Value>)]
    ) async throws
        -> FencedWriteCount

    /// The oldest entries of the change table, in the order they were made.
    /// - Parameter limit: The largest number of entries to return; at least 1.
    /// - Returns: Up to `limit` entries that have not been removed.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/changeCapture``.
    func capturedChanges(limit: Int) async throws -> [CapturedChange<Key>]

    /// Removes applied entries from the change table, each only while its sequence number, key and version are
    /// still those given: a store may give a removed entry's sequence number to a later entry, and an applier that
    /// lost its lease must never remove an entry it did not apply.
    /// - Parameter changes: The entries, as ``capturedChanges(limit:)`` returned them.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/changeCapture``.
    func removeCapturedChanges(_ changes: [CapturedChange<Key>]) async throws

    /// How many entries the change table holds and how old the oldest is.
    /// - Throws: When the store fails, or ``ZDDMError/Code/unsupported`` without ``StoreCapabilities/changeCapture``.
    func changeBacklog() async throws -> ChangeBacklog
}

extension KeyValueStore {
    public func invalidate(_ key: Key) async throws {
        try await delete(key)
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        throw ZDDMError(.unsupported, operation: .listKeys, message: "this store cannot list its keys in order")
    }

    public func keysIncludingDeleted(after cursor: Key?, limit: Int) async throws -> [Key] {
        try await keys(after: cursor, limit: limit)
    }

    public func listsKey(_ first: Key, before second: Key) -> Bool? { nil }

    public func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>] {
        var found: [Key: StoreRecord<Value>] = [:]
        found.reserveCapacity(keys.count)
        for key in keys {
            if let record = try await read(key) { found[key] = record }
        }
        return found
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        var inserted: Set<Key> = []
        for entry in entries where try await insertIfAbsent(entry.key, entry.value) {
            inserted.insert(entry.key)
        }
        return inserted
    }
}
