import CoreMetrics

/// Where a read's answer came from, as counted in `zddm_reads_total{served_by}`.
public enum ReadSource: String, Sendable, CaseIterable {
    /// New answered (a value or a tombstone).
    case new
    /// New missed; Old answered (and New was filled when Old had a value).
    case oldAfterMiss = "old_after_miss"
    /// The gate was closed for the key, or the killswitch was on: Old only.
    case oldOnly = "old_only"
    /// The gate was open but New was kept out for safety (unsafe key, degraded mode) or New's read failed.
    case oldFallback = "old_fallback"
}

/// The proxy's metric objects, created once.
///
/// | metric | type | dimensions |
/// | --- | --- | --- |
/// | `zddm_reads_total` | counter | `migration`, `served_by` (new, old_after_miss, old_only, old_fallback) |
/// | `zddm_fills_total` | counter | `migration`, `outcome` (inserted, lost) |
/// | `zddm_new_failures_total` | counter | `migration`, `operation` |
/// | `zddm_old_failures_total` | counter | `migration`, `operation` |
/// | `zddm_unsafe_keys` | gauge | `migration` |
/// | `zddm_degraded` | gauge (0 or 1) | `migration` |
struct ProxyMetrics: Sendable {
    let reads: [ReadSource: Counter]
    let fillsInserted: Counter
    let fillsLost: Counter
    let newFailures: [StoreOperation: Counter]
    let oldFailures: [StoreOperation: Counter]
    let unsafeKeys: Gauge
    let degraded: Gauge

    init(migration: String, factory: any MetricsFactory) {
        let name = ("migration", migration)
        var reads: [ReadSource: Counter] = [:]
        for source in ReadSource.allCases {
            reads[source] = Counter(
                label: "zddm_reads_total",
                dimensions: [name, ("served_by", source.rawValue)],
                factory: factory
            )
        }
        self.reads = reads
        self.fillsInserted = Counter(
            label: "zddm_fills_total",
            dimensions: [name, ("outcome", "inserted")],
            factory: factory
        )
        self.fillsLost = Counter(label: "zddm_fills_total", dimensions: [name, ("outcome", "lost")], factory: factory)
        let newOperations: [StoreOperation] = [.read, .write, .insertIfAbsent, .writeTombstone, .invalidate]
        var newFailures: [StoreOperation: Counter] = [:]
        for operation in newOperations {
            newFailures[operation] = Counter(
                label: "zddm_new_failures_total",
                dimensions: [name, ("operation", operation.rawValue)],
                factory: factory
            )
        }
        self.newFailures = newFailures
        var oldFailures: [StoreOperation: Counter] = [:]
        for operation in [StoreOperation.read, .write, .delete] {
            oldFailures[operation] = Counter(
                label: "zddm_old_failures_total",
                dimensions: [name, ("operation", operation.rawValue)],
                factory: factory
            )
        }
        self.oldFailures = oldFailures
        self.unsafeKeys = Gauge(label: "zddm_unsafe_keys", dimensions: [name], factory: factory)
        self.degraded = Gauge(label: "zddm_degraded", dimensions: [name], factory: factory)
    }

    func read(_ source: ReadSource) {
        reads[source]?.increment()
    }

    func newFailure(_ operation: StoreOperation) {
        newFailures[operation]?.increment()
    }

    func oldFailure(_ operation: StoreOperation) {
        oldFailures[operation]?.increment()
    }
}
