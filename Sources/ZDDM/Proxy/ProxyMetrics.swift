public import CoreMetrics

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

/// A migration's metric objects, created once per ``MigrationCore``.
///
/// Every label is a constant in ``Label``, and ``labels`` lists them all: the metrics table in the Runbook article
/// is checked against that list by the documentation tests, and the list against the metrics this initializer
/// creates, so documentation and code cannot drift apart.
@usableFromInline
struct ProxyMetrics: Sendable {
    /// The label of every metric ZDDM defines.
    enum Label {
        /// Counter; `migration`, `served_by` (new, old_after_miss, old_only, old_fallback).
        static let reads = "zddm_reads_total"
        /// Counter; `migration`, `outcome` (inserted, lost).
        static let fills = "zddm_fills_total"
        /// Counter; `migration`, `operation`.
        static let newFailures = "zddm_new_failures_total"
        /// Counter; `migration`, `operation`.
        static let oldFailures = "zddm_old_failures_total"
        /// Gauge; `migration`.
        static let unsafeKeys = "zddm_unsafe_keys"
        /// Gauge (0 or 1); `migration`.
        static let degraded = "zddm_degraded"
        /// Counter; `migration`, `kind` (missing_in_new, extra_in_new, different_value, tombstone_in_new).
        static let verifyMismatches = "zddm_verify_mismatches_total"
        /// Counter; `migration`, `result` (match, mismatch, new_missing, skipped).
        static let shadowComparisons = "zddm_shadow_comparisons_total"
        /// Timer; `migration`, `store` (old, new).
        static let shadowReadDuration = "zddm_shadow_read_duration"
        /// Counter; `migration` (New calls that ran out of budget).
        static let newTimeouts = "zddm_new_timeouts_total"
        /// Counter; `migration`.
        static let breakerTrips = "zddm_breaker_trips_total"
        /// Gauge (0 closed, 1 half-open, 2 open); `migration`.
        static let breakerState = "zddm_breaker_state"
        /// Counter; `migration`, `outcome` (copied, present, skipped).
        static let backfillRows = "zddm_backfill_rows_total"

        /// Every label above.
        static let all = [
            reads, fills, newFailures, oldFailures, unsafeKeys, degraded, verifyMismatches, shadowComparisons,
            shadowReadDuration, newTimeouts, breakerTrips, breakerState, backfillRows,
        ]
    }

    /// The label of every metric the initializer creates.
    static let labels: [String] = Label.all

    /// The read counters by source, resolved once: counting a read is one call, no lookup.
    @usableFromInline let readsFromNew: Counter
    @usableFromInline let readsFromOldAfterMiss: Counter
    @usableFromInline let readsFromOldOnly: Counter
    @usableFromInline let readsFromOldFallback: Counter
    @usableFromInline let fillsInserted: Counter
    @usableFromInline let fillsLost: Counter
    let newFailures: [StoreOperation: Counter]
    let oldFailures: [StoreOperation: Counter]
    @usableFromInline let unsafeKeys: Gauge
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
        func reads(_ source: ReadSource) -> Counter {
            Counter(label: Label.reads, dimensions: [name, ("served_by", source.rawValue)], factory: factory)
        }
        self.readsFromNew = reads(.new)
        self.readsFromOldAfterMiss = reads(.oldAfterMiss)
        self.readsFromOldOnly = reads(.oldOnly)
        self.readsFromOldFallback = reads(.oldFallback)
        self.fillsInserted = Counter(
            label: Label.fills,
            dimensions: [name, ("outcome", "inserted")],
            factory: factory
        )
        self.fillsLost = Counter(label: Label.fills, dimensions: [name, ("outcome", "lost")], factory: factory)
        let newOperations: [StoreOperation] = [
            .read, .write, .insertIfAbsent, .writeTombstone, .invalidate, .insertManyIfAbsent, .writeIfNewer,
        ]
        var newFailures: [StoreOperation: Counter] = [:]
        for operation in newOperations {
            newFailures[operation] = Counter(
                label: Label.newFailures,
                dimensions: [name, ("operation", operation.rawValue)],
                factory: factory
            )
        }
        self.newFailures = newFailures
        var oldFailures: [StoreOperation: Counter] = [:]
        for operation in [StoreOperation.read, .write, .delete, .readMany] {
            oldFailures[operation] = Counter(
                label: Label.oldFailures,
                dimensions: [name, ("operation", operation.rawValue)],
                factory: factory
            )
        }
        self.oldFailures = oldFailures
        self.unsafeKeys = Gauge(label: Label.unsafeKeys, dimensions: [name], factory: factory)
        self.degraded = Gauge(label: Label.degraded, dimensions: [name], factory: factory)
        var verifyMismatchCounters: [MismatchKind: Counter] = [:]
        for kind in MismatchKind.allCases {
            verifyMismatchCounters[kind] = Counter(
                label: Label.verifyMismatches,
                dimensions: [name, ("kind", kind.rawValue)],
                factory: factory
            )
        }
        self.verifyMismatchCounters = verifyMismatchCounters
        var shadowResults: [String: Counter] = [:]
        for result in ["match", "mismatch", "new_missing", "skipped"] {
            shadowResults[result] = Counter(
                label: Label.shadowComparisons,
                dimensions: [name, ("result", result)],
                factory: factory
            )
        }
        self.shadowResults = shadowResults
        self.newTimeouts = Counter(label: Label.newTimeouts, dimensions: [name], factory: factory)
        self.breakerTrips = Counter(label: Label.breakerTrips, dimensions: [name], factory: factory)
        self.breakerState = Gauge(label: Label.breakerState, dimensions: [name], factory: factory)
        self.shadowOldLatency = Timer(
            label: Label.shadowReadDuration,
            dimensions: [name, ("store", "old")],
            factory: factory
        )
        self.shadowNewLatency = Timer(
            label: Label.shadowReadDuration,
            dimensions: [name, ("store", "new")],
            factory: factory
        )
        var backfillRows: [String: Counter] = [:]
        for outcome in ["copied", "present", "skipped"] {
            backfillRows[outcome] = Counter(
                label: Label.backfillRows,
                dimensions: [name, ("outcome", outcome)],
                factory: factory
            )
        }
        self.backfillRows = backfillRows
    }

    @inlinable
    func read(_ source: ReadSource) {
        switch source {
        case .new: readsFromNew.increment()
        case .oldAfterMiss: readsFromOldAfterMiss.increment()
        case .oldOnly: readsFromOldOnly.increment()
        case .oldFallback: readsFromOldFallback.increment()
        }
    }

    @usableFromInline
    func newFailure(_ operation: StoreOperation) {
        newFailures[operation]?.increment()
    }

    func shadowResult(_ result: String) {
        shadowResults[result]?.increment()
    }

    func verifyMismatches(_ counts: [MismatchKind: Int]) {
        for (kind, count) in counts where count > 0 { verifyMismatchCounters[kind]?.increment(by: count) }
    }

    @usableFromInline
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
