public import CoreMetrics
public import Logging
public import ServiceLifecycle
import Synchronization

/// One instance's membership in a fleet: it follows the migration's shared state (stage, rate, high-water rate,
/// killswitch) into the local ``TrafficGate``, knows whether its view of that state is current, and runs the
/// fleet's barrier when New falls behind.
///
/// Give one to the ``MigrationCore`` (or proxy) of every instance of a service, over the same
/// ``FleetStateStore``, and run it in the application's `ServiceGroup` (or call ``refresh()`` yourself). With it,
/// and with stores that keep versions, the proxy keeps these rules:
///
/// - It reads New only under a view read less than ``FleetOptions/viewLease`` ago, in which the change applier
///   has caught up with everything New fell behind on.
/// - A write whose New step did not happen (New failed or ran out of budget, the circuit breaker is open) first
///   records that New fell behind (``FleetStateStore/markBehind(_:)``), then waits until every view from before
///   that has expired, then is acknowledged: a wait of one lease on that write, never a failure.
/// - A write that leaves New alone by design (the key is above the high-water rate, or New is not written in
///   this state) is acknowledged only while the view it was planned under is current; one held back because New
///   is not written also waits until every view from before New stopped being written has expired.
public final class FleetMember: Service, Sendable {
    /// The migration's name in the shared table.
    public let migration: String
    /// The timing.
    public let options: FleetOptions
    let gate: TrafficGate
    let clock: MigrationClock
    private let store: any FleetStateStore
    private let logger: Logger
    private let barrierWaits: Counter
    private let barrierFailures: Counter
    private let newReadsAllowed: Gauge

    /// Reads may be served from New while the clock (in nanoseconds) is below this.
    private let newReadsUntil = Atomic<Int64>(.min)
    /// The view is current while the clock (in nanoseconds) is below this.
    private let viewUntil = Atomic<Int64>(.min)
    private let tracking = Mutex(Tracking())

    private struct Tracking {
        var view: FleetState?
        var viewStarted: Int64 = .min
        /// When this instance first saw New stop being written (the end of that view's read), kept after New is
        /// written again: the latest such moment.
        var notWritingSince: Int64?
        var writing = true
    }

    /// Creates a member.
    /// - Parameters:
    ///   - store: The fleet's shared state.
    ///   - migration: The migration's name there.
    ///   - gate: The local gate, which follows the shared state.
    ///   - options: Lease and refresh timing.
    ///   - logger: Where it logs.
    ///   - metricsFactory: Where its metrics go; by default the application's `MetricsSystem.factory`.
    ///   - clock: The clock leases and waits are measured with.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for options out of range or an empty name.
    public init(
        store: some FleetStateStore,
        migration: String,
        gate: TrafficGate,
        options: FleetOptions = FleetOptions(),
        logger: Logger = Logger(label: "zddm", factory: { _ in SwiftLogNoOpLogHandler() }),
        metricsFactory: (any MetricsFactory)? = nil,
        clock: some Clock<Duration> = ContinuousClock()
    ) throws {
        guard !migration.isEmpty else {
            throw ZDDMError(.invalidArgument, message: "the migration name must not be empty")
        }
        try options.validate()
        self.store = store
        self.migration = migration
        self.gate = gate
        self.options = options
        self.clock = MigrationClock(clock)
        var logger = logger
        logger[metadataKey: "zddm.migration"] = .string(migration)
        self.logger = logger
        let factory = metricsFactory ?? MetricsSystem.factory
        let dimensions = [("migration", migration)]
        self.barrierWaits = Counter(label: FleetMetricLabels.barrierWaits, dimensions: dimensions, factory: factory)
        self.barrierFailures = Counter(
            label: FleetMetricLabels.barrierFailures,
            dimensions: dimensions,
            factory: factory
        )
        self.newReadsAllowed = Gauge(label: FleetMetricLabels.newReadsAllowed, dimensions: dimensions, factory: factory)
    }

    // MARK: Following the shared state

