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
