import Testing
import ZDDM
import ZDDMTesting

/// Ports of every scenario in the original ZDDM's C++ (ProxyTest.cpp, InMemoryMigrationTest.cpp) and Erlang
/// (zddm_memory_migration_test.erl) suites.
@Suite("Proxy: the original's scenarios")
struct ProxyPortTests {
    @Test("Enabled by default; disable; enable")
    func isEnabled() throws {
        let h = try Harness()
        #expect(h.proxy.isEnabled)
        h.proxy.disable()
        #expect(!h.proxy.isEnabled)
        #expect(h.gate.isKillswitchOn)
        h.proxy.enable()
        #expect(h.proxy.isEnabled)
    }

    @Test("Disabled: reads go to Old only")
    func readsOldWhenDisabled() async throws {
        let h = try Harness()
        try await h.oldBase.write("foo", "old_bar")
        try await h.newBase.write("foo", "bar")
        h.proxy.disable()
        let newCalls = h.new.calls
        #expect(try await h.proxy.read("foo") == "old_bar")
        #expect(h.new.calls == newCalls)
    }

    @Test("Disabled: writes go to Old only, and New's old copy is never served afterwards")
    func writesOldWhenDisabled() async throws {
        let h = try Harness()
        try await h.oldBase.write("foo", "bar")
        try await h.newBase.write("foo", "bar")
        h.proxy.disable()
        try await h.proxy.write("foo", "old")
        #expect(try await h.proxy.read("foo") == "old")
        #expect(h.new.calls == 0)
        #expect(try await h.newRecord("foo") == .value("bar"))
        h.proxy.enable()
        #expect(try await h.proxy.read("foo") == "old")
        #expect(try await h.proxy.read("foo") == "old")
        #expect(try await h.newRecord("foo") == .value("old"))
    }

    @Test("New has priority on read")
    func newFirst() async throws {
        let h = try Harness()
        try await h.oldBase.write("foo", "old_bar")
        try await h.newBase.write("foo", "bar")
        #expect(try await h.proxy.read("foo") == "bar")
        #expect(h.old.calls == 0)
    }

    @Test("A miss falls back to Old")
    func missReadsOld() async throws {
        let h = try Harness()
        try await h.oldBase.write("foo", "old_foo")
        #expect(try await h.proxy.read("foo") == "old_foo")
    }

    @Test("A miss reads Old and copies into New, which then has priority")
    func missCopies() async throws {
        let h = try Harness()
        try await h.oldBase.write("foo", "bar")
        #expect(try await h.proxy.read("foo") == "bar")
        #expect(try await h.newRecord("foo") == .value("bar"))
        let oldCalls = h.old.calls
        #expect(try await h.proxy.read("foo") == "bar")
        #expect(h.old.calls == oldCalls)
        try await h.newBase.write("foo", "new_bar")
        #expect(try await h.proxy.read("foo") == "new_bar")
    }

    @Test("A write goes to both stores")
    func doubleWrite() async throws {
        let h = try Harness()
        try await h.oldBase.write("foo", "bar")
        try await h.proxy.write("foo", "new_bar")
        #expect(try await h.oldRecord("foo") == .value("new_bar"))
        #expect(try await h.newRecord("foo") == .value("new_bar"))
    }

    @Test("In-memory migration of keys 0…100000 read through the proxy: New equals Old key by key")
    func inMemoryMigration() async throws {
        var random = SplitMix64(seed: 7)
        var values: [Int: Int] = [:]
        for key in 0...100_000 { values[key] = Int.random(in: 1...10_000, using: &random) }
        let old = InMemoryStore<Int, Int>(values)
        let new = InMemoryStore<Int, Int>()
        let proxy = try MigrationProxy(name: "memory", old: old, new: new, gate: TrafficGate(rate: 1))
        for key in 0...100_000 {
            let read = try await proxy.read(key)
            #expect(read == values[key])
        }
        let migrated = new.snapshot()
        #expect(migrated.count == values.count)
        var mismatches = 0
        for (key, value) in values where migrated[key] != .value(value) { mismatches += 1 }
        #expect(mismatches == 0)
    }
}