    /// Refreshes the view until the service group shuts down; a failed refresh is logged and retried, and the view
    /// simply expires meanwhile (reads go to Old).
    public func run() async throws {
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                try await refresh()
            } catch is CancellationError {
                return
            } catch {
                logger.warning(
                    "could not read the fleet's shared state; reads go to Old until it can",
                    metadata: ["zddm.error_type": "\(type(of: error))"]
                )
            }
            do {
                try await clock.sleep(for: options.interval)
            } catch {
                return
            }
        }
    }

    /// Reads the shared state once and applies it: the local gate follows it, and the view is current for one
    /// lease from the moment this read began.
    /// - Returns: The state read.
    /// - Throws: The store's error; the previous view stays until it expires.
    @discardableResult
    public func refresh() async throws -> FleetState {
        let started = clock.nanoseconds
        let state = try await store.state(of: migration)
        let finished = clock.nanoseconds
        apply(state, started: started, finished: finished)
        return state
    }

    private func apply(_ state: FleetState, started: Int64, finished: Int64) {
        let lease = options.viewLease.nanoseconds
        tracking.withLock { tracking in
            // A slower, older read must not replace a newer view.
            guard started >= tracking.viewStarted else { return }
            tracking.viewStarted = started
            tracking.view = state
            if !state.writesNew {
                if tracking.writing { tracking.notWritingSince = finished }
                tracking.writing = false
            } else {
                tracking.writing = true
            }
            // Take New reads away first, follow the gate, then allow what this view allows.
            newReadsUntil.store(.min, ordering: .releasing)
            gate.follow(state)
            let until = started &+ lease
            viewUntil.store(until, ordering: .releasing)
            if state.isCaughtUp, state.writesNew { newReadsUntil.store(until, ordering: .releasing) }
        }
        newReadsAllowed.record(state.isCaughtUp && state.writesNew ? 1 : 0)
    }

    /// The last view read, if any.
    public var view: FleetState? { tracking.withLock { $0.view } }

    /// Whether reads may be served from New now: the view is current and the applier has caught up.
    public var mayReadNew: Bool { clock.nanoseconds < newReadsUntil.load(ordering: .acquiring) }

    /// The moment (clock nanoseconds) until which the current view counts; read it before the gate's snapshot
    /// that a write plans with.
    @usableFromInline
    var viewDeadline: Int64 { viewUntil.load(ordering: .acquiring) }

    /// Whether a view deadline taken earlier has not passed.
    @usableFromInline
    func isBefore(_ deadline: Int64) -> Bool { clock.nanoseconds < deadline }

    // MARK: Verify passes

    /// The shared state's ``FleetState/behind`` now, read before a verify pass begins.
    func sharedBehind() async throws -> UInt64 {
        try await store.state(of: migration).behind
    }

    /// Records in the shared state a clean verify pass that began when ``FleetState/behind`` was `behind`.
    func recordCleanVerify(startedAt behind: UInt64) async throws -> FleetState {
        try await store.recordCleanVerify(migration, startedAt: behind)
    }

    // MARK: The barrier

    /// Records in the shared state that New fell behind for a write whose Old step has committed, then waits until
    /// every view from before that record has expired. Never throws: if the record cannot be made within
    /// ``FleetOptions/barrierTimeout``, it logs an error, counts it, and returns.
    @usableFromInline
    func fallBehind() async {
        barrierWaits.increment()
        let giveUp = clock.nanoseconds &+ options.barrierTimeout.nanoseconds
        var pause = Duration.milliseconds(10)
        while true {
            do {
                _ = try await store.markBehind(migration)
                let recorded = clock.nanoseconds
                await sleep(until: recorded &+ options.expiryWait.nanoseconds)
                return
            } catch {
                if clock.nanoseconds >= giveUp || Task.isCancelled {
                    barrierFailures.increment()
                    logger.error(
                        "could not record in the fleet's shared state that New fell behind; other instances may read a stale value from New until the change applier catches up",
                        metadata: ["zddm.error_type": "\(type(of: error))"]
                    )
                    return
                }
                await sleep(until: clock.nanoseconds &+ pause.nanoseconds)
                pause = min(pause * 2, .seconds(1))
            }
        }
    }

    /// Waits, for a write held back because New is not written, until every view from before New stopped being
    /// written has expired.
    @usableFromInline
    func waitOutWritingViews() async {
        let since = tracking.withLock { $0.notWritingSince } ?? clock.nanoseconds
        await sleep(until: since &+ options.expiryWait.nanoseconds)
    }

    private func sleep(until deadline: Int64) async {
        let remaining = deadline &- clock.nanoseconds
        guard remaining > 0 else { return }
        // A write's last step: it is not abandoned when the caller's task is cancelled.
        let clock = self.clock
        await Task.detached { try? await clock.sleep(for: .nanoseconds(remaining)) }.value
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating).
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled &+ attoseconds / 1_000_000_000
    }
}

extension MigrationClock {
    /// Now, in nanoseconds since the clock was handed over.
    var nanoseconds: Int64 { now.nanoseconds }
}
