import Testing
import ZDDM
import ZDDMTesting

@Suite("Stores: in-memory, closure-built, conformance")
struct StoreTests {
    @Test("The in-memory store passes the conformance suite (String, Int and byte keys)")
    func inMemoryConformance() async throws {
        try await StoreConformanceSuite(
            makeStore: { InMemoryStore<String, String>() },
            key: { "key-\($0)" },
            value: { "value-\($0)" },
            areInIncreasingOrder: { $0 < $1 }
        ).run()
        try await StoreConformanceSuite(
            makeStore: { InMemoryStore<Int64, [UInt8]>() },
            key: { Int64($0) - 50 },
            value: { Array("v\($0)".utf8) },
            areInIncreasingOrder: { $0 < $1 }
        ).run()
        try await StoreConformanceSuite(
            makeStore: { InMemoryStore<KeyBytes, Int>() },
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0xff]) },
            value: { $0 },
            areInIncreasingOrder: { $0 < $1 }
        ).run()
    }

    @Test("The in-memory store passes the conformance suite with one shard and with 4 096", arguments: [0, 12])
    func inMemoryShardCounts(shardBits: Int) async throws {
        try await StoreConformanceSuite(
            makeStore: { InMemoryStore<Int, String>(shardBits: shardBits) },
            key: { $0 * 7 - 300 },
            value: { "value-\($0)" },
            areInIncreasingOrder: { $0 < $1 }
        ).run()
    }

    @Test("Tasks writing the same keys at once: each key ends at its last write, with one version per change, in order")
    func inMemoryConcurrentWriters() async throws {
        let store = InMemoryStore<Int, Int>(captureChanges: true)
        let keys = 0..<200
        let rounds = 50
        // Four tasks each write every key `rounds` times; every write returns the version it made.
        let versions = try await withThrowingTaskGroup(of: [Int: [UInt64: Int]].self) { group in
            for task in 0..<4 {
                group.addTask {
                    var made: [Int: [UInt64: Int]] = [:]
                    for round in 0..<rounds {
                        for key in keys {
                            let value = task * 1_000 + round
                            made[key, default: [:]][try await store.writeVersioned(key, value)] = value
                        }
                    }
                    return made
                }
            }
            var all: [Int: [UInt64: Int]] = [:]
            for try await made in group {
                // Two writes that were given the same version would collide here, and the count below would miss.
                all.merge(made) { $0.merging($1) { first, _ in first } }
            }
            return all
        }
        let changes = try await store.capturedChanges(limit: .max)
        #expect(changes.count == keys.count * rounds * 4)
        var lastVersion: [Int: UInt64] = [:]
        for change in changes {
            // A key's entries are in the order of its versions, and each write made exactly one version.
            #expect(change.version == (lastVersion[change.key] ?? 0) + 1)
            lastVersion[change.key] = change.version
        }
        for key in keys {
            #expect(versions[key]?.keys.sorted() == Array(1...UInt64(rounds * 4)))
            let read = try await store.readVersioned(key)
            #expect(read?.version == UInt64(rounds * 4))
            // The write that made the highest version is the last one, and its value is the one stored.
            #expect(read?.value == versions[key]?[UInt64(rounds * 4)])
        }
        #expect(try await store.keys(after: nil, limit: 1_000) == Array(keys))
    }

    @Test("The conformance suite catches a store whose insert-if-absent overwrites")
    func suiteCatchesBrokenStore() async throws {
        let suite = StoreConformanceSuite(
            makeStore: {
                let base = InMemoryStore<String, String>()
                return ClosureStore<String, String>(
                    read: { try await base.read($0) },
                    write: { try await base.write($0, $1) },
                    delete: { try await base.delete($0) },
                    insertIfAbsent: { key, value in
                        // Check-then-write, and it ignores tombstones: exactly what a store must not do.
                        let existing = try await base.read(key)
                        await Task.yield()
                        if existing?.value != nil { return false }
                        try await base.write(key, value)
                        return true
                    },
                    writeTombstone: { try await base.writeTombstone($0) }
                )
            },
            key: { "k\($0)" },
            value: { "v\($0)" }
        )
        let failures = try await suite.failures().map(\.check)
        #expect(failures.contains("insert-tombstone"))
        #expect(failures.contains("insert-vs-write") || failures.contains("insert-atomic"))
        let error = await #expect(throws: StoreConformanceFailure.self) { try await suite.run() }
        #expect(error?.failures.map(\.check).contains("insert-tombstone") == true)
        #expect(error?.description.contains("conformance check(s) failed") == true)
    }

    @Test("A closure-built store declares what it was given, refuses the rest, and passes the suite when complete")
    func closureStore() async throws {
        let base = InMemoryStore<String, String>()
        let minimal = ClosureStore<String, String>(
            readValue: { try await base.read($0)?.value },
            write: { try await base.write($0, $1) }
        )
        #expect(minimal.capabilities.isEmpty)
        try await minimal.write("a", "1")
        #expect(try await minimal.read("a") == .value("1"))
        for operation in [
            { try await minimal.delete("a") },
            { try await minimal.writeTombstone("a") },
            { _ = try await minimal.insertIfAbsent("a", "x") },
            { _ = try await minimal.keys(after: nil, limit: 1) },
        ] as [@Sendable () async throws -> Void] {
            let error = await #expect(throws: ZDDMError.self) { try await operation() }
            #expect(error?.code == .unsupported)
        }

        try await StoreConformanceSuite(
            makeStore: {
                let base = InMemoryStore<String, String>()
                return ClosureStore<String, String>(
                    read: { try await base.read($0) },
                    write: { try await base.write($0, $1) },
                    delete: { try await base.delete($0) },
                    insertIfAbsent: { try await base.insertIfAbsent($0, $1) },
                    writeTombstone: { try await base.writeTombstone($0) },
                    keys: { try await base.keys(after: $0, limit: $1) }
                )
            },
            key: { "k\($0)" },
            value: { "v\($0)" },
            areInIncreasingOrder: { $0 < $1 }
        ).run()
    }

    @Test("A read-and-write closure store works as Old behind the proxy, like the original's create(Read, Write)")
    func closureStoreAsOld() async throws {
        let legacy = InMemoryStore<String, String>(["a": "1"])
        let old = ClosureStore<String, String>(
            readValue: { try await legacy.read($0)?.value },
            write: { try await legacy.write($0, $1) }
        )
        let new = InMemoryStore<String, String>()
        let proxy = try MigrationProxy(name: "legacy", old: old, new: new, gate: TrafficGate(rate: 1))
        #expect(try await proxy.read("a") == "1")
        #expect(try await new.read("a") == .value("1"))
        try await proxy.write("b", "2")
        #expect(try await legacy.read("b") == .value("2"))
        let error = await #expect(throws: ZDDMError.self) { try await proxy.delete("a") }
        #expect(error?.role == .old)
        #expect(error?.operation == .delete)
    }

    @Test("Fault injection: outages, failure rates and the applied/not-applied split behave as documented")
    func faultInjection() async throws {
        let base = InMemoryStore<String, String>()
        let store = FaultInjectingStore(base, faults: .init(failureRate: 1, appliedShare: 1), seed: 3)
        await #expect(throws: InjectedFault.self) { try await store.write("a", "1") }
        #expect(try await base.read("a") == .value("1"))
        store.setFaults(.init(failureRate: 1, appliedShare: 0))
        await #expect(throws: InjectedFault.self) { try await store.write("b", "1") }
        #expect(try await base.read("b") == nil)
        store.setFaults(.init())
        store.setOutage(true)
        await #expect(throws: InjectedFault.self) { _ = try await store.read("a") }
        store.setOutage(false)
        #expect(try await store.read("a") == .value("1"))
        #expect(store.injectedFailures == 3)
    }
}
