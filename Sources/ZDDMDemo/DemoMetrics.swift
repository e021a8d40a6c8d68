import CoreMetrics
import Synchronization

/// An in-memory metrics factory for the demo's dashboard: counters only, read back by label and dimensions.
///
/// The library never bootstraps the metrics system; the demo passes this factory to its proxy.
final class DemoMetrics: MetricsFactory {
    final class Count: CounterHandler {
        let value = Atomic<Int64>(0)
        func increment(by amount: Int64) { value.add(amount, ordering: .relaxed) }
        func reset() { value.store(0, ordering: .relaxed) }
    }

    private let counters = Mutex<[String: Count]>([:])

    private static func name(_ label: String, _ dimensions: [(String, String)]) -> String {
        ([label] + dimensions.sorted { $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }).joined(separator: "|")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        counters.withLock { counters in
            let name = Self.name(label, dimensions)
            if let existing = counters[name] { return existing }
            let created = Count()
            counters[name] = created
            return created
        }
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        NOOPMetricsHandler.instance
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        NOOPMetricsHandler.instance
    }

    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}

    /// The value of a counter, 0 when it was never created.
    func value(_ label: String, _ dimensions: [(String, String)]) -> Int64 {
        counters.withLock { $0[Self.name(label, dimensions)]?.value.load(ordering: .relaxed) ?? 0 }
    }

    /// The proxy's read counters for one migration.
    func reads(migration: String) -> ReadCounts {
        func count(_ source: String) -> Int64 {
            value("zddm_reads_total", [("migration", migration), ("served_by", source)])
        }
        return ReadCounts(
            new: count("new"),
            oldAfterMiss: count("old_after_miss"),
            oldOnly: count("old_only"),
            oldFallback: count("old_fallback")
        )
    }
}

/// Reads by where they were served.
struct ReadCounts: Sendable, Codable {
    var new: Int64 = 0
    var oldAfterMiss: Int64 = 0
    var oldOnly: Int64 = 0
    var oldFallback: Int64 = 0

    var total: Int64 { new + oldAfterMiss + oldOnly + oldFallback }

    /// The share served by New, in [0, 1]; 0 without reads.
    var shareServedByNew: Double { total == 0 ? 0 : Double(new) / Double(total) }

    static func - (lhs: ReadCounts, rhs: ReadCounts) -> ReadCounts {
        ReadCounts(
            new: lhs.new - rhs.new,
            oldAfterMiss: lhs.oldAfterMiss - rhs.oldAfterMiss,
            oldOnly: lhs.oldOnly - rhs.oldOnly,
            oldFallback: lhs.oldFallback - rhs.oldFallback
        )
    }
}
