/// The labels of the metrics a ``FleetMember`` and a ``ChangeApplier`` create (each with the `migration`
/// dimension).
enum FleetMetricLabels {
    /// Counter: writes that waited at the fleet's barrier.
    static let barrierWaits = "zddm_fleet_barrier_waits_total"
    /// Counter: barrier records that could not be made in time.
    static let barrierFailures = "zddm_fleet_barrier_failures_total"
    /// Gauge: 1 while this instance's view lets it read New.
    static let newReadsAllowed = "zddm_fleet_new_reads_allowed"
    /// Counter: keys the change applier copied into New.
    static let applied = "zddm_applier_applied_total"
    /// Gauge: entries in Old's change table after the applier's last pass.
    static let backlog = "zddm_applier_backlog_entries"
    /// Gauge: age of the oldest entry in the change table, in seconds.
    static let lag = "zddm_applier_lag_seconds"
    /// Gauge: 1 while this instance's applier holds the lease.
    static let leaseHeld = "zddm_applier_lease_held"

    static let all = [barrierWaits, barrierFailures, newReadsAllowed, applied, backlog, lag, leaseHeld]
}
