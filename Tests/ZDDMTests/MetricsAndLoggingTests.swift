import InMemoryLogging
import Logging
import MetricsTestKit
import Testing
import ZDDM
import ZDDMTesting

@Suite("Metrics and logs")
struct MetricsAndLoggingTests {
    func reads(_ metrics: TestMetrics, _ source: String) -> Int64 {
        metrics.counterTotal(label: "zddm_reads_total", dimensions: [("migration", "test"), ("served_by", source)])
    }

    @Test("Reads are counted by where they were served; fills by outcome; all with the migration's name")
    func readCounters() async throws {
        let metrics = TestMetrics()
        let h = try Harness(rate: 1, metrics: metrics)
        try await h.oldBase.write("a", "1")
        _ = try await h.proxy.read("a")  // miss → Old, fill
        _ = try await h.proxy.read("a")  // New
        _ = try await h.proxy.read("a")  // New
        try h.gate.setRate(0)
        _ = try await h.proxy.read("a")  // gate closed → Old only
        #expect(reads(metrics, "new") == 2)
        #expect(reads(metrics, "old_after_miss") == 1)
        #expect(reads(metrics, "old_only") == 1)
        #expect(reads(metrics, "old_fallback") == 0)
        #expect(
            metrics.counterTotal(
                label: "zddm_fills_total",
                dimensions: [("migration", "test"), ("outcome", "inserted")]
            )
                == 1
        )
        // "Almost no reads reach Old any more" is the share of reads_total{served_by="new"}.
        let total = metrics.counterTotal(label: "zddm_reads_total")
        #expect(total == 4)
    }

    @Test("A fill that lost to a concurrent write is counted as lost")
    func lostFill() async throws {
        let metrics = TestMetrics()
        let h = try Harness(metrics: metrics)
        try await h.oldBase.write("k", "v0")
        let reached = AsyncSignal()
        let release = AsyncSignal()
        h.old.setHooks(before: nil) { operation, _ in
            guard operation == .read, !reached.isSignalled else { return }
            reached.signal()
            await release.wait()
        }
        let reader = Task { try await h.proxy.read("k") }
        await reached.wait()
        try await h.proxy.write("k", "v1")
        release.signal()
        _ = try await reader.value
        #expect(
            metrics.counterTotal(label: "zddm_fills_total", dimensions: [("migration", "test"), ("outcome", "lost")])
                == 1
        )
    }

    @Test("New failures are counted by operation, Old failures too; unsafe keys are a gauge")
    func failureCounters() async throws {
        let metrics = TestMetrics()
        let h = try Harness(metrics: metrics)
        try await h.oldBase.write("a", "1")
        h.new.setOutage(true)
        _ = try await h.proxy.read("a")
        try await h.proxy.write("a", "2")
        try await h.proxy.delete("b")
        h.new.setOutage(false)
        func newFailures(_ operation: String) -> Int64 {
            metrics.counterTotal(
                label: "zddm_new_failures_total",
                dimensions: [("migration", "test"), ("operation", operation)]
            )
        }
        #expect(newFailures("read") == 1)
        #expect(newFailures("write") == 1)
        #expect(newFailures("write_tombstone") == 1)
        #expect(reads(metrics, "old_fallback") == 1)
        let unsafe = try metrics.expectGauge("zddm_unsafe_keys", [("migration", "test")])
        #expect(unsafe.lastValue == 2)
        h.old.setOutage(true)
        await #expect(throws: ZDDMError.self) { try await h.proxy.write("a", "3") }
        #expect(
            metrics.counterTotal(
                label: "zddm_old_failures_total",
                dimensions: [("migration", "test"), ("operation", "write")]
            ) == 1
        )
    }

    @Test("The degraded gauge goes to 1 on overflow and back to 0 after reset")
    func degradedGauge() async throws {
        let metrics = TestMetrics()
        let h = try Harness(maxUnsafeKeys: 1, metrics: metrics)
        h.proxy.disable()
        try await h.proxy.write("a", "1")
        try await h.proxy.write("b", "1")
        let degraded = try metrics.expectGauge("zddm_degraded", [("migration", "test")])
        #expect(degraded.lastValue == 1)
        h.proxy.resetAfterVerify()
        #expect(degraded.lastValue == 0)
    }

    @Test("New failures are logged at debug with namespaced metadata and no values; overflow warns once")
    func logs() async throws {
        let handler = InMemoryLogHandler()
        var logger = Logger(label: "test", factory: { _ in handler })
        logger.logLevel = .trace
        let h = try Harness(maxUnsafeKeys: 1, logger: logger)
        try await h.oldBase.write("a", "row-value-123")
        h.new.setOutage(true)
        try await h.proxy.write("a", "secret-row-value")
        let failure = try #require(handler.entries.first { $0.level == .debug })
        #expect(failure.metadata["zddm.migration"] == "test")
        #expect(failure.metadata["zddm.store"] == "new")
        #expect(failure.metadata["zddm.operation"] == "write")
        h.new.setOutage(false)
        h.proxy.disable()
        for key in ["b", "c", "d"] { try await h.proxy.write(key, "x") }
        #expect(handler.entries.filter { $0.level == .warning }.count == 1)
        for entry in handler.entries {
            let text = "\(entry.message) \(entry.metadata)"
            #expect(!text.contains("secret-row-value"))
            #expect(!text.contains("row-value-123"))
        }
    }
}
