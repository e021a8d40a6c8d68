public import CoreMetrics
import Logging
public import ServiceLifecycle
import Synchronization

/// Applies Old's change table to New, so that writes that bypassed the proxy reach New and New catches up after
/// it fell behind; and tells the fleet when it has caught up.
///
/// Each entry is applied by reading Old's *current* record and version for its key and writing it into New
/// through the fence, then removing the entry. Applying is therefore idempotent and needs no commit order: an
/// entry whose transaction commits late is read by a later pass, never skipped, and an older record can never
/// replace a newer one in New. Keys at or above the fleet's high-water rate are skipped (New has never held them;
/// a read fills them when the gate admits them).
///
/// One applier per migration is active in a fleet: each instance may run one, and they take turns through a lease
/// in the ``FleetStateStore`` (with a fencing token). The others wait and take over when the lease expires. While
/// New is not written (killswitch on, stage `off`), the applier pauses.
///
/// After a complete pass (every entry committed before the pass began applied: a read of the change table returned
/// fewer entries than the batch size, and they were applied), the applier publishes that the fleet has caught up with the
/// ``FleetState/behind`` value it read before the pass, so instances read New again. Each time it sees
/// ``FleetState/controlEpoch`` move (New stopped or resumed being written, the high-water rate rose), it first waits
/// until every instance's view from before that has expired (``FleetOptions/viewLease``): writes acknowledged under
/// those views may have left New alone without a record of their own (the killswitch may even have gone on and off
/// between two of its reads). A write whose New step did not happen needs no wait: it moved `behind` after Old had
/// committed its change, so a pass that read that `behind` reads the change too.
public final class ChangeApplier<Old: KeyValueStore, New: KeyValueStore>: Service, Sendable
where Old.Key == New.Key, Old.Value == New.Value, Old.Key: GateKey {
    public typealias Key = Old.Key

    /// The migration's core (stores, gate, metrics).
    public let core: MigrationCore<Old, New>
    /// The applier's own tuning.
    public let options: ChangeApplierOptions
    /// This applier's name in the lease.
    public let holder: String
    private let store: any FleetStateStore
    private let fleetOptions: FleetOptions
    private let clock: MigrationClock
    private let logger: Logger
    private let progress = Mutex(Progress())
    private let metrics: Metrics

    private struct Progress {
        var token: UInt64?
        var settled: (writesNew: Bool, highWater: Double, epoch: UInt64)?
        var settledSince: Int64 = .min
    }

    private struct Metrics {
        let applied: Counter
        let backlog: Gauge
        let lag: Gauge
        let holder: Gauge
    }

    /// Creates an applier.
    /// - Parameters:
    ///   - core: The migration's core; Old must capture changes, both stores must keep versions.
    ///   - fleetState: The fleet's shared state (where the lease is).
    ///   - fleetOptions: The fleet's view lease; the same as every instance's ``FleetMember`` uses.
    ///   - options: Batch size, polling and lease timing.
    ///   - holder: A name unique to this instance; a random one by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/unsupported`` when Old captures no changes or a store
    ///   keeps no versions, or ``ZDDMError/Code/invalidArgument`` for options out of range.
    public init(
        core: MigrationCore<Old, New>,
        fleetState: some FleetStateStore,
        fleetOptions: FleetOptions = FleetOptions(),
        options: ChangeApplierOptions = ChangeApplierOptions(),
        holder: String? = nil
    ) throws {
        guard core.old.capabilities.isSuperset(of: [.versions, .changeCapture]) else {
            throw ZDDMError(
                .unsupported,
                role: .old,
                message: "the change applier needs an Old store with change capture and versions"
            )
        }
        guard core.new.capabilities.contains(.versions) else {
            throw ZDDMError(.unsupported, role: .new, message: "the change applier needs a New store with versions")
        }
        try fleetOptions.validate()
        try options.validate()
        self.core = core
        self.store = fleetState
        self.fleetOptions = fleetOptions
        self.options = options
        self.holder = holder ?? "applier-\(UInt64.random(in: 1...UInt64.max))"
        self.clock = core.clock
        self.logger = core.logger
        let factory = options.metricsFactory ?? MetricsSystem.factory
        let dimensions = [("migration", core.name)]
        self.metrics = Metrics(
            applied: Counter(label: FleetMetricLabels.applied, dimensions: dimensions, factory: factory),
            backlog: Gauge(label: FleetMetricLabels.backlog, dimensions: dimensions, factory: factory),
            lag: Gauge(label: FleetMetricLabels.lag, dimensions: dimensions, factory: factory),
            holder: Gauge(label: FleetMetricLabels.leaseHeld, dimensions: dimensions, factory: factory)
        )
    }

    /// Runs passes until the service group shuts down: holds the lease or waits for it, applies the change table,
    /// and publishes when the fleet has caught up. Failures are logged and retried.
    public func run() async throws {
        defer { metrics.holder.record(0) }
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            var pause = options.idleInterval
            do {
                let pass = try await applyPass()
                if !pass.holdsLease { pause = options.leaseDuration / 4 }
            } catch is CancellationError {
                break
            } catch {
                // The pass gave the lease up; wait longer than the others so one of them can take it.
                pause = options.leaseDuration / 2
                logger.warning(
                    "change applier pass failed; the lease is released and the pass retried later",
                    metadata: ["zddm.error_type": "\(type(of: error))"]
                )
            }
            do { try await clock.sleep(for: pause) } catch { break }
        }
        await releaseLease()
    }

    /// Gives the lease up, if held, so that another instance takes over at once.
    public func releaseLease() async {
        guard let token = progress.withLock({ $0.token }) else { return }
        try? await store.releaseLease(core.name, holder: holder, token: token)
        progress.withLock { $0.token = nil }
        metrics.holder.record(0)
    }

    /// One pass: takes or renews the lease; if held and New is written, applies the change table until a read
    /// returns fewer entries than the batch size (or none), then publishes that the fleet has caught up when it may.
    /// - Returns: What the pass did.
    /// - Throws: A store's error; nothing is published then, and the lease is given up so that another instance
    ///   (whose New may not be failing) takes over.
    @discardableResult
    public func applyPass() async throws -> ChangeApplierPass {
        do {
            return try await pass()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            await releaseLease()
            throw error
        }
    }

    private func pass() async throws -> ChangeApplierPass {
        var pass = ChangeApplierPass()
        let token = try await store.acquireLease(core.name, holder: holder, duration: options.leaseDuration)
        var leaseTaken = clock.nanoseconds
        progress.withLock { $0.token = token }
        metrics.holder.record(token == nil ? 0 : 1)
        guard let token else { return pass }
        pass.holdsLease = true
        var (state, mayPublish) = try await readState()
        guard state.writesNew else {
            pass.paused = true
            return pass
        }
        let renewEvery = (options.leaseDuration / 3).nanoseconds
        // The state read last before the read of the change table that completes the pass: what may be published.
        var complete = (state: state, mayPublish: mayPublish)
        while true {
            if Task.isCancelled || Task.isShuttingDownGracefully { return pass }
            if clock.nanoseconds &- leaseTaken > renewEvery {
                guard try await store.acquireLease(core.name, holder: holder, duration: options.leaseDuration) == token
                else {
                    pass.holdsLease = false
                    metrics.holder.record(0)
                    return pass
                }
                leaseTaken = clock.nanoseconds
            }
            let before = (state: state, mayPublish: mayPublish)
            let changes = try await core.storeSpan(.old, .changes) {
                try await core.old.capturedChanges(limit: options.batchSize)
            }
            if changes.isEmpty {
                complete = before
                break
            }
            // The high-water rate is read after the batch: a key it excludes had no copy in New when the batch's
            // changes were made.
            if state.highWaterRate < 1 { (state, mayPublish) = try await readState() }
            guard state.writesNew else {
                pass.paused = true
                return pass
            }
            pass.applied += try await apply(changes, highWater: state.highWaterRate)
            pass.entries += changes.count
            // A read that returned fewer entries than asked for returned every entry there was, so every entry
            // committed before the state read that preceded it has now been applied: the pass is complete, even
            // while writers keep adding entries (waiting for an empty read would never end under a steady stream of
            // writes). What may be published is the state read before that read of the change table.
            if changes.count < options.batchSize {
                complete = before
                break
            }
        }
        if let backlog = try? await core.old.changeBacklog() {
            metrics.backlog.record(backlog.entries)
            metrics.lag.record(Double(backlog.oldestAge?.nanoseconds ?? 0) / 1e9)
        }
        if !complete.state.isCaughtUp, complete.mayPublish {
            let behind = complete.state.behind
            if try await store.publishCaughtUp(core.name, through: behind, token: token) {
                pass.publishedCaughtUp = behind
            } else {
                pass.holdsLease = false
            }
        }
        return pass
    }

    /// Reads the shared state, noting when New's being written or the high-water rate last changed; returns the
    /// state and whether every view from before that change had expired when this read began.
    private func readState() async throws -> (FleetState, mayPublish: Bool) {
        let started = clock.nanoseconds
        let state = try await store.state(of: core.name)
        let finished = clock.nanoseconds
        let settledSince = progress.withLock { progress in
            // Any move of the control epoch restarts the wait, not only a change of what this applier saw: the
            // killswitch may have gone on and off between two of its reads. A write whose New step failed moves
            // `behind` only, after Old committed its change: the next pass sees that change, no wait is needed.
            let now = (writesNew: state.writesNew, highWater: state.highWaterRate, epoch: state.controlEpoch)
            if progress.settled.map({
                $0.writesNew != now.writesNew || $0.highWater != now.highWater || $0.epoch != now.epoch
            }) ?? true {
                progress.settled = now
                progress.settledSince = finished
            }
            return progress.settledSince
        }
        return (state, started >= settledSince &+ fleetOptions.expiryWait.nanoseconds)
    }

    private func apply(_ changes: [CapturedChange<Key>], highWater: Double) async throws -> Int {
        var keys: [Key] = []
        var seen: Set<Key> = []
        keys.reserveCapacity(changes.count)
        for change in changes where seen.insert(change.key).inserted {
            if CallPlan.isBelow(highWater, { core.gate.hashRate(of: change.key) }) { keys.append(change.key) }
        }
        if !keys.isEmpty {
            let old = core.old
            let new = core.new
            let found = try await core.storeSpan(.old, .readMany) { try await old.readManyVersioned(keys) }
            let entries = keys.map { (key: $0, record: found[$0] ?? .tombstone(version: 0)) }
            _ = try await core.callNewOrThrow(.writeIfNewer) { try await new.writeManyIfNewer(entries) }
        }
        try await core.storeSpan(.old, .changes) { try await core.old.removeCapturedChanges(changes) }
        metrics.applied.increment(by: keys.count)
        return keys.count
    }
}

