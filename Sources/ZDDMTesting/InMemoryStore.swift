public import Synchronization
public import ZDDM

/// A thread-safe in-memory store with every capability: the reference implementation the conformance suite is
/// proven on, and a fast Old or New in tests, demos and benchmarks.
///
/// Keys are spread over independently locked shards (by the high bits of their hash), so tasks working on
/// different keys rarely wait for each other, and the single-key calls are `@inlinable`: a caller that names the
/// store's concrete `Key` and `Value` types gets them specialized, with no generic dispatch and no allocation on a
/// read or an overwrite.
///
/// Keys are listed in their `Comparable` order. Each shard keeps its keys sorted and sorts them again after a change
/// that added or removed one (O(n log n) for the shard), so listing suits tests, demos and backfills of a store that
/// is not changing much, not a large store under heavy writes.
///
/// The store keeps versions the way a SQL store with change capture does: every change (a write, an insert that
/// stored, a delete that removed something, a tombstone) makes the key's version larger, and a deletion keeps it;
/// ``writeIfNewer(_:_:)`` stores the version it is given. With `captureChanges`, every change is also appended to
/// a change table (``capturedChanges(limit:)``), as a trigger on an SQL table would, in the order the key's changes
/// were made.
public final class InMemoryStore<Key: Hashable & Comparable & Sendable, Value: Sendable>: KeyValueStore, Sendable {
    /// What the store knows of a key.
    @usableFromInline
    struct Entry: Sendable {
        /// The value or tombstone; `nil` once the key was deleted (its version stays).
        @usableFromInline var record: StoreRecord<Value>?
        @usableFromInline var version: UInt64

        @inlinable
        init(record: StoreRecord<Value>?, version: UInt64) {
            self.record = record
            self.version = version
        }

        /// Whether the entry holds a value (not a tombstone, not deleted); tells without copying the value.
        @inlinable
        var holdsValue: Bool { Self.holdsValue(record) }

        @inlinable
        static func holdsValue(_ record: StoreRecord<Value>?) -> Bool {
            if case .value? = record { return true }
            return false
        }
    }

    /// A key and what the store knows of it, side by side in one slot of a shard's table.
    @usableFromInline
    struct Slot: Sendable {
        @usableFromInline let key: Key
        @usableFromInline var entry: Entry

        @inlinable
        init(key: Key, entry: Entry) {
            self.key = key
            self.entry = entry
        }
    }

    /// One shard's keys: an open-addressing hash table (linear probing) whose slots hold the key and its entry
    /// together, so that a lookup reads one place in memory rather than a dictionary's separate key and value
    /// arrays. A key is never removed (a deleted key keeps its version), so the table needs no deletion markers.
    @usableFromInline
    struct ShardState: Sendable {
        /// A power of two in length, at most five eighths full.
        @usableFromInline var slots: [Slot?] = Array(repeating: nil, count: 16)
        @usableFromInline var count = 0
        /// Keys holding values, sorted; `nil` when a change made it out of date.
        @usableFromInline var sortedValueKeys: [Key]? = []
        /// Keys holding a version (a value, a tombstone or a deletion), sorted; `nil` when a new key made it out of
        /// date.
        @usableFromInline var sortedVersionedKeys: [Key]? = []

        @inlinable
        init() {}

        /// The index of the slot holding `key`, or of the empty slot where it would go.
        @inlinable
        func index(of key: Key, hash: Int) -> Int {
            slots.withUnsafeBufferPointer { slots in
                let mask = slots.count &- 1
                var index = hash & mask
                while let slot = slots[index] {
                    if slot.key == key { return index }
                    index = (index &+ 1) & mask
                }
                return index
            }
        }

        /// What the store knows of `key`.
        @inlinable
        func entry(_ key: Key, hash: Int) -> Entry? {
            slots[index(of: key, hash: hash)]?.entry
        }

