import MetricsTestKit
import Testing
import ZDDM
import ZDDMTesting

@Suite("Proxy: read, write and delete semantics")
struct ProxySemanticsTests {
    @Test("Delete removes from Old and leaves a tombstone in New; reads answer not-found without asking Old")
    func deleteTombstone() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v")
        #expect(try await h.proxy.read("k") == "v")
        try await h.proxy.delete("k")
        #expect(try await h.oldRecord("k") == nil)
        #expect(try await h.newRecord("k") == .tombstone)
        let oldCalls = h.old.calls
        #expect(try await h.proxy.read("k") == nil)
        #expect(h.old.calls == oldCalls)
        try await h.proxy.write("k", "again")
        #expect(try await h.proxy.read("k") == "again")
        #expect(try await h.newRecord("k") == .value("again"))
    }

    @Test("Old not-found is nil, not an error, and fills nothing")
    func notFound() async throws {
        let h = try Harness()
        #expect(try await h.proxy.read("missing") == nil)
        #expect(try await h.newRecord("missing") == nil)
    }

    @Test("Old's write failure fails the call, names Old and the operation, and leaves New untouched")
    func oldWriteFails() async throws {
        let h = try Harness()
        try await h.newBase.write("k", "v0")
        h.old.setOutage(true)
        let error = try await #require(throws: ZDDMError.self) { try await h.proxy.write("k", "secret-value") }
        #expect(error.code == .storeFailed)
        #expect(error.role == .old)
        #expect(error.operation == .write)
        #expect(error.underlying is InjectedFault)
        #expect(error.description.contains("Old store, write"))
        #expect(!error.description.contains("secret-value"))
        #expect(h.new.calls == 0)
        #expect(try await h.newRecord("k") == .value("v0"))
        let deleteError = try await #require(throws: ZDDMError.self) { try await h.proxy.delete("k") }
        #expect(deleteError.role == .old)
        #expect(deleteError.operation == .delete)
        let readError = try await #require(throws: ZDDMError.self) { try await h.proxy.read("absent") }
        #expect(readError.role == .old)
        #expect(readError.operation == .read)
    }

    @Test("An Old failure after Old applied the write keeps New's older copy from being served")
    func ambiguousOldFailure() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        #expect(try await h.proxy.read("k") == "v0")
        h.old.setFaults(.init(failureRate: 1, operations: [.write], appliedShare: 1))
        await #expect(throws: ZDDMError.self) { try await h.proxy.write("k", "v1") }
        h.old.setFaults(.init())
        #expect(try await h.oldRecord("k") == .value("v1"))
        #expect(try await h.proxy.read("k") == "v1")
        #expect(try await h.proxy.read("k") == "v1")
    }

    @Test("New's failures never fail a call, and never let New serve an older value afterwards")
    func newFailures() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        #expect(try await h.proxy.read("k") == "v0")
        #expect(try await h.newRecord("k") == .value("v0"))

        h.new.setOutage(true)
        try await h.proxy.write("k", "v1")
        #expect(try await h.oldRecord("k") == .value("v1"))
        #expect(try await h.proxy.read("k") == "v1")
        try await h.proxy.delete("gone")
        try await h.oldBase.write("other", "o")
        #expect(try await h.proxy.read("other") == "o")
        #expect(h.proxy.unsafeKeyCount >= 1)

        h.new.setOutage(false)
        #expect(try await h.newRecord("k") == .value("v0"))
        // The first read repairs New (invalidates the old copy) and answers from Old; later reads fill and hit.
        #expect(try await h.proxy.read("k") == "v1")
        #expect(try await h.proxy.read("k") == "v1")
        #expect(try await h.newRecord("k") == .value("v1"))
        #expect(try await h.proxy.read("gone") == nil)
        #expect(h.proxy.unsafeKeyCount == 0)
    }

    @Test("With versions and store calls in line: New's failures are counted, never fail a call, never serve old data")
    func newFailuresWithVersions() async throws {
        let metrics = TestMetrics()
        let h = try Harness(versions: true, metrics: metrics)
        func newFailures(_ operation: String) -> Int64 {
            metrics.counterTotal(
                label: "zddm_new_failures_total",
                dimensions: [("migration", "test"), ("operation", operation)]
            )
        }
        try await h.oldBase.write("k", "v0")
        #expect(try await h.proxy.read("k") == "v0")
        #expect(try await h.newRecord("k") == .value("v0"))

        h.new.setOutage(true)
        // A read of New that fails falls back to Old; a write whose New step fails succeeds and marks the key.
        #expect(try await h.proxy.read("k") == "v0")
        #expect(newFailures("read") == 1)
        try await h.proxy.write("k", "v1")
        #expect(try await h.oldRecord("k") == .value("v1"))
        #expect(newFailures("write_if_newer") == 1)
        #expect(h.proxy.unsafeKeyCount == 1)
        #expect(try await h.proxy.read("k") == "v1")

        h.new.setOutage(false)
        #expect(try await h.newRecord("k") == .value("v0"))
        // The next read repairs New from Old through the fence and answers from Old; later reads hit New.
        #expect(try await h.proxy.read("k") == "v1")
        #expect(try await h.newRecord("k") == .value("v1"))
        #expect(try await h.proxy.read("k") == "v1")
        #expect(h.proxy.unsafeKeyCount == 0)
        // An Old failure is the caller's, named, and New is not touched.
        h.old.setOutage(true)
        await #expect(throws: ZDDMError.self) { try await h.proxy.write("k", "v2") }
        #expect(try await h.newRecord("k") == .value("v1"))
    }

    @Test("A failed tombstone write keeps the deleted value from being served")
    func newTombstoneFails() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        #expect(try await h.proxy.read("k") == "v0")
        h.new.setFaults(.init(failureRate: 1, operations: [.writeTombstone], appliedShare: 0))
        try await h.proxy.delete("k")
        h.new.setFaults(.init())
        #expect(try await h.newRecord("k") == .value("v0"))
        #expect(try await h.proxy.read("k") == nil)
        #expect(try await h.proxy.read("k") == nil)
    }

    @Test("Lowering the rate: writes to keys New may hold invalidate them, so raising it again serves fresh data")
    func rampDown() async throws {
        let h = try Harness(rate: 1)
        for index in 0..<50 { try await h.oldBase.write("k\(index)", "v0") }
        for index in 0..<50 { _ = try await h.proxy.read("k\(index)") }
        try h.gate.setRate(0)
        #expect(h.gate.highWaterRate == 1)
        for index in 0..<50 { try await h.proxy.write("k\(index)", "v1") }
        for index in 0..<50 { #expect(try await h.newRecord("k\(index)") == nil) }
        try h.gate.setRate(1)
        for index in 0..<50 { #expect(try await h.proxy.read("k\(index)") == "v1") }
    }

    @Test("Keys the gate never admitted are written to Old only, without touching New")
    func neverAdmitted() async throws {
        let h = try Harness(rate: 0)
        try await h.proxy.write("k", "v")
        try await h.proxy.delete("k2")
        #expect(try await h.proxy.read("k") == "v")
        #expect(h.new.calls == 0)
    }

    @Test("Killswitch: New untouched while on; keys written meanwhile are never served stale when it is off")
    func killswitch() async throws {
        let h = try Harness()
        for index in 0..<20 { try await h.oldBase.write("k\(index)", "v0") }
        for index in 0..<20 { _ = try await h.proxy.read("k\(index)") }
        h.proxy.disable()
        let newCalls = h.new.calls
        for index in 0..<10 { try await h.proxy.write("k\(index)", "v1") }
        try await h.proxy.delete("k10")
        for index in 0..<20 { _ = try await h.proxy.read("k\(index)") }
        #expect(h.new.calls == newCalls)
        #expect(h.proxy.unsafeKeyCount == 11)
        h.proxy.enable()
        for index in 0..<10 { #expect(try await h.proxy.read("k\(index)") == "v1") }
        #expect(try await h.proxy.read("k10") == nil)
        for index in 11..<20 { #expect(try await h.proxy.read("k\(index)") == "v0") }
        #expect(h.proxy.unsafeKeyCount == 0)
    }

    @Test("Past the bound of remembered keys the proxy degrades to Old for every read until reset after verify")
    func overflow() async throws {
        let h = try Harness(maxUnsafeKeys: 3)
        for index in 0..<10 { try await h.oldBase.write("k\(index)", "v0") }
        for index in 0..<10 { _ = try await h.proxy.read("k\(index)") }
        h.proxy.disable()
        for index in 0..<10 { try await h.proxy.write("k\(index)", "v1") }
        #expect(h.proxy.isDegraded)
        #expect(h.proxy.unsafeKeyCount == 3)
        h.proxy.enable()
        let newCalls = h.new.calls
        for index in 0..<10 { #expect(try await h.proxy.read("k\(index)") == "v1") }
        #expect(h.new.calls == newCalls)
        // Writes still reach New while degraded (the three remembered keys are invalidated on the way out).
        for index in 0..<10 { try await h.proxy.write("k\(index)", "v2") }
        var upserted = 0
        for index in 0..<10 {
            let record = try await h.newRecord("k\(index)")
            #expect(record == .value("v2") || record == nil)
            if record == .value("v2") { upserted += 1 }
        }
        #expect(upserted == 7)
        h.proxy.resetAfterVerify()
        #expect(!h.proxy.isDegraded)
        #expect(h.proxy.unsafeKeyCount == 0)
        for index in 0..<10 { #expect(try await h.proxy.read("k\(index)") == "v2") }
        #expect(h.new.calls > newCalls + 10)
    }

    @Test("repairUnsafeKeys() clears keys left unsafe by the killswitch without waiting for reads")
    func explicitRepair() async throws {
        let h = try Harness()
        for index in 0..<5 { try await h.oldBase.write("k\(index)", "v0") }
        for index in 0..<5 { _ = try await h.proxy.read("k\(index)") }
        h.proxy.disable()
        for index in 0..<5 { try await h.proxy.write("k\(index)", "v1") }
        h.proxy.enable()
        #expect(await h.proxy.repairUnsafeKeys() == 5)
        #expect(h.proxy.unsafeKeyCount == 0)
        for index in 0..<5 { #expect(try await h.newRecord("k\(index)") == nil) }
    }

    @Test("A New store without atomic insert-if-absent or tombstones is refused, by name")
    func capabilities() throws {
        let readOnly = ClosureStore<String, String>(readValue: { _ in nil }, write: { _, _ in })
        let error = try #require(throws: ZDDMError.self) {
            try MigrationProxy(name: "m", old: readOnly, new: readOnly, gate: TrafficGate())
        }
        #expect(error.code == .unsupported)
        #expect(error.description.contains("atomic insert-if-absent"))
        #expect(error.description.contains("tombstones"))
        #expect(throws: ZDDMError.self) {
            try MigrationProxy(name: "", old: MemoryStore(), new: MemoryStore(), gate: TrafficGate())
        }
        #expect(throws: ZDDMError.self) {
            try MigrationProxy(
                name: "m",
                old: MemoryStore(),
                new: MemoryStore(),
                gate: TrafficGate(),
                options: .init(maxUnsafeKeys: 0)
            )
        }
    }
}
