import Foundation
import MetricsTestKit
import Testing
import ZDDM
import ZDDMTesting

@Suite("Verify")
struct VerifyTests {
    @Test("Finds each kind of mismatch, samples them, counts them in metrics, and repairs them from Old")
    func findsAndRepairs() async throws {
        let old = InMemoryStore<String, String>(["missing": "m", "same": "s", "different": "old", "tombstoned": "t"])
        let new = InMemoryStore<String, String>()
        try await new.write("same", "s")
        try await new.write("different", "stale")
        try await new.writeTombstone("tombstoned")
        try await new.write("extra", "x")
        try await new.writeTombstone("deleted-everywhere")
        let metrics = TestMetrics()
        let proxy = try MigrationProxy(
            name: "v",
            old: old,
            new: new,
            gate: TrafficGate(rate: 1),
            metricsFactory: metrics
        )
        // New was written directly here, so its versions are its own: only a deep pass compares the values.
        var deep = VerifyOptions()
        deep.deep = true
        let report = try await Verify(proxy: proxy, options: deep).verify()
        #expect(report.comparedByValue == 4 && report.comparedByVersion == 0)
        #expect(report.keysInOld == 4)
        #expect(report.keysInNew == 3)
        #expect(report.counts[.missingInNew] == 1)
        #expect(report.counts[.extraInNew] == 1)
        #expect(report.counts[.differentValue] == 1)
        #expect(report.counts[.tombstoneInNew] == 1)
        #expect(report.mismatches == 4)
        #expect(report.staleMismatches == 3)
        #expect(report.repaired == 0)
        #expect(Set(report.sample.map(\.key)) == ["missing", "different", "tombstoned", "extra"])
        #expect(
            metrics.counterTotal(
                label: "zddm_verify_mismatches_total",
                dimensions: [("migration", "v"), ("kind", "different_value")]
            ) == 1
        )
        #expect(try await new.read("different") == .value("stale"))  // without repair nothing changes