        /// Every key with what the store knows of it.
        @inlinable
        var all: some Sequence<Slot> { slots.lazy.compactMap { $0 } }

        /// Puts a new key into the empty slot `index` (from ``index(of:hash:)``), growing the table when it is full
        /// enough.
        @inlinable
        mutating func insert(_ key: Key, _ entry: Entry, at index: Int) {
            slots[index] = Slot(key: key, entry: entry)
            count &+= 1
            sortedVersionedKeys = nil
            if count &* 8 > slots.count &* 5 { grow() }
        }

        /// Doubles the table and puts every key back (its hash made again: the one its shard was chosen with).
        @inlinable
        mutating func grow() {
            let held = slots
            slots = Array(repeating: nil, count: held.count * 2)
            for case let slot? in held { slots[index(of: slot.key, hash: slot.key.hashValue)] = slot }
        }

        /// Stores `record` for `key` (`nil` deletes it) at `version`, or at the key's next version; returns it.
        @inlinable
        mutating func set(_ key: Key, hash: Int, _ record: StoreRecord<Value>?, version: UInt64? = nil) -> UInt64 {
            let stored: UInt64
            let hadValue: Bool
            let index = index(of: key, hash: hash)
            if let held = slots[index]?.entry {
                hadValue = held.holdsValue
                stored = version ?? (held.version + 1)
                slots[index]?.entry = Entry(record: record, version: stored)
            } else {
                hadValue = false
                stored = version ?? 1
                insert(key, Entry(record: record, version: stored), at: index)
            }
            if hadValue != Entry.holdsValue(record) { sortedValueKeys = nil }
            return stored
        }
    }

    /// A shard: its lock and its keys, padded so that two shards' locks do not share a cache line.
    @usableFromInline
    final class Shard: Sendable {
        @usableFromInline let state: Mutex<ShardState> = Mutex(ShardState())
        private let padding: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)

