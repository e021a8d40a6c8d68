public import ZDDM

/// The checks every ``KeyValueStore`` implementation must pass, runnable against your own store.
///
/// Give it a factory that returns an *empty* store each time it is called (a fresh table, a fresh file), and
/// functions that make distinct keys and values from integers. Checks for capabilities the store does not
/// declare are skipped; everything it declares is checked, atomicity under concurrency included.
///
/// ```swift
/// @Test func conformance() async throws {
///     try await StoreConformanceSuite(
///         makeStore: { InMemoryStore<String, String>() },
///         key: { "key-\($0)" },
///         value: { "value-\($0)" }
///     ).run()
/// }
/// ```
public struct StoreConformanceSuite<Store: KeyValueStore>: Sendable where Store.Value: Equatable {
    /// A named check and what went wrong.
    public typealias Failure = StoreConformanceFailure.Check

    private let makeStore: @Sendable () async throws -> Store
    private let key: @Sendable (Int) -> Store.Key
    private let value: @Sendable (Int) -> Store.Value
    private let areInIncreasingOrder: (@Sendable (Store.Key, Store.Key) -> Bool)?
    let versionRoles: StoreVersionRoles

    /// Creates the suite.
    /// - Parameters:
    ///   - makeStore: Returns a new, empty store.
    ///   - key: Distinct keys for distinct integers from 0 to 1 202 (negative ones too if you allow them).
    ///   - value: Distinct values for distinct integers.
    ///   - areInIncreasingOrder: The store's key order, to check that listings are sorted; `nil` checks only
    ///     that pages are disjoint, complete and stable.
    ///   - versionRoles: For a store with ``ZDDM/StoreCapabilities/versions``, which roles to check.
    public init(
        makeStore: @escaping @Sendable () async throws -> Store,
        key: @escaping @Sendable (Int) -> Store.Key,
        value: @escaping @Sendable (Int) -> Store.Value,
        areInIncreasingOrder: (@Sendable (Store.Key, Store.Key) -> Bool)? = nil,
        versionRoles: StoreVersionRoles = [.assigns, .fence]
    ) {
        self.makeStore = makeStore
        self.key = key
        self.value = value
        self.areInIncreasingOrder = areInIncreasingOrder
        self.versionRoles = versionRoles
    }

    /// Runs every check.
    /// - Throws: ``StoreConformanceFailure`` listing every failed check, or the first unexpected error a store
    ///   threw.
    public func run() async throws {
        let failures = try await failures()
        if !failures.isEmpty {
            throw StoreConformanceFailure(failures: failures)
        }
    }

    /// Runs every check and returns the failures (empty when the store conforms).
    public func failures() async throws -> [Failure] {
        var failures: [Failure] = []
        func expect(_ condition: Bool, _ check: String, _ detail: @autoclosure () -> String) {
            if !condition { failures.append(Failure(check: check, detail: detail())) }
        }
        let k0 = key(0)
        let k1 = key(1)
        let v0 = value(0)
        let v1 = value(1)
        let v2 = value(2)

        // Basic reads and writes.
        do {
            let store = try await makeStore()
            expect(try await store.read(k0) == nil, "read-missing", "a key never written must read as nil")
            try await store.write(k0, v0)
            expect(try await store.read(k0) == .value(v0), "write-read", "a written value must be read back")
            try await store.write(k0, v1)
            expect(try await store.read(k0) == .value(v1), "write-overwrites", "a second write must replace the first")
            expect(try await store.read(k1) == nil, "keys-independent", "writing one key must not create another")
            try await store.delete(k0)
            expect(try await store.read(k0) == nil, "delete-removes-value", "a deleted key must read as nil")
            try await store.delete(k1)
            expect(try await store.read(k1) == nil, "delete-missing", "deleting a missing key is a no-op")
            try await store.write(k0, v0)
            try await store.invalidate(k0)
            expect(try await store.read(k0) == nil, "invalidate-value", "an invalidated key must read as nil")
        }

        let capabilities = try await makeStore().capabilities

        if capabilities.contains(.atomicInsertIfAbsent) {
            let store = try await makeStore()
            expect(try await store.insertIfAbsent(k0, v0), "insert-absent", "insert-if-absent must insert when absent")
            expect(try await store.read(k0) == .value(v0), "insert-absent", "the inserted value must be read back")
            expect(
                try await store.insertIfAbsent(k0, v1) == false,
                "insert-present",
                "insert-if-absent must report false over a value"
            )
            expect(try await store.read(k0) == .value(v0), "insert-present", "insert-if-absent must not overwrite")
        }

        if capabilities.contains(.tombstones) {
            let store = try await makeStore()
            try await store.writeTombstone(k0)
            expect(try await store.read(k0) == .tombstone, "tombstone-read", "a tombstone must be read as a tombstone")
            try await store.write(k1, v1)
            try await store.writeTombstone(k1)
            expect(try await store.read(k1) == .tombstone, "tombstone-replaces", "a tombstone must replace a value")
            if capabilities.contains(.atomicInsertIfAbsent) {
                expect(
                    try await store.insertIfAbsent(k0, v0) == false,
                    "insert-tombstone",
                    "insert-if-absent must report false over a tombstone"
                )
                expect(try await store.read(k0) == .tombstone, "insert-tombstone", "a tombstone must survive a fill")
            }
            try await store.write(k0, v2)
            expect(try await store.read(k0) == .value(v2), "write-over-tombstone", "a write must replace a tombstone")
            try await store.writeTombstone(k0)
            try await store.delete(k0)
            expect(try await store.read(k0) == nil, "delete-tombstone", "delete must remove a tombstone")
            try await store.writeTombstone(k1)
            try await store.invalidate(k1)
            expect(try await store.read(k1) == nil, "invalidate-tombstone", "invalidate must remove a tombstone")
        }

        if capabilities.contains(.atomicInsertIfAbsent) {
            // Many concurrent inserts of one key: exactly one wins, and its value stays.
            for round in 0..<5 {
                let store = try await makeStore()
                let target = key(10 + round)
                let winners = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                    for contender in 0..<16 {
                        group.addTask { (contender, try await store.insertIfAbsent(target, value(100 + contender))) }
                    }
                    var winners: [Int] = []
                    for try await (contender, inserted) in group where inserted { winners.append(contender) }
                    return winners
                }
                expect(winners.count == 1, "insert-atomic", "16 concurrent inserts: \(winners.count) reported success")
                if let winner = winners.first {
                    expect(
                        try await store.read(target) == .value(value(100 + winner)),
                        "insert-atomic",
                        "the stored value must be the winning insert's"
                    )
                }
            }
            // A write racing an insert-if-absent: the write's value always ends up stored.
            for round in 0..<20 {
                let store = try await makeStore()
                let target = key(20 + round)
                async let inserted = store.insertIfAbsent(target, v1)
                async let written: Void = store.write(target, v0)
                _ = try await (inserted, written)
                expect(
                    try await store.read(target) == .value(v0),
                    "insert-vs-write",
                    "an insert-if-absent racing a write must never overwrite the write"
                )
            }
        }

