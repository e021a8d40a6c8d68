import Synchronization
public import ZDDM

/// A thread-safe in-memory store with every capability: the reference implementation the conformance suite is
/// proven on, and a handy Old or New in tests.
///
/// Keys are listed in their `Comparable` order. Listing after a change sorts the keys again (O(n log n)), so
/// it suits tests and demos, not large production data.
public final class InMemoryStore<Key: Hashable & Comparable & Sendable, Value: Sendable>: KeyValueStore, Sendable {
    private struct Storage {
        var records: [Key: StoreRecord<Value>] = [:]
        /// Keys holding values, sorted; `nil` when a change made it out of date.
        var sortedValueKeys: [Key]? = []
    }

    private let storage: Mutex<Storage>

    public let capabilities: StoreCapabilities = [.atomicInsertIfAbsent, .tombstones, .orderedKeys, .batches]

    /// Creates an empty store, or one holding the given values.
    /// - Parameter values: Initial values.
    public init(_ values: [Key: Value] = [:]) {
        var storage = Storage()
        storage.records = values.mapValues { .value($0) }
        storage.sortedValueKeys = nil
        self.storage = Mutex(storage)
    }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        storage.withLock { $0.records[key] }
    }

    public func write(_ key: Key, _ value: Value) async throws {
        storage.withLock { storage in
            let previous = storage.records.updateValue(.value(value), forKey: key)
            if previous?.value == nil { storage.sortedValueKeys = nil }
        }
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        storage.withLock { storage in
            guard storage.records[key] == nil else { return false }
            storage.records[key] = .value(value)
            storage.sortedValueKeys = nil
            return true
        }
    }

    public func delete(_ key: Key) async throws {
        storage.withLock { storage in
            if storage.records.removeValue(forKey: key)?.value != nil { storage.sortedValueKeys = nil }
        }
    }

    public func writeTombstone(_ key: Key) async throws {
        storage.withLock { storage in
            if storage.records.updateValue(.tombstone, forKey: key)?.value != nil { storage.sortedValueKeys = nil }
        }
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .listKeys, message: "limit must be at least 1, got \(limit)")
        }
        return storage.withLock { storage in
            let sorted: [Key]
            if let cached = storage.sortedValueKeys {
                sorted = cached
            } else {
                sorted = storage.records.compactMap { $0.value.value == nil ? nil : $0.key }.sorted()
                storage.sortedValueKeys = sorted
            }
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
