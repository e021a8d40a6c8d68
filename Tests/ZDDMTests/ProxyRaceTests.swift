import Synchronization
import Testing
import ZDDM
import ZDDMTesting

/// Races made deterministic with hooks and signals (no sleeps).
@Suite("Proxy: races")
struct ProxyRaceTests {
    /// Holds the first call of `operation` on `key` after the wrapped store ran it, until `release` is signalled.
    func holdAfter(
        _ store: Faulty,
        _ operation: StoreOperation,
        _ key: String,
        occurrence: Int = 1,
        reached: AsyncSignal,
        release: AsyncSignal
    ) {
        let counter = CallCounter()
        store.setHooks(before: nil) { op, k in
            guard op == operation, k == key, counter.next(op, k) == occurrence else { return }
            reached.signal()
            await release.wait()
        }
    }

    @Test("A fill loses to a concurrent write: New keeps the write, the fill is counted as lost")
    func fillLosesToWrite() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        let reached = AsyncSignal()
        let release = AsyncSignal()
        holdAfter(h.old, .read, "k", reached: reached, release: release)
        let reader = Task { try await h.proxy.read("k") }
        await reached.wait()  // the reader has read v0 from Old and not yet filled New
        try await h.proxy.write("k", "v1")
        release.signal()
        #expect(try await reader.value == "v0")  // concurrent with the write: either value is correct
        #expect(try await h.newRecord("k") == .value("v1"))
        #expect(try await h.proxy.read("k") == "v1")
        #expect(h.proxy.unsafeKeyCount == 0)
    }

    @Test("A fill loses to a concurrent delete: the tombstone stays")
    func fillLosesToDelete() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        let reached = AsyncSignal()
        let release = AsyncSignal()
        holdAfter(h.old, .read, "k", reached: reached, release: release)
        let reader = Task { try await h.proxy.read("k") }
        await reached.wait()
        try await h.proxy.delete("k")
        release.signal()
        _ = try await reader.value
        #expect(try await h.newRecord("k") == .tombstone)
        #expect(try await h.proxy.read("k") == nil)
    }

    @Test("A fill racing a write that only invalidates New (rate lowered meanwhile) never leaves New stale")
    func fillRacesInvalidation() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        let reached = AsyncSignal()
        let release = AsyncSignal()
        holdAfter(h.old, .read, "k", reached: reached, release: release)
        let reader = Task { try await h.proxy.read("k") }
        await reached.wait()
        try h.gate.setRate(0)
        try await h.proxy.write("k", "v1")  // Old only, then invalidate New (which holds nothing yet)
        #expect(h.proxy.unsafeKeyCount == 1)  // the fill in flight may still insert v0
        release.signal()
        #expect(try await reader.value == "v0")
        // The fill inserted v0, then, as the last operation on the key, invalidated it again.
        #expect(try await h.newRecord("k") == nil)
        #expect(h.proxy.unsafeKeyCount == 0)
        try h.gate.setRate(1)
        #expect(try await h.proxy.read("k") == "v1")
    }

    @Test("Two writes of one key reaching New in the other order never leave New stale, nor serve it")
    func writeWriteReordering() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        let firstAtOld = AsyncSignal()
        let releaseFirst = AsyncSignal()
        let firstAtNew = AsyncSignal()
        let releaseFirstNew = AsyncSignal()
        holdAfter(h.old, .write, "k", reached: firstAtOld, release: releaseFirst)
        // New sees W2's write first and W1's second.
        holdAfter(h.new, .write, "k", occurrence: 2, reached: firstAtNew, release: releaseFirstNew)

        let first = Task { try await h.proxy.write("k", "v1") }
        await firstAtOld.wait()  // Old = v1, W1 not yet at New
        try await h.proxy.write("k", "v2")  // Old = v2, New = v2; acknowledged
        releaseFirst.signal()
        await firstAtNew.wait()  // New = v1 now: older than Old's v2
        #expect(try await h.newRecord("k") == .value("v1"))
        #expect(try await h.proxy.read("k") == "v2")  // the stale copy is not served
        releaseFirstNew.signal()
        try await first.value
        let record = try await h.newRecord("k")
        #expect(record == nil || record == .value("v2"))
        #expect(try await h.proxy.read("k") == "v2")
        #expect(h.proxy.unsafeKeyCount == 0)
    }

    @Test("Cancelled between Old and New, with a New store that honours cancellation: marked, never served stale")
    func cancelledNewGivesUp() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        #expect(try await h.proxy.read("k") == "v0")
        let reached = AsyncSignal()
        let release = AsyncSignal()
        holdAfter(h.old, .write, "k", reached: reached, release: release)
        h.new.setHooks(before: { _, _ in try Task.checkCancellation() }, after: nil)
        let writer = Task { try await h.proxy.write("k", "v1") }
        await reached.wait()
        writer.cancel()
        release.signal()
        try await writer.value  // Old acknowledged: the call succeeds
        #expect(try await h.oldRecord("k") == .value("v1"))
        #expect(try await h.newRecord("k") == .value("v0"))
        #expect(h.proxy.unsafeKeyCount == 1)
        h.new.setHooks(before: nil, after: nil)
        #expect(try await h.proxy.read("k") == "v1")
        #expect(try await h.proxy.read("k") == "v1")
        #expect(try await h.newRecord("k") == .value("v1"))
    }

    @Test("Cancelled between Old and New, with a New store that ignores cancellation: New's step finishes")
    func cancelledNewFinishes() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        #expect(try await h.proxy.read("k") == "v0")
        let reached = AsyncSignal()
        let release = AsyncSignal()
        holdAfter(h.old, .write, "k", reached: reached, release: release)
        let writer = Task { try await h.proxy.write("k", "v1") }
        await reached.wait()
        writer.cancel()
        release.signal()
        try await writer.value
        #expect(try await h.newRecord("k") == .value("v1"))
        #expect(h.proxy.unsafeKeyCount == 0)
    }

    @Test("A key written while the killswitch was on, with a fill in flight from before, is never served stale")
    func killswitchDuringFill() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        let reached = AsyncSignal()
        let release = AsyncSignal()
        holdAfter(h.old, .read, "k", reached: reached, release: release)
        let reader = Task { try await h.proxy.read("k") }
        await reached.wait()
        h.proxy.disable()
        try await h.proxy.write("k", "v1")
        release.signal()
        _ = try await reader.value  // its fill inserts v0 into New
        #expect(try await h.newRecord("k") == .value("v0"))
        h.proxy.enable()
        #expect(try await h.proxy.read("k") == "v1")
        #expect(try await h.proxy.read("k") == "v1")
    }
}