        var options = deep
        options.repair = true
        let repairing = try await Verify(proxy: proxy, options: options).verify()
        #expect(repairing.repaired == 4)
        let after = try await Verify(proxy: proxy, options: deep).verify()
        #expect(after.mismatches == 0)
        #expect(try await new.read("different") == .value("old"))
        #expect(try await new.read("tombstoned") == .value("t"))
        #expect(try await new.read("missing") == .value("m"))
        #expect(try await new.read("extra") == nil)
        #expect(try await new.read("deleted-everywhere") == .tombstone)
    }

    @Test("Keys the gate does not admit are not expected in New")
    func gateAware() async throws {
        let old = InMemoryStore<String, String>(Dictionary(uniqueKeysWithValues: (0..<100).map { ("k\($0)", "v") }))
        let gate = try TrafficGate(rate: 0)
        let proxy = try MigrationProxy(name: "v", old: old, new: InMemoryStore(), gate: gate)
        #expect(try await Verify(proxy: proxy).verify().mismatches == 0)
        try gate.setRate(1)
        #expect(try await Verify(proxy: proxy).verify().counts[.missingInNew] == 100)
    }

    @Test("The sample is bounded; counts are not; pages of any size see every key")
    func boundedSample() async throws {
        let old = InMemoryStore<Int64, Int>(Dictionary(uniqueKeysWithValues: (0..<250).map { (Int64($0), $0) }))
        let new = InMemoryStore<Int64, Int>(Dictionary(uniqueKeysWithValues: (0..<250).map { (Int64($0), -$0 - 1) }))
        let proxy = try MigrationProxy(name: "v", old: old, new: new, gate: TrafficGate(rate: 1))
        var options = VerifyOptions()
        options.sampleLimit = 5
        options.batchSize = 33
        options.deep = true
        let report = try await Verify(proxy: proxy, options: options).verify()
        #expect(report.counts[.differentValue] == 250)
        #expect(report.sample.count == 5)
        #expect(report.keysInOld == 250)
        #expect(report.keysInNew == 250)
    }

    @Test("A custom comparison decides what counts as equal")
    func customComparison() async throws {
        let old = InMemoryStore<String, String>(["a": "Hello"])
        let new = InMemoryStore<String, String>(["a": "hello"])
        let proxy = try MigrationProxy(name: "v", old: old, new: new, gate: TrafficGate(rate: 1))
        var deep = VerifyOptions()
        deep.deep = true
        #expect(try await Verify(proxy: proxy, options: deep).verify().mismatches == 1)
        let relaxed = try Verify(proxy: proxy, options: deep, equal: { $0.lowercased() == $1.lowercased() })
        #expect(try await relaxed.verify().mismatches == 0)
    }

    @Test("Bad options and stores that cannot list keys are refused")
    func refusals() throws {
        let unlisted = ClosureStore<String, String>(readValue: { _ in nil }, write: { _, _ in })
        let proxy = try MigrationProxy(name: "v", old: unlisted, new: InMemoryStore(), gate: TrafficGate(rate: 1))
        #expect(throws: ZDDMError.self) { try Verify(proxy: proxy) }
        #expect(throws: ZDDMError.self) { try Backfill(proxy: proxy, checkpoints: MemoryCheckpointStore<String>()) }
        let listed = try MigrationProxy(
            name: "v",
            old: InMemoryStore<String, String>(),
            new: InMemoryStore(),
            gate: TrafficGate(rate: 1)
        )
        var options = VerifyOptions()
        options.batchSize = 0
        #expect(throws: ZDDMError.self) { try Verify(proxy: listed, options: options) }
        var backfillOptions = BackfillOptions()
        backfillOptions.maxRowsPerSecond = 0
        #expect(throws: ZDDMError.self) {
            try Backfill(proxy: listed, checkpoints: MemoryCheckpointStore<String>(), options: backfillOptions)
        }
    }

    @Test("Reports and progress encode as JSON, mismatch kinds as object keys")
    func codable() async throws {
        let old = InMemoryStore<String, String>(["a": "1"])
        let new = InMemoryStore<String, String>(["a": "2"])
        let proxy = try MigrationProxy(name: "v", old: old, new: new, gate: TrafficGate(rate: 1))
        var deep = VerifyOptions()
        deep.deep = true
        let report = try await Verify(proxy: proxy, options: deep).verify()
        let json = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        #expect(json.contains("\"different_value\":1"))
        let decoded = try JSONDecoder().decode(VerifyReport<String>.self, from: Data(json.utf8))
        #expect(decoded.counts[.differentValue] == 1)
        #expect(decoded.sample.first?.key == "a")
        let progress = try await Backfill(proxy: proxy, checkpoints: MemoryCheckpointStore<String>()).runPass()
        let again = try JSONDecoder().decode(BackfillProgress.self, from: JSONEncoder().encode(progress))
        #expect(again.rowsScanned == progress.rowsScanned && again.finished)
    }
}

@Suite("Verify and repair converge")
struct VerifyConvergenceTests {
    func repairOptions() -> VerifyOptions {
        var options = VerifyOptions()
        options.repair = true
        return options
    }

