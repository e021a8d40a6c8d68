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
/// | `zddm_verify_mismatches_total` | counter | `migration`, `kind` (missing_in_new, extra_in_new, different_value, tombstone_in_new) |
/// | `zddm_shadow_comparisons_total` | counter | `migration`, `result` (match, mismatch, new_missing, skipped) |
/// | `zddm_shadow_read_duration` | timer | `migration`, `store` (old, new) |
/// | `zddm_new_timeouts_total` | counter | `migration` (New calls that ran out of budget) |
/// | `zddm_breaker_trips_total` | counter | `migration` |
/// | `zddm_breaker_state` | gauge (0 closed, 1 half-open, 2 open) | `migration` |
/// | `zddm_backfill_rows_total` | counter | `migration`, `outcome` (copied, present, skipped) |
struct ProxyMetrics: Sendable {
    let reads: [ReadSource: Counter]
    let fillsInserted: Counter
    let fillsLost: Counter
    let newFailures: [StoreOperation: Counter]
    let oldFailures: [StoreOperation: Counter]
    let unsafeKeys: Gauge
    let degraded: Gauge
    let verifyMismatchCounters: [MismatchKind: Counter]
    let shadowResults: [String: Counter]
    let newTimeouts: Counter
    let breakerTrips: Counter
    let breakerState: Gauge
    let shadowOldLatency: Timer
    let shadowNewLatency: Timer
    let backfillRows: [String: Counter]

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
        let newOperations: [StoreOperation] = [
            .read, .write, .insertIfAbsent, .writeTombstone, .invalidate, .insertManyIfAbsent,
        ]
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
        for operation in [StoreOperation.read, .write, .delete, .readMany] {
            oldFailures[operation] = Counter(
                label: "zddm_old_failures_total",
                dimensions: [name, ("operation", operation.rawValue)],
                factory: factory
            )
        }
        self.oldFailures = oldFailures
        self.unsafeKeys = Gauge(label: "zddm_unsafe_keys", dimensions: [name], factory: factory)
        self.degraded = Gauge(label: "zddm_degraded", dimensions: [name], factory: factory)
        var verifyMismatchCounters: [MismatchKind: Counter] = [:]
        for kind in MismatchKind.allCases {
            verifyMismatchCounters[kind] = Counter(
                label: "zddm_verify_mismatches_total",
                dimensions: [name, ("kind", kind.rawValue)],
                factory: factory
            )
        }
        self.verifyMismatchCounters = verifyMismatchCounters
        var shadowResults: [String: Counter] = [:]
        for result in ["match", "mismatch", "new_missing", "skipped"] {
            shadowResults[result] = Counter(
                label: "zddm_shadow_comparisons_total",
                dimensions: [name, ("result", result)],
                factory: factory
            )
        }
        self.shadowResults = shadowResults
        self.newTimeouts = Counter(label: "zddm_new_timeouts_total", dimensions: [name], factory: factory)
        self.breakerTrips = Counter(label: "zddm_breaker_trips_total", dimensions: [name], factory: factory)
        self.breakerState = Gauge(label: "zddm_breaker_state", dimensions: [name], factory: factory)
        self.shadowOldLatency = Timer(
            label: "zddm_shadow_read_duration",
            dimensions: [name, ("store", "old")],
            factory: factory
        )
        self.shadowNewLatency = Timer(
            label: "zddm_shadow_read_duration",
            dimensions: [name, ("store", "new")],
            factory: factory
        )
        var backfillRows: [String: Counter] = [:]
        for outcome in ["copied", "present", "skipped"] {
            backfillRows[outcome] = Counter(
                label: "zddm_backfill_rows_total",
                dimensions: [name, ("outcome", outcome)],
                factory: factory
            )
        }
        self.backfillRows = backfillRows
    }

    func read(_ source: ReadSource) {
        reads[source]?.increment()
    }

    func newFailure(_ operation: StoreOperation) {
        newFailures[operation]?.increment()
    }

    func shadowResult(_ result: String) {
        shadowResults[result]?.increment()
    }

    func verifyMismatches(_ counts: [MismatchKind: Int]) {
        for (kind, count) in counts where count > 0 { verifyMismatchCounters[kind]?.increment(by: count) }
    }

    func oldFailure(_ operation: StoreOperation) {
        oldFailures[operation]?.increment()
    }
}

extension Timer {
    /// Records a duration.
    func record(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