        @usableFromInline
        init() {}
    }

    /// The change table, shared by every shard; a change is appended while its shard is locked, so the entries of
    /// one key are in the order of its versions.
    @usableFromInline
    final class ChangeLog: Sendable {
        struct State {
            var changes: [(change: CapturedChange<Key>, at: ContinuousClock.Instant)] = []
            var nextSequence: Int64 = 1
        }

        let state = Mutex(State())

        @usableFromInline
        init() {}

        @usableFromInline
        func append(_ key: Key, version: UInt64) {
            state.withLock { state in
                state.changes.append((CapturedChange(sequence: state.nextSequence, key: key, version: version), .now))
                state.nextSequence += 1
            }
        }
    }

    @usableFromInline let shards: [Shard]
    /// How far to shift a hash right to get its shard's index (its high bits: the dictionaries use the low ones).
    @usableFromInline let shardShift: Int
    /// The change table, with `captureChanges`.
    @usableFromInline let changeLog: ChangeLog?

    public let capabilities: StoreCapabilities

    /// Creates an empty store, or one holding the given values (each at version 1).
    /// - Parameters:
    ///   - values: Initial values.
    ///   - captureChanges: Whether to record every change in a change table, as change capture on an SQL Old does.
    ///   - shardBits: The store has 2^`shardBits` shards (default 5: 32), in `0...12`.
    @inlinable
    public init(_ values: [Key: Value] = [:], captureChanges: Bool = false, shardBits: Int = 5) {
        let bits = min(max(shardBits, 0), 12)
        self.shards = (0..<(1 << bits)).map { _ in Shard() }
        self.shardShift = UInt.bitWidth - bits
        self.changeLog = captureChanges ? ChangeLog() : nil
        var capabilities: StoreCapabilities = [.atomicInsertIfAbsent, .tombstones, .orderedKeys, .batches, .versions]
        if captureChanges { capabilities.insert(.changeCapture) }
        self.capabilities = capabilities
        for (key, value) in values {
            withShard(key) { state, hash in
                state.insert(key, Entry(record: .value(value), version: 1), at: state.index(of: key, hash: hash))
                state.sortedValueKeys = nil
            }
        }
    }

    /// Runs `body` with the key's shard locked, and the key's hash: its high bits chose the shard, its low bits
    /// place the key in the shard's table.
    @inlinable @inline(__always)
    func withShard<R>(_ key: Key, _ body: (inout ShardState, Int) -> R) -> R {
        let hash = key.hashValue
        // A shift by the word's width (one shard) must give 0, not be undefined: `>>` on a Swift integer is smart.
        let index = Int(truncatingIfNeeded: UInt(bitPattern: hash) >> UInt(shardShift))
        return shards[index].state.withLock { body(&$0, hash) }
    }

    /// Stores a change under the shard's lock and appends it to the change table.
    @inlinable @inline(__always)
    func change(_ key: Key, _ record: StoreRecord<Value>?, version: UInt64? = nil) -> UInt64 {
        withShard(key) { state, hash in
            let stored = state.set(key, hash: hash, record, version: version)
            changeLog?.append(key, version: stored)
            return stored
        }
    }

    @inlinable @inline(__always)
    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        withShard(key) { state, hash in state.entry(key, hash: hash)?.record }
    }

    @inlinable
    public func write(_ key: Key, _ value: Value) async throws {
        _ = change(key, .value(value))
    }

    @inlinable @inline(__always)
    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        withShard(key) { state, hash in
            guard state.entry(key, hash: hash)?.record == nil else { return false }
            let stored = state.set(key, hash: hash, .value(value))
            changeLog?.append(key, version: stored)
            return true
        }
    }

    @inlinable
    public func delete(_ key: Key) async throws {
        _ = try await deleteVersioned(key)
    }

    @inlinable
    public func writeTombstone(_ key: Key) async throws {
        _ = change(key, .tombstone)
    }

    @inlinable @inline(__always)
    public func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>? {
        withShard(key) { state, hash in
            guard let entry = state.entry(key, hash: hash) else { return nil }
            return VersionedRecord(entry.record ?? .tombstone, version: entry.version)
        }
    }

    public func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>] {
        var found: [Key: VersionedRecord<Value>] = [:]
        for key in keys {
            if let entry = withShard(key, { state, hash in state.entry(key, hash: hash) }) {
                found[key] = VersionedRecord(entry.record ?? .tombstone, version: entry.version)
            }
        }
        return found
    }

    @inlinable @inline(__always)
    public func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64 {
        change(key, .value(value))
    }

    @inlinable @inline(__always)
    public func deleteVersioned(_ key: Key) async throws -> UInt64 {
        withShard(key) { state, hash in
            guard let entry = state.entry(key, hash: hash) else { return 0 }
            guard entry.record != nil else { return entry.version }
            let stored = state.set(key, hash: hash, nil)
            changeLog?.append(key, version: stored)
            return stored
        }
    }

    @inlinable @inline(__always)
    public func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool {
        withShard(key) { state, hash in Self.storeIfNewer(&state, key, hash, record, changeLog) }
    }

    public func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key> {
        var stored: Set<Key> = []
        for entry in entries {
            if withShard(entry.key, { Self.storeIfNewer(&$0, entry.key, $1, entry.record, changeLog) }) {
                stored.insert(entry.key)
            }
        }
        return stored
    }

    /// Stores a record unless the key holds a value or tombstone at the same or a newer version (a deletion's
    /// version does not hold a record back: the key was removed, and the record re-creates it).
    @inlinable
    static func storeIfNewer(
        _ state: inout ShardState,
        _ key: Key,
        _ hash: Int,
        _ record: VersionedRecord<Value>,
        _ changeLog: ChangeLog?
    ) -> Bool {
        if let held = state.entry(key, hash: hash), held.version >= record.version, held.record != nil { return false }
        let stored = state.set(key, hash: hash, record.record, version: record.version)
        changeLog?.append(key, version: stored)
        return true
    }

    public func capturedChanges(limit: Int) async throws -> [CapturedChange<Key>] {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .changes, message: "limit must be at least 1, got \(limit)")
        }
        guard let changeLog else {
            throw ZDDMError(.unsupported, operation: .changes, message: "this store captures no changes")
        }
        return changeLog.state.withLock { $0.changes.prefix(limit).map(\.change) }
    }

    public func removeCapturedChanges(_ changes: [CapturedChange<Key>]) async throws {
        let removed = Set(changes)
        changeLog?.state.withLock { state in state.changes.removeAll { removed.contains($0.change) } }
    }

    public func changeBacklog() async throws -> ChangeBacklog {
        let (entries, oldest) = changeLog?.state.withLock { ($0.changes.count, $0.changes.first?.at) } ?? (0, nil)
        return ChangeBacklog(entries: entries, oldestAge: oldest.map { .now - $0 })
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        try page(after: cursor, limit: limit, sorted: \.sortedValueKeys) { state in
            state.all.compactMap { $0.entry.holdsValue ? $0.key : nil }
        }
    }

    /// Keys are listed in their `Comparable` order.
    public func listsKey(_ first: Key, before second: Key) -> Bool? { first < second }

    /// Keys with a value, a tombstone or a deletion's version: every key the store has a version for.
    public func keysIncludingDeleted(after cursor: Key?, limit: Int) async throws -> [Key] {
        try page(after: cursor, limit: limit, sorted: \.sortedVersionedKeys) { $0.all.map(\.key) }
    }

    /// A page of keys after `cursor`: up to `limit` from each shard's sorted list (made from `keys` when a change
    /// invalidated it), merged.
    private func page(
        after cursor: Key?,
        limit: Int,
        sorted cache: WritableKeyPath<ShardState, [Key]?>,
        keys: (ShardState) -> [Key]
    ) throws -> [Key] {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .listKeys, message: "limit must be at least 1, got \(limit)")
        }
        var merged: [Key] = []
        for shard in shards {
            shard.state.withLock { state in
                let sorted: [Key]
                if let cached = state[keyPath: cache] {
                    sorted = cached
                } else {
                    sorted = keys(state).sorted()
                    state[keyPath: cache] = sorted
                }
                merged += Self.page(sorted, after: cursor, limit: limit)
            }
        }
        return shards.count == 1 ? merged : Array(merged.sorted().prefix(limit))
    }

    /// Up to `limit` keys of `sorted` after `cursor`.
    private static func page(_ sorted: [Key], after cursor: Key?, limit: Int) -> ArraySlice<Key> {
        var low = 0
        if let cursor {
            var high = sorted.count
            while low < high {
                let middle = (low + high) / 2
                if sorted[middle] <= cursor { low = middle + 1 } else { high = middle }
            }
        }
        return sorted[low..<min(sorted.count, low + limit)]
    }

    public func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>] {
        var found: [Key: StoreRecord<Value>] = [:]
        for key in keys { found[key] = withShard(key) { state, hash in state.entry(key, hash: hash)?.record } }
        return found
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        var inserted: Set<Key> = []
        for entry in entries where try await insertIfAbsent(entry.key, entry.value) { inserted.insert(entry.key) }
        return inserted
    }

    /// Everything the store holds, for assertions.
    public func snapshot() -> [Key: StoreRecord<Value>] {
        var all: [Key: StoreRecord<Value>] = [:]
        for shard in shards {
            shard.state.withLock { state in
                for slot in state.all { all[slot.key] = slot.entry.record }
            }
        }
        return all
    }

    /// The number of keys holding a value or a tombstone.
    public var count: Int {
        shards.reduce(0) { total, shard in
            total + shard.state.withLock { state in state.all.count(where: { $0.entry.record != nil }) }
        }
    }
}