/// What one ``ChangeApplier/applyPass()`` did.
public struct ChangeApplierPass: Sendable, Hashable {
    /// Whether this applier held the lease.
    public var holdsLease = false
    /// Whether New is not written in the shared state, so nothing was applied.
    public var paused = false
    /// Change-table entries read and removed.
    public var entries = 0
    /// Keys whose record was copied into New (through the fence).
    public var applied = 0
    /// The ``FleetState/behind`` value published as caught up, if any.
    public var publishedCaughtUp: UInt64?
}

/// Tuning of a ``ChangeApplier``.
public struct ChangeApplierOptions: Sendable {
    /// Entries per batch; 500 by default.
    public var batchSize: Int
    /// The pause between passes; 50 ms by default. A bypass write reaches New within about this plus a pass.
    public var idleInterval: Duration
    /// The lease's length; 10 s by default. A crashed holder is replaced within this.
    public var leaseDuration: Duration
    /// Where the applier's metrics go; by default the application's `MetricsSystem.factory`.
    public var metricsFactory: (any MetricsFactory)?

    /// Creates options.
    public init(
        batchSize: Int = 500,
        idleInterval: Duration = .milliseconds(50),
        leaseDuration: Duration = .seconds(10),
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.batchSize = batchSize
        self.idleInterval = idleInterval
        self.leaseDuration = leaseDuration
        self.metricsFactory = metricsFactory
    }

    func validate() throws {
        guard batchSize >= 1 else {
            throw ZDDMError(.invalidArgument, message: "the applier's batch size must be at least 1, got \(batchSize)")
        }
        guard idleInterval > .zero, leaseDuration > .zero else {
            throw ZDDMError(.invalidArgument, message: "the applier's intervals must be above zero")
        }
    }
}