        if capabilities.contains(.atomicInsertIfAbsent), capabilities.contains(.tombstones) {
            // A tombstone racing an insert-if-absent: the tombstone always ends up stored.
            for round in 0..<20 {
                let store = try await makeStore()
                let target = key(40 + round)
                async let inserted = store.insertIfAbsent(target, v1)
                async let tombstoned: Void = store.writeTombstone(target)
                _ = try await (inserted, tombstoned)
                expect(
                    try await store.read(target) == .tombstone,
                    "insert-vs-tombstone",
                    "an insert-if-absent racing a tombstone must never replace the tombstone"
                )
            }
        }

        // Batches (native or the protocol's defaults).
        do {
            let store = try await makeStore()
            try await store.write(k0, v0)
            if capabilities.contains(.tombstones) { try await store.writeTombstone(k1) }
            let found = try await store.readMany([k0, k1, key(2)])
            expect(found[k0] == .value(v0), "read-many", "readMany must return stored values")
            expect(found[key(2)] == nil, "read-many", "readMany must leave out missing keys")
            if capabilities.contains(.tombstones) {
                expect(found[k1] == .tombstone, "read-many", "readMany must return tombstones")
            }
            if capabilities.contains(.atomicInsertIfAbsent) {
                let entries = (0..<5).map { (key: key($0), value: value(50 + $0)) }
                let inserted = try await store.insertManyIfAbsent(entries)
                var expected = Set((2..<5).map { key($0) })
                if !capabilities.contains(.tombstones) { expected.insert(k1) }
                expect(inserted == expected, "insert-many", "insertManyIfAbsent must insert exactly the absent keys")
                expect(try await store.read(k0) == .value(v0), "insert-many", "insertManyIfAbsent must not overwrite")
                if capabilities.contains(.tombstones) {
                    expect(try await store.read(k1) == .tombstone, "insert-many", "it must not replace a tombstone")
                }
                expect(try await store.read(key(3)) == .value(value(53)), "insert-many", "inserted values must be read")
                expect(try await store.insertManyIfAbsent([]).isEmpty, "insert-many", "an empty batch inserts nothing")
            }
        }

        // Batches larger than one SQL statement's chunk, and a batch insert racing a tombstone.
        if capabilities.contains(.atomicInsertIfAbsent) {
            let store = try await makeStore()
            let count = 1_203
            try await store.write(key(7), v0)
            let entries = (0..<count).map { (key: key($0), value: value(10_000 + $0)) }
            let inserted = try await store.insertManyIfAbsent(entries)
            expect(inserted.count == count - 1, "large-batch", "\(inserted.count) of \(count - 1) absent keys inserted")
            expect(!inserted.contains(key(7)), "large-batch", "a present key must not be reported inserted")
            let found = try await store.readMany((0..<count).map(key))
            expect(found.count == count, "large-batch", "readMany found \(found.count) of \(count) keys")
            expect(found[key(1_202)] == .value(value(11_202)), "large-batch", "the last key's value must be read back")
            expect(found[key(7)] == .value(v0), "large-batch", "the present key keeps its value")
            if capabilities.contains(.tombstones) {
                for round in 0..<10 {
                    let store = try await makeStore()
                    let target = key(60 + round)
                    let batch = [(key: target, value: v1), (key: key(90 + round), value: v2)]
                    async let inserted = store.insertManyIfAbsent(batch)
                    async let tombstoned: Void = store.writeTombstone(target)
                    _ = try await (inserted, tombstoned)
                    expect(
                        try await store.read(target) == .tombstone,
                        "batch-vs-tombstone",
                        "a batch insert racing a tombstone must never replace the tombstone"
                    )
                }
            }
        }

