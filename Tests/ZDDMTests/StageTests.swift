import MetricsTestKit
import Synchronization
import Testing
import ZDDM
import ZDDMTesting

@Suite("Stages")
struct StageTests {
    @Test("Allowed transitions, and the refused ones named with what they need")
    func transitions() async throws {
        let h = try Harness(rate: 1)
        for stage in [MigrationStage.off, .dualwrite, .shadow, .live, .off, .live] {
            try h.gate.setStage(stage)
            #expect(h.gate.stage == stage)
        }
        let refused = try #require(throws: ZDDMError.self) { try h.gate.setStage(.rampdown) }
        #expect(refused.code == .refusedTransition)
        #expect(refused.description.contains("clean verify"))
        #expect(h.gate.stage == .live)
        #expect(throws: ZDDMError.self) { try h.gate.setStage(.complete) }

        // A clean verify at rate 1 permits rampdown ...
        try await h.oldBase.write("a", "1")
        _ = try await h.proxy.read("a")
        #expect(try await Verify(proxy: h.proxy).verify().mismatches == 0)
        #expect(h.gate.isRampdownPermitted)
        // ... until something can leave New behind again.
        h.gate.setKillswitch(false)  // already off: changes nothing
        #expect(h.gate.isRampdownPermitted)
        h.gate.setKillswitch(true)
        h.gate.setKillswitch(false)
        #expect(!h.gate.isRampdownPermitted)
        #expect(try await Verify(proxy: h.proxy).verify().mismatches == 0)
        try h.gate.setStage(.rampdown)
        #expect(throws: ZDDMError.self) { try h.gate.setRate(0.5) }
        try h.gate.setStage(.live)  // rollback: Old missed nothing
        #expect(try await Verify(proxy: h.proxy).verify().mismatches == 0)
        try h.gate.setStage(.rampdown)
        try h.gate.setStage(.complete)
        let back = try #require(throws: ZDDMError.self) { try h.gate.setStage(.rampdown) }
        #expect(back.description.contains("no longer written"))
        #expect(throws: ZDDMError.self) { try TrafficGate(stage: .complete) }
    }

    @Test("A New failure after a clean verify withdraws the rampdown permit")
    func permitWithdrawn() async throws {
        let h = try Harness(rate: 1)
        _ = try await Verify(proxy: h.proxy).verify()
        #expect(h.gate.isRampdownPermitted)
        h.new.setOutage(true)
        try await h.proxy.write("k", "v")
        h.new.setOutage(false)
        #expect(!h.gate.isRampdownPermitted)
        await h.proxy.repairUnsafeKeys()
        var repair = VerifyOptions()
        repair.repair = true
        #expect(try await Verify(proxy: h.proxy, options: repair).verify().mismatches == 1)  // k: missing in New
        #expect(!h.gate.isRampdownPermitted)  // a pass that found mismatches is not clean
        #expect(try await Verify(proxy: h.proxy).verify().mismatches == 0)
        #expect(h.gate.isRampdownPermitted)
    }

    @Test("off: Old only, New untouched; a key New may hold is remembered and never served stale later")
    func off() async throws {
        let h = try Harness(rate: 1)
        try await h.oldBase.write("k", "v0")
        _ = try await h.proxy.read("k")
        try h.gate.setStage(.off)
        let calls = h.new.calls
        try await h.proxy.write("k", "v1")
        #expect(try await h.proxy.read("k") == "v1")
        try await h.proxy.delete("gone")
        #expect(h.new.calls == calls)
        try h.gate.setStage(.live)
        #expect(try await h.proxy.read("k") == "v1")
        #expect(try await h.proxy.read("k") == "v1")
    }

