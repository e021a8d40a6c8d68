/// Timing of an instance's membership in a fleet.
public struct FleetOptions: Sendable, Hashable {
    /// How long a view of the shared state counts as current, from the moment its read began. An instance reads
    /// New only under a current view, and a write whose New step did not happen waits this long (once) before it
    /// is acknowledged, so that every other instance's older view has expired. 2 s by default.
    public var viewLease: Duration
    /// How often the view is refreshed; by default a quarter of ``viewLease``.
    public var refreshInterval: Duration?
    /// Allowance for clocks of different machines running at slightly different rates: waits for other views to
    /// expire are lengthened by this fraction of ``viewLease``. 0.1 by default.
    public var clockAllowance: Double
    /// How long a write whose New step did not happen keeps trying to record that New fell behind before it is
    /// acknowledged anyway (the failure is logged as an error and counted). 30 s by default.
    public var barrierTimeout: Duration

    /// Creates options.
    public init(
        viewLease: Duration = .seconds(2),
        refreshInterval: Duration? = nil,
        clockAllowance: Double = 0.1,
        barrierTimeout: Duration = .seconds(30)
    ) {
        self.viewLease = viewLease
        self.refreshInterval = refreshInterval
        self.clockAllowance = clockAllowance
        self.barrierTimeout = barrierTimeout
    }

    /// How long after an event every view from before it has expired, with the allowance.
    var expiryWait: Duration { viewLease + viewLease * clockAllowance }

    /// The refresh interval in use.
    var interval: Duration { refreshInterval ?? viewLease / 4 }

    func validate() throws {
        guard viewLease > .zero else {
            throw ZDDMError(.invalidArgument, message: "the fleet view lease must be above zero, got \(viewLease)")
        }
        guard interval > .zero, interval < viewLease else {
            throw ZDDMError(
                .invalidArgument,
                message: "the fleet refresh interval must be above zero and below the view lease, got \(interval)"
            )
        }
        guard clockAllowance.isFinite, clockAllowance >= 0, clockAllowance <= 1 else {
            throw ZDDMError(.invalidArgument, message: "the clock allowance must be in [0, 1], got \(clockAllowance)")
        }
        guard barrierTimeout > .zero else {
            throw ZDDMError(.invalidArgument, message: "the barrier timeout must be above zero, got \(barrierTimeout)")
        }
    }
}