        // Many tasks writing different keys.
        do {
            let store = try await makeStore()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<40 {
                    group.addTask { try await store.write(key(index), value(index)) }
                }
                try await group.waitForAll()
            }
            var missing = 0
            for index in 0..<40 where try await store.read(key(index)) != .value(value(index)) { missing += 1 }
            expect(missing == 0, "concurrent-writes", "\(missing) of 40 concurrent writes were not read back")
        }

        if capabilities.contains(.orderedKeys) {
            let store = try await makeStore()
            var expected: Set<Store.Key> = []
            for index in 0..<25 {
                try await store.write(key(index), value(index))
                expected.insert(key(index))
            }
            try await store.delete(key(3))
            expected.remove(key(3))
            if capabilities.contains(.tombstones) {
                try await store.writeTombstone(key(4))
                expected.remove(key(4))
            }
            var listed: [Store.Key] = []
            var cursor: Store.Key?
            var pages = 0
            while pages < 100 {
                pages += 1
                let page = try await store.keys(after: cursor, limit: 7)
                listed += page
                if page.count < 7 { break }
                cursor = page.last
            }
            expect(
                listed.count == expected.count,
                "list-complete",
                "listed \(listed.count) keys, expected \(expected.count)"
            )
            expect(Set(listed) == expected, "list-complete", "listing must return exactly the keys holding values")
            if let areInIncreasingOrder {
                let sorted = zip(listed, listed.dropFirst()).allSatisfy { areInIncreasingOrder($0, $1) }
                expect(sorted, "list-order", "keys must be listed in increasing order")
            }
            var again: [Store.Key] = []
            cursor = nil
            for _ in 0..<100 {
                let page = try await store.keys(after: cursor, limit: 10)
                again += page
                if page.count < 10 { break }
                cursor = page.last
            }
            expect(again == listed, "list-stable", "two listings with other page sizes must give the same order")
            // A store that can compare keys must agree with its own listing (chunked backfills stop chunks by it).
            let pairs = zip(listed, listed.dropFirst())
            if let first = listed.first, store.listsKey(first, before: first) != nil {
                expect(
                    pairs.allSatisfy {
                        store.listsKey($0, before: $1) == true && store.listsKey($1, before: $0) == false
                    },
                    "list-compare",
                    "listsKey(_:before:) must agree with the listing order"
                )
                expect(store.listsKey(first, before: first) == false, "list-compare", "no key is listed before itself")
            }
            if let last = listed.last {
                expect(try await store.keys(after: last, limit: 5).isEmpty, "list-end", "nothing follows the last key")
            }
            var rejected = false
            do { _ = try await store.keys(after: nil, limit: 0) } catch { rejected = true }
            expect(rejected, "list-limit", "a limit below 1 must be rejected")
        }
        if capabilities.contains(.versions) {
            failures += try await versionFailures(capabilities)
        }
        return failures
    }

    var factory: @Sendable () async throws -> Store { makeStore }
    var makeKey: @Sendable (Int) -> Store.Key { key }
    var makeValue: @Sendable (Int) -> Store.Value { value }
}

/// Which of a versioned store's roles to check. An SQL table with change capture assigns versions (Old's role)
/// and a table without it keeps the versions it is given (New's role), so such stores run the suite once per
/// role; the in-memory store plays both.
public struct StoreVersionRoles: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Old's role: every change makes the key's version larger (``ZDDM/KeyValueStore/writeVersioned(_:_:)``).
    public static let assigns = StoreVersionRoles(rawValue: 1 << 0)
    /// New's role: records are stored only over older versions (``ZDDM/KeyValueStore/writeIfNewer(_:_:)``).
    public static let fence = StoreVersionRoles(rawValue: 1 << 1)
}

/// The checks of a ``StoreConformanceSuite`` that a store failed.
public struct StoreConformanceFailure: Error, Sendable, CustomStringConvertible {
    /// One failed check.
    public struct Check: Sendable, CustomStringConvertible {
        /// The check's name.
        public var check: String
        /// What was wrong.
        public var detail: String
        public var description: String { "\(check): \(detail)" }
    }

    /// Every failed check.
    public var failures: [Check]

    public var description: String {
        "\(failures.count) conformance check(s) failed:\n" + failures.map { "- \($0)" }.joined(separator: "\n")
    }
}