    @Test("dualwrite: reads from Old only, writes to both")
    func dualwrite() async throws {
        let h = try Harness(rate: 1)
        try h.gate.setStage(.dualwrite)
        try await h.oldBase.write("a", "old")
        try await h.newBase.write("a", "new-stale")
        #expect(try await h.proxy.read("a") == "old")
        #expect(h.new.calls == 0)
        try await h.proxy.write("b", "2")
        try await h.proxy.delete("a")
        #expect(try await h.newRecord("b") == .value("2"))
        #expect(try await h.newRecord("a") == .tombstone)
    }

    @Test("shadow: the caller gets Old's value without waiting for New; mismatches are published and repaired")
    func shadow() async throws {
        let metrics = TestMetrics()
        let published = Mutex<[ShadowMismatch]>([])
        let old = InMemoryStore<String, String>(["same": "1", "differs": "old", "tombstoned": "t"])
        let newBase = InMemoryStore<String, String>(["same": "1", "differs": "new"])
        try await newBase.writeTombstone("tombstoned")
        try await newBase.write("extra", "x")
        let new = FaultInjectingStore(newBase)
        let gate = try TrafficGate(rate: 1, stage: .shadow)
        let proxy = try MigrationProxy(
            name: "shadow",
            old: old,
            new: new,
            gate: gate,
            metricsFactory: metrics,
            shadow: ShadowComparison(
                clean: { "len \($0.count)" },
                publish: { m in published.withLock { $0.append(m) } }
            )
        )
        try await withBackgroundWork(of: proxy) {
            // New is held: the reads must still return.
            let release = AsyncSignal()
            new.setHooks(before: { _, _ in await release.wait() }, after: nil)
            #expect(try await proxy.read("same") == "1")
            #expect(try await proxy.read("differs") == "old")
            #expect(try await proxy.read("tombstoned") == "t")
            #expect(try await proxy.read("extra") == nil)
            #expect(try await proxy.read("never") == nil)
            #expect(published.withLock { $0.isEmpty })
            release.signal()
            new.setHooks(before: nil, after: nil)
            await proxy.waitForBackgroundWork()
            let mismatches = published.withLock { $0 }
            #expect(Set(mismatches.map(\.key)) == ["differs", "tombstoned", "extra"])
            let differs = try #require(mismatches.first { $0.key == "differs" })
            #expect(differs.kind == .differentValue)
            #expect(differs.old == "len 3" && differs.new == "len 3")
            #expect(mismatches.first { $0.key == "tombstoned" }?.kind == .tombstoneInNew)
            #expect(mismatches.first { $0.key == "extra" }?.kind == .extraInNew)
            func results(_ result: String) -> Int64 {
                metrics.counterTotal(
                    label: "zddm_shadow_comparisons_total",
                    dimensions: [("migration", "shadow"), ("result", result)]
                )
            }
            #expect(results("mismatch") == 3)
            #expect(results("match") == 1)  // "same"
            #expect(results("new_missing") == 1)  // "never": New has nothing to compare
            // Repaired: New no longer holds the mismatched values.
            #expect(try await newBase.read("differs") == nil)
            #expect(try await newBase.read("extra") == nil)
            #expect(try await newBase.read("same") == .value("1"))
            #expect(
                try metrics.expectTimer("zddm_shadow_read_duration", [("migration", "shadow"), ("store", "new")]).values
                    .count == 5
            )
        }
    }

    @Test("shadow: sampling is deterministic per key; errors are compared (both failing alike is a match)")
    func shadowSamplingAndErrors() async throws {
        func sampledKeys() async throws -> Set<String> {
            let published = Mutex<[ShadowMismatch]>([])
            let keys = (0..<400).map { "k\($0)" }
            let old = InMemoryStore<String, String>(Dictionary(uniqueKeysWithValues: keys.map { ($0, "old") }))
            let new = InMemoryStore<String, String>(Dictionary(uniqueKeysWithValues: keys.map { ($0, "new") }))
            let proxy = try MigrationProxy(
                name: "s",
                old: old,
                new: new,
                gate: TrafficGate(rate: 1, stage: .shadow),
                shadow: ShadowComparison(
                    sampleRatio: 0.25,
                    publish: { m in published.withLock { $0.append(m) } },
                    maxInFlight: 1_000,
                    repairMismatches: false
                )
            )
            try await withBackgroundWork(of: proxy) {
                for key in keys { _ = try await proxy.read(key) }
            }
            return Set(published.withLock { $0 }.map(\.key))
        }
        let first = try await sampledKeys()
        let second = try await sampledKeys()
        #expect(first == second)
        #expect(first.count > 60 && first.count < 140, "\(first.count) of 400 sampled at 0.25")

        let metrics = TestMetrics()
        let published = Mutex<[ShadowMismatch]>([])
        let old = FaultInjectingStore(InMemoryStore<String, String>())
        let new = FaultInjectingStore(InMemoryStore<String, String>())
        let proxy = try MigrationProxy(
            name: "e",
            old: old,
            new: new,
            gate: TrafficGate(rate: 1, stage: .shadow),
            metricsFactory: metrics,
            shadow: ShadowComparison(publish: { m in published.withLock { $0.append(m) } })
        )
        try await withBackgroundWork(of: proxy) {
            old.setOutage(true)
            new.setOutage(true)
            await #expect(throws: ZDDMError.self) { try await proxy.read("k") }
            await proxy.waitForBackgroundWork()  // the comparison runs after the call returned
            new.setOutage(false)
            await #expect(throws: ZDDMError.self) { try await proxy.read("k") }
        }
        #expect(published.withLock { $0.map(\.kind) } == [.differentOutcome])
        #expect(
            metrics.counterTotal(
                label: "zddm_shadow_comparisons_total",
                dimensions: [("migration", "e"), ("result", "match")]
            )
                == 1
        )
    }

    @Test("rampdown: New first and authoritative; Old still written; an Old failure blocks the rollback")
    func rampdown() async throws {
        let h = try Harness(rate: 1)
        _ = try await Verify(proxy: h.proxy).verify()
        try h.gate.setStage(.rampdown)
        try await h.oldBase.write("a", "1")  // a key New never received
        #expect(try await h.proxy.read("a") == "1")  // a miss in New is filled from Old
        #expect(try await h.newRecord("a") == .value("1"))
        try await h.proxy.write("a", "2")
        #expect(try await h.oldRecord("a") == .value("2"))
        #expect(try await h.newRecord("a") == .value("2"))
        h.new.setOutage(true)
        let error = await #expect(throws: ZDDMError.self) { try await h.proxy.write("a", "3") }
        #expect(error?.role == .new)
        #expect(try await h.oldRecord("a") == .value("2"))  // New failed first: Old untouched
        await #expect(throws: ZDDMError.self) { _ = try await h.proxy.read("a") }
        h.new.setOutage(false)
        h.old.setOutage(true)
        try await h.proxy.write("a", "4")  // Old's failure does not fail the call
        try await h.proxy.delete("b")
        h.old.setOutage(false)
        #expect(h.gate.oldWritesMissed == 2)
        let rollback = try #require(throws: ZDDMError.self) { try h.gate.setStage(.live) }
        #expect(rollback.description.contains("2 writes to Old failed"))
        #expect(try await h.proxy.read("a") == "4")
    }

    @Test("complete: New only; Old is never touched")
    func complete() async throws {
        let h = try Harness(rate: 1)
        _ = try await Verify(proxy: h.proxy).verify()
        try h.gate.setStage(.rampdown)
        try h.gate.setStage(.complete)
        let oldCalls = h.old.calls
        try await h.proxy.write("a", "1")
        #expect(try await h.proxy.read("a") == "1")
        #expect(try await h.proxy.read("missing") == nil)
        try await h.proxy.delete("a")
        #expect(try await h.proxy.read("a") == nil)
        #expect(h.old.calls == oldCalls)
    }
}
