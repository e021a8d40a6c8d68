import Foundation
import Testing
import ZDDM
import ZDDMTesting

@Suite("Write-back, and resets tied to a verify pass")
struct WriteBackTests {
    func marker() -> FileWriteBackMarker {
        FileWriteBackMarker(url: FileManager.default.temporaryDirectory.appendingPathComponent("zddm-wb-\(UUID())"))
    }

    @Test("Writes return once Old has them; until New has them too, reads are answered by Old")
    func acknowledgesBeforeNew() async throws {
        let h = try Harness()
        try await withBackgroundWork(of: h.proxy) {
            try await h.oldBase.write("k", "v0")
            #expect(try await h.proxy.read("k") == "v0")
            let marker = marker()
            try await h.proxy.startWriteBack(maxPending: 10, marker: marker)
            #expect(try await marker.isSet())
            let release = AsyncSignal()
            h.new.setHooks(before: { operation, _ in if operation == .write { await release.wait() } }, after: nil)
            try await h.proxy.write("k", "v1")  // returns although New's write is held
            #expect(h.proxy.writeBackPendingCount == 1)
            #expect(try await h.newRecord("k") == .value("v0"))
            #expect(try await h.proxy.read("k") == "v1")
            release.signal()
            await h.proxy.drainWriteBack()
            #expect(try await h.newRecord("k") == .value("v1"))
            let oldCalls = h.old.calls
            #expect(try await h.proxy.read("k") == "v1")
            #expect(h.old.calls == oldCalls)  // served by New again
            try await h.proxy.stopWriteBack(marker: marker)
            #expect(try await !marker.isSet())
        }
    }

    @Test("A full queue makes writes wait for New (back-pressure), never drops them")
    func backPressure() async throws {
        let h = try Harness()
        let marker = marker()
        defer { try? FileManager.default.removeItem(at: marker.url) }
        try await withBackgroundWork(of: h.proxy) {
            try await h.proxy.startWriteBack(maxPending: 1, marker: marker)
            let release = AsyncSignal()
            h.new.setHooks(before: { operation, _ in if operation == .write { await release.wait() } }, after: nil)
            try await h.proxy.write("a", "1")  // queued
            let second = Task { try await h.proxy.write("b", "2") }  // the queue is full: it waits for New
            try await eventually { try await h.oldRecord("b") == .value("2") }
            #expect(h.proxy.writeBackPendingCount == 1)
            release.signal()
            try await second.value
            await h.proxy.drainWriteBack()
            #expect(try await h.newRecord("a") == .value("1"))
            #expect(try await h.newRecord("b") == .value("2"))
        }
    }

    @Test("A process that dies with New writes queued is noticed: the next one keeps New out until verified")
    func crashWithPendingWrites() async throws {
        let h = try Harness()
        try await h.oldBase.write("k", "v0")
        _ = try await h.proxy.read("k")
        let marker = marker()
        defer { try? FileManager.default.removeItem(at: marker.url) }
        try await withThrowingTaskGroup(of: Void.self) { background in
            background.addTask { try await h.proxy.run() }
            await h.proxy.core.waitUntilAcceptingBackgroundWork()
            try await h.proxy.startWriteBack(marker: marker)
            let never = AsyncSignal()
            h.new.setHooks(before: { operation, _ in if operation == .write { await never.wait() } }, after: nil)
            try await h.proxy.write("k", "v1")  // acknowledged; New's step never happens: the process "dies"
            #expect(try await h.newRecord("k") == .value("v0"))

            // A new process: same stores, empty safety memory.
            h.new.setHooks(before: nil, after: nil)
            let restarted = try MigrationProxy(
                name: "test",
                old: h.old,
                new: h.new,
                gate: h.gate,
                options: .init(usesVersions: false)
            )
            try await restarted.startWriteBack(marker: marker)
            #expect(restarted.isDegraded)
            #expect(try await restarted.read("k") == "v1")  // not New's stale v0
            var options = VerifyOptions()
            options.repair = true
            let report = try await Verify(proxy: restarted, options: options).verify()
            #expect(report.mismatches == 1)
            restarted.resetAfterVerify(report)
            #expect(!restarted.isDegraded)
            #expect(try await restarted.read("k") == "v1")
            never.signal()
            background.cancelAll()
        }
    }

    @Test("resetAfterVerify(report) forgets only what happened before the pass started")
    func resetCoversOnlyThePass() async throws {
        let h = try Harness()
        for key in ["a", "b"] { try await h.oldBase.write(key, "0") }
        for key in ["a", "b"] { _ = try await h.proxy.read(key) }
        h.proxy.disable()
        try await h.proxy.write("a", "1")  // unsafe before the pass
        let report = try await Verify(proxy: h.proxy).verify()
        try await h.proxy.write("b", "1")  // unsafe after the pass started
        #expect(h.proxy.unsafeKeyCount == 2)
        h.proxy.resetAfterVerify(report)
        #expect(h.proxy.unsafeKeyCount == 1)
        h.proxy.enable()
        #expect(try await h.proxy.read("b") == "1")
    }

    @Test("With New traffic off, verify reports but does not repair, and repairUnsafeKeys does nothing")
    func noRepairWhileOff() async throws {
        let h = try Harness()
        try await h.oldBase.write("a", "1")
        try await h.newBase.write("a", "stale")
        h.proxy.disable()
        let newCalls = h.new.calls
        var options = VerifyOptions()
        options.repair = true
        let report = try await Verify(proxy: h.proxy, options: options).verify()
        #expect(report.mismatches == 1)
        #expect(report.repaired == 0)
        #expect(report.notRepaired == 1)
        #expect(await h.proxy.repairUnsafeKeys() == 0)
        #expect(try await h.newRecord("a") == .value("stale"))
        _ = newCalls
    }

    @Test("A store's own error keeps its code when the proxy names the store")
    func keepsCode() async throws {
        let old = ClosureStore<String, String>(
            readValue: { _ in nil },
            write: { _, _ in throw ZDDMError(.invalidArgument, message: "value too large") }
        )
        let proxy = try MigrationProxy(name: "m", old: old, new: InMemoryStore(), gate: TrafficGate(rate: 1))
        let error = await #expect(throws: ZDDMError.self) { try await proxy.write("k", "v") }
        #expect(error?.code == .invalidArgument)
        #expect(error?.role == .old)
        #expect(error?.operation == .write)
    }

    @Test("Backfill restart runs a finished pass again")
    func restart() async throws {
        let old = InMemoryStore<String, String>(["a": "1"])
        let new = InMemoryStore<String, String>()
        let proxy = try MigrationProxy(name: "r", old: old, new: new, gate: TrafficGate(rate: 1))
        let checkpoints = MemoryCheckpointStore<String>()
        _ = try await Backfill(proxy: proxy, checkpoints: checkpoints).runPass()
        try await old.write("b", "2")
        #expect(try await Backfill(proxy: proxy, checkpoints: checkpoints).runPass().rowsScanned == 1)
        var options = BackfillOptions()
        options.restart = true
        let again = try await Backfill(proxy: proxy, checkpoints: checkpoints, options: options).runPass()
        #expect(again.rowsScanned == 2)
        #expect(try await new.read("b") == .value("2"))
    }
}
