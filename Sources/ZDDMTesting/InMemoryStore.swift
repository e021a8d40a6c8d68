import Synchronization
public import ZDDM

/// A thread-safe in-memory store with every capability: the reference implementation the conformance suite is
/// proven on, and a handy Old or New in tests.
///
/// Keys are listed in their `Comparable` order. Listing after a change sorts the keys again (O(n log n)), so
/// it suits tests and demos, not large production data.
///
/// The store keeps versions the way a SQL store with change capture does: every change (a write, an insert that
/// stored, a delete that removed something, a tombstone) makes the key's version larger, and a deletion keeps it;
/// ``writeIfNewer(_:_:)`` stores the version it is given. With `captureChanges`, every change is also appended to
/// a change table (``capturedChanges(limit:)``), as a trigger on an SQL table would.
public final class InMemoryStore<Key: Hashable & Comparable & Sendable, Value: Sendable>: KeyValueStore, Sendable {
    private struct Storage {
        var records: [Key: StoreRecord<Value>] = [:]
        /// Every key's version; kept when the key's record is removed.
        var versions: [Key: UInt64] = [:]
        /// Keys holding values, sorted; `nil` when a change made it out of date.
        var sortedValueKeys: [Key]? = []
        /// Keys holding a version (a value, a tombstone or a deletion), sorted; `nil` when a new key made it out of
        /// date.
        var sortedVersionedKeys: [Key]? = []
        var captureChanges = false
        var changes: [(change: CapturedChange<Key>, at: ContinuousClock.Instant)] = []
        var nextSequence: Int64 = 1

        /// Gives the key its next version and records the change.
        mutating func changed(_ key: Key, to version: UInt64? = nil) -> UInt64 {
            let next = version ?? ((versions[key] ?? 0) + 1)
            if versions.updateValue(next, forKey: key) == nil { sortedVersionedKeys = nil }
            if captureChanges {
                changes.append((CapturedChange(sequence: nextSequence, key: key, version: next), .now))
                nextSequence += 1
            }
            return next
        }
    }

    private let storage: Mutex<Storage>

    public let capabilities: StoreCapabilities

