/// A record together with the version Old gave it.
///
/// Old assigns versions: every change of a key (write or delete, through the proxy or not) makes the key's version
/// larger, inside the change's own transaction. A deletion keeps the key's version, so a key created again later
/// continues above it. New keeps the version of each record it was given and accepts a record only when it is
/// newer than what it holds (``KeyValueStore/writeIfNewer(_:_:)``), so writes into New converge in any order.
public struct VersionedRecord<Value: Sendable>: Sendable {
    /// The value, or a tombstone for a key Old does not hold (deleted, or never written at version 0).
    public var record: StoreRecord<Value>
    /// The version Old gave this state of the key; 0 for a key that was never written.
    public var version: UInt64

    /// Creates a versioned record.
    /// - Parameters:
    ///   - record: The value or tombstone.
    ///   - version: Old's version of it.
    @inlinable
    public init(_ record: StoreRecord<Value>, version: UInt64) {
        self.record = record
        self.version = version
    }

    /// A value at a version.
    @inlinable
    public static func value(_ value: Value, version: UInt64) -> Self { Self(.value(value), version: version) }

    /// A tombstone at a version.
    @inlinable
    public static func tombstone(version: UInt64) -> Self { Self(.tombstone, version: version) }

    /// The value, or `nil` for a tombstone.
    @inlinable
    public var value: Value? { record.value }
}

extension VersionedRecord: Equatable where Value: Equatable {}

/// A key with its version, without its value (``KeyValueStore/keyVersions(after:limit:)``).
public struct KeyVersion<Key: Sendable>: Sendable {
    /// The key.
    public var key: Key
    /// The version of the key's state.
    public var version: UInt64
    /// Whether the key's state is a deletion (a tombstone, or a deleted version Old remembers).
    public var isTombstone: Bool

    /// Creates a key version.
    public init(key: Key, version: UInt64, isTombstone: Bool) {
        self.key = key
        self.version = version
        self.isTombstone = isTombstone
    }
}

extension KeyVersion: Equatable where Key: Equatable {}

/// What a batch of fenced writes stored (``KeyValueStore/writeManyIfNewerCounting(_:)``).
public struct FencedWriteCount: Sendable, Hashable {
    /// Values stored.
    public var values: Int
    /// Tombstones stored.
    public var tombstones: Int

    /// Creates a count.
    public init(values: Int, tombstones: Int) {
        self.values = values
        self.tombstones = tombstones
    }
}
extension VersionedRecord: Hashable where Value: Hashable {}

/// One entry of Old's change table: a key changed and got a version.
///
/// Change capture records every change to Old's table, by whichever writer, in the change's own transaction. The
/// change applier reads entries, copies each key's current state from Old into New through the fence, and then
/// removes the entries, so an entry whose transaction commits late is read by a later pass, never skipped.
public struct CapturedChange<Key: Sendable>: Sendable {
    /// The entry's position in the change table: larger than every entry present when it was made (a store may
    /// give a removed entry's number again).
    public let sequence: Int64
    /// The key that changed.
    public let key: Key
    /// The version the change gave the key.
    public let version: UInt64

    /// Creates a change entry.
    public init(sequence: Int64, key: Key, version: UInt64) {
        self.sequence = sequence
        self.key = key
        self.version = version
    }
}

extension CapturedChange: Equatable where Key: Equatable {}
extension CapturedChange: Hashable where Key: Hashable {}

/// How far change capture is ahead of the change applier.
public struct ChangeBacklog: Sendable, Hashable {
    /// Entries not yet applied and removed.
    public var entries: Int
    /// The age of the oldest entry, measured by the database's own clock; `nil` when there is none.
    public var oldestAge: Duration?

    /// Creates a backlog figure.
    public init(entries: Int, oldestAge: Duration?) {
        self.entries = entries
        self.oldestAge = oldestAge
    }
}

// MARK: Defaults for stores without versions or change capture

extension KeyValueStore {
    public func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>? {
        throw ZDDMError(.unsupported, operation: .read, message: "this store keeps no versions")
    }

    public func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>] {
        var found: [Key: VersionedRecord<Value>] = [:]
        found.reserveCapacity(keys.count)
        for key in keys {
            if let record = try await readVersioned(key) { found[key] = record }
        }
        return found
    }

    public func keyVersions(after cursor: Key?, limit: Int) async throws -> [KeyVersion<Key>] {
        let keys = try await keysIncludingDeleted(after: cursor, limit: limit)
        let records = try await readManyVersioned(keys)
        // A key listed but gone by the time it is read counts as never written (version 0), so that a full page
        // stays full.
        return keys.map { key in
            let record = records[key]
            return KeyVersion(key: key, version: record?.version ?? 0, isTombstone: record?.value == nil)
        }
    }

    public func versionedRecords(
        after cursor: Key?,
        limit: Int
    ) async throws -> [(key: Key, record: VersionedRecord<Value>)] {
        let keys = try await keysIncludingDeleted(after: cursor, limit: limit)
        let records = try await readManyVersioned(keys)
        // A key listed but gone by the time it is read is a tombstone at version 0 (any record replaces it).
        return keys.map { key in (key: key, record: records[key] ?? .tombstone(version: 0)) }
    }

    public func writeManyIfNewerCounting(
        _ entries: [(key: Key, record: VersionedRecord<Value>)]
    ) async throws -> FencedWriteCount {
        let stored = try await writeManyIfNewer(entries)
        let tombstones = Set(entries.lazy.filter { stored.contains($0.key) && $0.record.value == nil }.map(\.key))
        return FencedWriteCount(values: stored.count - tombstones.count, tombstones: tombstones.count)
    }

    public func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64 {
        throw ZDDMError(.unsupported, operation: .write, message: "this store keeps no versions")
    }

    public func deleteVersioned(_ key: Key) async throws -> UInt64 {
        throw ZDDMError(.unsupported, operation: .delete, message: "this store keeps no versions")
    }

    public func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool {
        throw ZDDMError(.unsupported, operation: .writeIfNewer, message: "this store keeps no versions")
    }

    public func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key> {
        var stored: Set<Key> = []
        for entry in entries where try await writeIfNewer(entry.key, entry.record) {
            stored.insert(entry.key)
        }
        return stored
    }

    public func capturedChanges(limit: Int) async throws -> [CapturedChange<Key>] {
        throw ZDDMError(.unsupported, operation: .changes, message: "this store captures no changes")
    }

    public func removeCapturedChanges(_ changes: [CapturedChange<Key>]) async throws {
        throw ZDDMError(.unsupported, operation: .changes, message: "this store captures no changes")
    }

    public func changeBacklog() async throws -> ChangeBacklog {
        throw ZDDMError(.unsupported, operation: .changes, message: "this store captures no changes")
    }
}