    @Test("Keys the safety memory held back are repaired by one pass, which reports only what it did")
    func heldBackKeys() async throws {
        let h = try Harness()
        let keys = (0..<10).map { "k\($0)" }
        for key in keys { try await h.oldBase.write(key, "v0") }
        for key in keys { _ = try await h.proxy.read(key) }  // filled: New holds v0
        h.new.setFaults(.init(failureRate: 1, operations: [.write, .invalidate], appliedShare: 0))
        for key in keys { try await h.proxy.write(key, "v1") }  // New's steps fail: New is stale, keys unsafe
        #expect(h.proxy.unsafeKeyCount == 10)
        h.new.setFaults(.init())
        let report = try await Verify(proxy: h.proxy, options: repairOptions()).verify()
        #expect(report.mismatches == 10)
        #expect(report.repaired == 10)
        #expect(report.notRepaired == 0 && report.repairFailed == 0)
        #expect(h.proxy.unsafeKeyCount == 0)
        let again = try await Verify(proxy: h.proxy).verify()
        #expect(again.mismatches == 0)
        for key in keys { #expect(try await h.newRecord(key) == .value("v1")) }
        // Served by New again.
        let calls = h.old.calls
        for key in keys { #expect(try await h.proxy.read(key) == "v1") }
        #expect(h.old.calls == calls)
    }

    @Test(
        "A New that fails during the pass: the pass goes on past failed keys, counts them, and a later pass converges"
    )
    func failuresDuringThePass() async throws {
        let h = try Harness()
        let keys = (0..<60).map { "k\($0)" }
        for key in keys {
            try await h.oldBase.write(key, "new-\(key)")
            try await h.newBase.write(key, "stale")
        }
        h.new.setFaults(.init(failureRate: 0.3, operations: [.invalidate, .insertManyIfAbsent]))
        let first = try await Verify(proxy: h.proxy, options: repairOptions()).verify()
        #expect(first.mismatches == 60)
        #expect(first.repairFailed > 0)
        #expect(first.repaired + first.notRepaired + first.repairFailed == first.mismatches)
        h.new.setFaults(.init())
        let second = try await Verify(proxy: h.proxy, options: repairOptions()).verify()
        #expect(second.repaired == second.mismatches && second.repairFailed == 0)
        #expect(try await Verify(proxy: h.proxy).verify().mismatches == 0)
    }

    @Test("A degraded migration: one repair pass over a quiet migration leaves no mismatch")
    func degraded() async throws {
        let h = try Harness(maxUnsafeKeys: 2)
        let keys = (0..<8).map { "k\($0)" }
        for key in keys { try await h.oldBase.write(key, "v0") }
        for key in keys { _ = try await h.proxy.read(key) }
        h.new.setFaults(.init(failureRate: 1, operations: [.write, .invalidate], appliedShare: 0))
        for key in keys { try await h.proxy.write(key, "v1") }
        #expect(h.proxy.isDegraded)
        h.new.setFaults(.init())
        let report = try await Verify(proxy: h.proxy, options: repairOptions()).verify()
        #expect(report.repaired == report.mismatches)
        #expect(try await Verify(proxy: h.proxy).verify().mismatches == 0)
        h.proxy.resetAfterVerify(report)
        #expect(!h.proxy.isDegraded)
        for key in keys { #expect(try await h.proxy.read(key) == "v1") }
    }

    @Test(
        "By versions: finds each kind of mismatch reading values only where versions differ or a side lacks the key, and repairs through the fence"
    )
    func byVersions() async throws {
        let old = InMemoryStore<String, String>(captureChanges: true)
        for index in 0..<200 { _ = try await old.writeVersioned("k\(1_000 + index)", "v\(index)") }
        _ = try await old.writeVersioned("different", "new value")
        _ = try await old.writeVersioned("tombstoned", "t")
        _ = try await old.writeVersioned("missing", "m")
        _ = try await old.writeVersioned("gone", "g")
        _ = try await old.deleteVersioned("gone")
        let new = InMemoryStore<String, String>()
        let core = try MigrationCore(name: "vv", old: old, new: new, gate: TrafficGate(rate: 1))
        #expect(core.usesVersions)
        _ = try await Backfill(core: core, checkpoints: MemoryCheckpointStore<String>()).runPass()
        // New falls behind or goes wrong in each way, at versions below Old's.
        try await new.invalidate("different")
        _ = try await new.writeIfNewer("different", .value("old value", version: 0))
        try await new.invalidate("tombstoned")
        _ = try await new.writeIfNewer("tombstoned", .tombstone(version: 0))
        try await new.invalidate("missing")
        _ = try await new.writeIfNewer("extra", .value("x", version: 3))
        var options = VerifyOptions()
        options.batchSize = 16
        let report = try await Verify(core: core, options: options).verify()
        #expect(report.counts[.differentValue] == 1)
        #expect(report.counts[.tombstoneInNew] == 1)
        #expect(report.counts[.missingInNew] == 1)
        #expect(report.counts[.extraInNew] == 1)
        #expect(report.mismatches == 4)
        #expect(report.keysInOld == 203 && report.keysInNew == 202)
        // Values read only for the 4 suspects (each read twice, counted once); the rest by version.
        #expect(report.comparedByVersion >= 202)
        #expect(report.comparedByValue == 4)

        options.repair = true
        let repairing = try await Verify(core: core, options: options).verify()
        #expect(repairing.repaired == 4)
        let after = try await Verify(core: core, options: options).verify()
        #expect(after.mismatches == 0 && after.isClean)
        #expect(try await new.readVersioned("different") == old.readVersioned("different"))
        #expect(try await new.read("missing") == .value("m"))
        #expect(try await new.read("extra") == nil)

        // A deep pass compares every value instead.
        options.repair = false
        options.deep = true
        let deep = try await Verify(core: core, options: options).verify()
        #expect(deep.mismatches == 0 && deep.comparedByVersion == 0 && deep.comparedByValue == 203)
    }
}