    /// Creates an empty store, or one holding the given values (each at version 1).
    /// - Parameters:
    ///   - values: Initial values.
    ///   - captureChanges: Whether to record every change in a change table, as change capture on an SQL Old does.
    public init(_ values: [Key: Value] = [:], captureChanges: Bool = false) {
        var storage = Storage()
        storage.records = values.mapValues { .value($0) }
        storage.versions = values.mapValues { _ in 1 }
        storage.sortedVersionedKeys = nil
        storage.sortedValueKeys = nil
        storage.captureChanges = captureChanges
        self.storage = Mutex(storage)
        var capabilities: StoreCapabilities = [.atomicInsertIfAbsent, .tombstones, .orderedKeys, .batches, .versions]
        if captureChanges { capabilities.insert(.changeCapture) }
        self.capabilities = capabilities
    }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        storage.withLock { $0.records[key] }
    }

    public func write(_ key: Key, _ value: Value) async throws {
        _ = try await writeVersioned(key, value)
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        storage.withLock { storage in
            guard storage.records[key] == nil else { return false }
            storage.records[key] = .value(value)
            storage.sortedValueKeys = nil
            _ = storage.changed(key)
            return true
        }
    }

    public func delete(_ key: Key) async throws {
        _ = try await deleteVersioned(key)
    }

    public func writeTombstone(_ key: Key) async throws {
        storage.withLock { storage in
            if storage.records.updateValue(.tombstone, forKey: key)?.value != nil { storage.sortedValueKeys = nil }
            _ = storage.changed(key)
        }
    }

    public func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>? {
        storage.withLock { storage in
            guard let version = storage.versions[key] else { return nil }
            return VersionedRecord(storage.records[key] ?? .tombstone, version: version)
        }
    }

    public func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>] {
        storage.withLock { storage in
            var found: [Key: VersionedRecord<Value>] = [:]
            for key in keys {
                if let version = storage.versions[key] {
                    found[key] = VersionedRecord(storage.records[key] ?? .tombstone, version: version)
                }
            }
            return found
        }
    }

    public func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64 {
        storage.withLock { storage in
            let previous = storage.records.updateValue(.value(value), forKey: key)
            if previous?.value == nil { storage.sortedValueKeys = nil }
            return storage.changed(key)
        }
    }

    public func deleteVersioned(_ key: Key) async throws -> UInt64 {
        storage.withLock { storage in
            guard let removed = storage.records.removeValue(forKey: key) else { return storage.versions[key] ?? 0 }
            if removed.value != nil { storage.sortedValueKeys = nil }
            return storage.changed(key)
        }
    }

    public func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool {
        storage.withLock { storage in Self.storeIfNewer(&storage, key, record) }
    }

    public func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key> {
        storage.withLock { storage in
            var stored: Set<Key> = []
            for entry in entries where Self.storeIfNewer(&storage, entry.key, entry.record) {
                stored.insert(entry.key)
            }
            return stored
        }
    }

    private static func storeIfNewer(_ storage: inout Storage, _ key: Key, _ record: VersionedRecord<Value>) -> Bool {
        if let held = storage.versions[key], held >= record.version, storage.records[key] != nil { return false }
        let previous = storage.records.updateValue(record.record, forKey: key)
        if (previous?.value == nil) != (record.record.value == nil) { storage.sortedValueKeys = nil }
        _ = storage.changed(key, to: record.version)
        return true
    }

    public func capturedChanges(limit: Int) async throws -> [CapturedChange<Key>] {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .changes, message: "limit must be at least 1, got \(limit)")
        }
        return try storage.withLock { storage in
            guard storage.captureChanges else {
                throw ZDDMError(.unsupported, operation: .changes, message: "this store captures no changes")
            }
            return storage.changes.prefix(limit).map(\.change)
        }
    }

    public func removeCapturedChanges(_ changes: [CapturedChange<Key>]) async throws {
        let removed = Set(changes)
        storage.withLock { storage in storage.changes.removeAll { removed.contains($0.change) } }
    }

    public func changeBacklog() async throws -> ChangeBacklog {
        storage.withLock { storage in
            ChangeBacklog(entries: storage.changes.count, oldestAge: storage.changes.first.map { .now - $0.at })
        }
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        try page(after: cursor, limit: limit, sorted: \.sortedValueKeys) { storage in
            storage.records.compactMap { $0.value.value == nil ? nil : $0.key }
        }
    }

    /// Keys with a value, a tombstone or a deletion's version: every key the store has a version for.
    public func keysIncludingDeleted(after cursor: Key?, limit: Int) async throws -> [Key] {
        try page(after: cursor, limit: limit, sorted: \.sortedVersionedKeys) { Array($0.versions.keys) }
    }

    /// A page of a sorted key list kept in `sorted` (made from `keys` when a change invalidated it).
    private func page(
        after cursor: Key?,
        limit: Int,
        sorted cache: WritableKeyPath<Storage, [Key]?>,
        keys: (Storage) -> [Key]
    ) throws -> [Key] {
        try Self.checkListLimit(limit)
        return storage.withLock { storage in
            let sorted: [Key]
            if let cached = storage[keyPath: cache] {
                sorted = cached
            } else {
                sorted = keys(storage).sorted()
                storage[keyPath: cache] = sorted
            }
            return Self.page(sorted, after: cursor, limit: limit)
        }
    }

    private static func checkListLimit(_ limit: Int) throws {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .listKeys, message: "limit must be at least 1, got \(limit)")
        }
    }

    /// Up to `limit` keys of `sorted` after `cursor`.
    private static func page(_ sorted: [Key], after cursor: Key?, limit: Int) -> [Key] {
        var low = 0
        if let cursor {
            var high = sorted.count
            while low < high {
                let middle = (low + high) / 2
                if sorted[middle] <= cursor { low = middle + 1 } else { high = middle }
            }
        }
        return Array(sorted[low..<min(sorted.count, low + limit)])
    }

    public func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>] {
        storage.withLock { storage in
            var found: [Key: StoreRecord<Value>] = [:]
            for key in keys { found[key] = storage.records[key] }
            return found
        }
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        storage.withLock { storage in
            var inserted: Set<Key> = []
            for entry in entries where storage.records[entry.key] == nil {
                storage.records[entry.key] = .value(entry.value)
                inserted.insert(entry.key)
            }
            if !inserted.isEmpty { storage.sortedValueKeys = nil }
            return inserted
        }
    }

    /// Everything the store holds, for assertions.
    public func snapshot() -> [Key: StoreRecord<Value>] {
        storage.withLock { $0.records }
    }

    /// The number of keys holding a value or a tombstone.
    public var count: Int {
        storage.withLock { $0.records.count }
    }
}
