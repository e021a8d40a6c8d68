public import CoreMetrics
public import Logging
public import ServiceLifecycle
public import Tracing

/// Routes every read, write and delete of a migration between an Old store (the source of truth) and a New store.
///
/// For keys the ``TrafficGate`` admits (killswitch off):
///
/// | call | what happens |
/// | --- | --- |
/// | ``read(_:)`` | New first. A value: returned. A tombstone: `nil`, Old is not asked. A miss: Old is read; when it has a value, New is filled with insert-if-absent (never overwriting a concurrent write or delete) and Old's value is returned. |
/// | ``write(_:_:)`` | Old first; if Old fails the call fails and New is not touched. Then New is upserted. |
/// | ``delete(_:)`` | Old first; if Old fails the call fails. Then a tombstone is written to New. |
///
/// For other keys, or with the killswitch on, calls go to Old only; a write or delete of a key that New may hold
/// (its hash rate is below the gate's high-water rate) also invalidates it in New, or, with the killswitch on,
/// is remembered so that New's copy is never served until it has been invalidated.
///
/// A failure of New never fails a call: it is counted, logged at `debug`, and the key is marked unsafe: New is
/// kept out of that key's reads until it has been invalidated there (by the last operation on the key to finish,
/// by a later read, or by ``repairUnsafeKeys(limit:)``). The same protection covers the races between fills and
/// writes, and between two writes of the same key, that dual writes otherwise lose. If
/// the caller's task is cancelled after Old's step, the proxy still runs New's step; if the store gives up on it,
/// the key is marked unsafe like any other New failure. The set of unsafe keys is bounded
/// (``MigrationOptions/maxUnsafeKeys``); past it the proxy is *degraded*: every read goes to Old and no read fills New
/// until ``resetAfterVerify()`` is called after a verify-and-repair pass.
///
/// Old's errors are the caller's, wrapped in a ``ZDDMError`` that names Old and the operation. "Not found" is `nil`.
///
/// Share one proxy per migration between all tasks of a process: its protection against same-key races covers the
/// calls that go through it, and the ``Backfill`` and ``Verify`` built on its ``core``.
///
/// The proxy is a `Service`: ``run()`` runs its background work (New calls past their budget, write-back,
/// `shadow` comparisons). Add it to the application's `ServiceGroup` when those are used.
public final class MigrationProxy<Old: KeyValueStore, New: KeyValueStore>: Service, Sendable
where Old.Key == New.Key, Old.Value == New.Value, Old.Key: GateKey {
    public typealias Key = Old.Key
    public typealias Value = Old.Value
    /// Tuning of the proxy's safety memory and of its protection against a failing or slow New.
    public typealias Options = MigrationOptions

    /// The parts the proxy shares with the migration's ``Backfill`` and ``Verify``.
    public let core: MigrationCore<Old, New>

    let shadowComparison: ShadowComparison<Value>
    let shadowSampler = FastRateHasher(salt: "zddm-shadow")
    let shadowInFlight = InFlightLimit()
    let writeBack = WriteBackState()

    /// Creates a proxy over a migration's core.
    /// - Parameters:
    ///   - core: The migration's stores, gate, safety memory, metrics, logs, traces and clock.
    ///   - shadow: How the `shadow` stage compares New with Old; by default every admitted key, with `==` for
    ///     `Equatable` values, nothing published.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for a shadow ratio outside `[0, 1]` or
    ///   an in-flight bound below 1.
    public init(core: MigrationCore<Old, New>, shadow: ShadowComparison<Value> = ShadowComparison()) throws {
        guard shadow.sampleRatio >= 0, shadow.sampleRatio <= 1, shadow.maxInFlight >= 1 else {
            throw ZDDMError(.invalidArgument, message: "the shadow sample ratio must be in [0, 1] and maxInFlight ≥ 1")
        }
        self.core = core
        self.ledger = core.ledger
        self.metrics = core.metrics
        self.logger = core.logger
        self.shadowComparison = shadow
    }

    /// Creates a proxy and its migration's core.
    /// - Parameters:
    ///   - name: The migration's name (a metrics dimension; keep it short and stable).
    ///   - old: The source of truth.
    ///   - new: The target; must support atomic insert-if-absent and tombstones.
    ///   - gate: The traffic gate; share it with the other proxies of this migration.
    ///   - options: Safety-memory bound, New-call budget and circuit breaker.
    ///   - logger: Where the proxy logs; by default nowhere. The proxy never bootstraps logging.
    ///   - metricsFactory: Where the proxy's metrics go; by default the application's `MetricsSystem.factory`.
    ///   - tracer: Where spans go; by default the installed tracer (none: no spans, no cost).
    ///   - clock: The clock budgets and the circuit breaker measure time with.
    ///   - shadow: How the `shadow` stage compares New with Old.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/unsupported`` when New lacks a required capability, or
    ///   ``ZDDMError/Code/invalidArgument`` for an empty name or an option out of range.
    public convenience init(
        name: String,
        old: Old,
        new: New,
        gate: TrafficGate,
        options: Options = Options(),
        logger: Logger = Logger(label: "zddm", factory: { _ in SwiftLogNoOpLogHandler() }),
        metricsFactory: (any MetricsFactory)? = nil,
        tracer: (any Tracer)? = nil,
        clock: some Clock<Duration> = ContinuousClock(),
        shadow: ShadowComparison<Value> = ShadowComparison()
    ) throws {
        let core = try MigrationCore(
            name: name,
            old: old,
            new: new,
            gate: gate,
            options: options,
            logger: logger,
            metricsFactory: metricsFactory,
            tracer: tracer,
            clock: clock
        )
        try self.init(core: core, shadow: shadow)
    }

    /// The migration's name, used as the `migration` dimension of metrics and in logs.
    public var name: String { core.name }
    /// The Old store.
    public var old: Old { core.old }
    /// The New store.
    public var new: New { core.new }
    /// The gate deciding which keys take part.
    public var gate: TrafficGate { core.gate }

    // The core's, held here too: a stored `let` is borrowed on the request path, where a computed property would
    // copy (and retain every metric handle of) the whole struct on each access.
    @usableFromInline let ledger: KeyLedger<Key>
    @usableFromInline let metrics: ProxyMetrics
    @usableFromInline let logger: Logger

    /// Whether New traffic is on (the killswitch is off). The original ZDDM's `isEnabled`.
    public var isEnabled: Bool { !gate.isKillswitchOn }

    /// Whether New traffic is on: killswitch off, stage not `off`, circuit breaker not open.
    public var isNewTrafficAllowed: Bool { core.isNewTrafficAllowed }

    /// Number of `shadow` comparisons still running in the background.
    public var shadowComparisonsInFlight: Int { shadowInFlight.current }

    /// Number of keys currently kept out of New until repaired.
    public var unsafeKeyCount: Int { core.unsafeKeyCount }

    /// Whether the proxy is degraded: too many unsafe keys to track, so every read goes to Old.
    public var isDegraded: Bool { core.isDegraded }

    /// Runs the proxy's background work until the service group shuts down; see ``MigrationCore/run()``.
    public func run() async throws {
        try await core.run()
    }

    /// Waits until no background work is pending (New calls past their budget, write-back steps, comparisons).
    public func waitForBackgroundWork() async {
        await core.waitForBackgroundWork()
    }

    // MARK: Read

    /// Reads a key.
    /// - Parameter key: The key.
    /// - Returns: The value, or `nil` when the key does not exist (or was deleted).
    /// - Throws: ``ZDDMError`` naming Old when Old's read fails. New's failures never throw.
    @inlinable
    public func read(_ key: Key) async throws -> Value? {
        let snapshot = gate.snapshot
        var plan = CallPlan.read(snapshot) { gate.hashRate(of: key) }
        switch plan {
        case .newFirst:
            if !(core.breaker?.allowCall() ?? true) { plan = plan.withNewUnavailable() }
        case .shadow:
            if core.breaker?.isOpen ?? false { plan = plan.withNewUnavailable() }
        case .oldOnly, .newAuthoritative:
            break
        }
        // Without a tracer (the usual case) the call goes straight to the plan's steps.
        guard core.isTracing else { return try await perform(plan, key, nil) }
        return try await performTraced(plan, key, snapshot)
    }

    /// ``perform(_:_:_:)`` in a span (kept off the untraced path).
    @usableFromInline
    func performTraced(_ plan: CallPlan.Read, _ key: Key, _ snapshot: GateSnapshot) async throws -> Value? {
        try await core.traced("zddm.read") { span in
            span?.attributes["zddm.stage"] = snapshot.stage.rawValue
            span?.attributes["zddm.admitted"] = plan != .oldOnly
            span?.attributes["db.operation.name"] = "read"
            return try await perform(plan, key, span)
        }
    }

    @inlinable @inline(__always)
    func perform(_ plan: CallPlan.Read, _ key: Key, _ span: (any Span)?) async throws -> Value? {
        switch plan {
        case .oldOnly:
            return served(try await core.readOld(key, servedBy: .oldOnly), .oldOnly, span)
        case .shadow:
            return served(try await shadowRead(key), .oldOnly, span)
        case .newAuthoritative(let fillFromOld):
            return try await readAuthoritativeNew(key, fillFromOld: fillFromOld, span)
        case .newFirst:
            return try await readThrough(key, span)
        }
    }

    /// The original ZDDM read-through: New first, a miss reads Old and fills New (through the fence with versions,
    /// else with insert-if-absent under the safety memory's protection). In a fleet, New is read only under a current
    /// view of the shared state that the change applier has caught up with.
    @inlinable @inline(__always)
    func readThrough(_ key: Key, _ span: (any Span)?) async throws -> Value? {
        if let fleet = core.fleet, !fleet.mayReadNew {
            return served(try await core.readOld(key, servedBy: .oldFallback), .oldFallback, span)
        }
        switch ledger.readPlan(key) {
        case .normal:
            break
        case .bypass:
            return served(try await core.readOld(key, servedBy: .oldFallback), .oldFallback, span)
        case .repair(let epoch):
            await repairBeforeRead(key, epoch: epoch)
            return served(try await core.readOld(key, servedBy: .oldFallback), .oldFallback, span)
        }
        // With nothing around store calls, New is read in line. Otherwise the wrapped read runs in a function of its
        // own: a call that is not inlined, joining this path, would cost every read an executor check after it.
        guard core.callsStoresPlainly else { return try await readThroughWrapped(key, span) }
        let record: StoreRecord<Value>?
        do {
            record = try await new.read(key)
        } catch {
            core.newFailed(.read, error)
            return served(try await core.readOld(key, servedBy: .oldFallback), .oldFallback, span)
        }
        return try await servedFromNew(record, key, span)
    }

    /// The rest of ``readThrough(_:_:)`` when store calls are wrapped (a tracer, a budget or a circuit breaker).
    @usableFromInline @inline(never)
    func readThroughWrapped(_ key: Key, _ span: (any Span)?) async throws -> Value? {
        let record: StoreRecord<Value>?
        do {
            record =
                core.newCallTimeout == nil
                ? try await core.callNewOrThrow(.read) { try await new.read(key) }
                : try await readNewWithinBudget(key)
        } catch {
            return served(try await core.readOld(key, servedBy: .oldFallback), .oldFallback, span)
        }
        return try await servedFromNew(record, key, span)
    }

    /// A read-through's answer once New was read: a value or tombstone is served, a miss reads Old and fills New.
    @inlinable @inline(__always)
    func servedFromNew(_ record: StoreRecord<Value>?, _ key: Key, _ span: (any Span)?) async throws -> Value? {
        switch record {
        case .value(let value):
            metrics.read(.new)
            return served(value, .new, span)
        case .tombstone:
            metrics.read(.new)
            return served(nil, .new, span)
        case nil:
            return core.usesVersions
                ? try await readOldAndFillVersioned(key, span) : try await readOldAndFill(key, span)
        }
    }

    /// Repairs an unsafe key a read claimed, within the budget when one is set.
    @usableFromInline
    func repairBeforeRead(_ key: Key, epoch: UInt64) async {
        if core.newCallTimeout == nil {
            await core.repair(key, epoch: epoch)
        } else {
            let operation: StoreOperation = core.usesVersions ? .writeIfNewer : .invalidate
            _ = await core.withinBudget(operation, RepairStep(core: core, key: key, epoch: epoch))
        }
    }

    /// Reads New within the budget; throws when New failed, ran out of budget (counted as a failed read of New; the
    /// call goes on in the background) or was not called (a budget without background work to enforce it). Kept out
    /// of ``readThrough(_:_:)`` so that the hit path does not set up this path's generic values.
    @usableFromInline @inline(never)
    func readNewWithinBudget(_ key: Key) async throws -> StoreRecord<Value>? {
        switch await core.withinBudget(.read, ReadStep(core: core, key: key)) {
        case .succeeded(let found)??:
            return found
        case nil:
            metrics.newFailure(.read)
            throw CancellationError()
        case .some(nil), .failed??:
            throw CancellationError()
        }
    }

    /// Reads in `rampdown` and `complete`, where New is the source of truth: its failures are the caller's.
    @usableFromInline @inline(never)
    func readAuthoritativeNew(_ key: Key, fillFromOld: Bool, _ span: (any Span)?) async throws -> Value? {
        let record: StoreRecord<Value>?
        do {
            record = try await core.storeSpan(.new, .read) { try await new.read(key) }
        } catch {
            metrics.newFailure(.read)
            throw ZDDMError.store(.new, .read, error)
        }
        switch record {
        case .value(let value):
            metrics.read(.new)
            return served(value, .new, span)
        case .tombstone:
            metrics.read(.new)
            return served(nil, .new, span)
        case nil:
            // Old is still written in rampdown, so a key New never received (cold, or invalidated) is there.
            return fillFromOld ? try await readOldAndFill(key, span) : served(nil, .new, span)
        }
    }

    @usableFromInline @inline(never)
    func readOldAndFill(_ key: Key, _ span: (any Span)?) async throws -> Value? {
        guard ledger.beginFill(key) else {
            return served(try await core.readOld(key, servedBy: .oldFallback), .oldFallback, span)
        }
        let value: Value?
        do {
            value = try await core.readOld(key, servedBy: .oldAfterMiss)
        } catch {
            await endFill(key, mayRepair: true)
            throw error
        }
        guard let value else {
            await endFill(key, mayRepair: true)
            return served(nil, .oldAfterMiss, span)
        }
        // The fill finishes in the background if it runs out of budget; the ledger keeps it in flight until then.
        if core.newCallTimeout == nil {
            await fill(key, value)
        } else {
            _ = await core.withinBudget(.insertIfAbsent, FillStep(proxy: self, key: key, value: value))
        }
        return served(value, .oldAfterMiss, span)
    }

    /// Inserts Old's value into New if New still holds nothing, then ends the fill.
    fileprivate func fill(_ key: Key, _ value: Value) async {
        let new = self.new
        do {
            if try await core.callNewOrThrow(.insertIfAbsent, { try await new.insertIfAbsent(key, value) }) {
                metrics.fillsInserted.increment()
            } else {
                metrics.fillsLost.increment()
            }
        } catch {
            // Either stored Old's value or nothing; races are the ledger's job.
            await endFill(key, mayRepair: false)
            return
        }
        await endFill(key, mayRepair: true)
    }

    fileprivate func endFill(_ key: Key, mayRepair: Bool) async {
        if let epoch = ledger.endFill(key, mayRepair: mayRepair && isNewTrafficAllowed) {
            await core.repair(key, epoch: epoch)
        }
    }

    /// Notes in the call's span where a read was served from, and passes the value on.
    @inlinable
    func served(_ value: Value?, _ source: ReadSource, _ span: (any Span)?) -> Value? {
        span?.attributes["zddm.served_by"] = source.rawValue
        return value
    }

    // MARK: Write and delete

    /// Writes a value: to Old, then (for keys that take part) to New.
    /// - Parameters:
    ///   - key: The key.
    ///   - value: The value.
    /// - Throws: ``ZDDMError`` naming Old when Old's write fails (New is then not touched). New's failures never
    ///   throw.
    @inlinable
    public func write(_ key: Key, _ value: Value) async throws {
        if core.usesVersions, try await mutateVersioned(key, .write(value)) { return }
        let old = self.old
        let new = self.new
        try await mutate(key, .write, oldOperation: .write, newOperation: .write) {
            try await old.write(key, value)
        } newStep: {
            try await new.write(key, value)
        }
    }

    /// Deletes a key: from Old, then (for keys that take part) a tombstone in New.
    /// - Parameter key: The key.
    /// - Throws: ``ZDDMError`` naming Old when Old's delete fails (New is then not touched). New's failures never
    ///   throw.
    @inlinable
    public func delete(_ key: Key) async throws {
        if core.usesVersions, try await mutateVersioned(key, .delete) { return }
        let old = self.old
        let new = self.new
        try await mutate(key, .delete, oldOperation: .delete, newOperation: .writeTombstone) {
            try await old.delete(key)
        } newStep: {
            try await new.writeTombstone(key)
        }
    }

    @usableFromInline
    enum MutationKind: String, Sendable {
        case write
        case delete
    }

    @usableFromInline
    func mutate(
        _ key: Key,
        _ kind: MutationKind,
        oldOperation: StoreOperation,
        newOperation: StoreOperation,
        oldStep: @Sendable () async throws -> Void,
        newStep: @escaping @Sendable () async throws -> Void
    ) async throws {
        let (first, version) = gate.versionedSnapshot
        var snapshot = first
        var plan = CallPlan.mutation(snapshot) { gate.hashRate(of: key) }
        var ticket: KeyLedger<Key>.MutationTicket?
        if plan.isOldFirst {
            // The safety memory must know of the write before the gate state its plan rests on: a fill that ended
            // before the registration ran under a gate state this plan sees. If the gate changed in between, plan
            // again (rare: a gate change, so the usual call reads the gate once).
            let registered = ledger.beginMutation(key)
            ticket = registered
            if gate.version != version {
                snapshot = gate.snapshot
                plan = CallPlan.mutation(snapshot) { gate.hashRate(of: key) }
                if !plan.isOldFirst {
                    _ = ledger.endMutation(key, registered, .overwritten, mayRepair: false)
                    ticket = nil
                }
            }
        }
        // The circuit breaker is asked only when the plan would touch New, so that a half-open probe is not claimed
        // by a call that never reaches New.
        if plan.hasNewStepAfterOld, !(core.breaker?.allowCall() ?? true) { plan = plan.withNewUnavailable() }
        guard core.isTracing else {
            return try await perform(
                plan,
                key,
                ticket,
                oldOperation: oldOperation,
                newOperation: newOperation,
                oldStep,
                newStep
            )
        }
        try await core.traced("zddm.\(kind.rawValue)") { span in
            span?.attributes["zddm.stage"] = snapshot.stage.rawValue
            span?.attributes["zddm.admitted"] = plan == .oldThenNew
            span?.attributes["db.operation.name"] = kind.rawValue
            try await perform(
                plan,
                key,
                ticket,
                oldOperation: oldOperation,
                newOperation: newOperation,
                oldStep,
                newStep
            )
        }
    }

    private func perform(
        _ plan: CallPlan.Mutation,
        _ key: Key,
        _ registered: KeyLedger<Key>.MutationTicket?,
        oldOperation: StoreOperation,
        newOperation: StoreOperation,
        _ oldStep: @Sendable () async throws -> Void,
        _ newStep: @escaping @Sendable () async throws -> Void
    ) async throws {
        switch plan {
        case .newThenOld:
            try await mutateNewFirst(oldOperation: oldOperation, newOperation: newOperation, oldStep, newStep)
            return
        case .newOnly:
            do {
                try await core.storeSpan(.new, newOperation, newStep)
            } catch {
                metrics.newFailure(newOperation)
                throw ZDDMError.store(.new, newOperation, error)
            }
            return
        case .oldOnly, .oldThenNew, .oldThenInvalidate, .oldThenHoldBack:
            break
        }
        let ticket = registered ?? ledger.beginMutation(key)
        do {
            try await core.storeSpan(.old, oldOperation, oldStep)
        } catch {
            // Old may have applied the change before failing; if New may hold the key, keep New out of it.
            _ = ledger.endMutation(key, ticket, plan.mayBeInNew ? .unsafe : .notOverwritten, mayRepair: false)
            metrics.oldFailure(oldOperation)
            throw ZDDMError.store(.old, oldOperation, error)
        }
        // Old has acknowledged: from here on nothing throws, and New's step runs even if the caller was cancelled.
        if plan.hasNewStepAfterOld, writeBack.isEnabled, writeBack.pending.begin(limit: writeBack.maxPending) {
            // Write-back: acknowledge now; New's step follows in the background, and reads keep New out of the
            // key until it has finished.
            ledger.acknowledge(key)
            let submitted = core.submitBackground {
                await self.finishMutation(key, ticket, plan, newOperation, newStep, acknowledged: true)
                self.writeBack.pending.end()
            }
            if submitted { return }
            // No background work running: the New step runs here, as without write-back.
            await finishMutation(key, ticket, plan, newOperation, newStep, acknowledged: true)
            writeBack.pending.end()
            return
        }
        // It runs within the budget; past it, it goes on in the background and the key stays in flight until then.
        guard core.newCallTimeout != nil else {
            await finishMutation(key, ticket, plan, newOperation, newStep)
            return
        }
        let step = MutationStep(
            proxy: self,
            key: key,
            ticket: ticket,
            plan: plan,
            newOperation: newOperation,
            newStep: newStep
        )
        let finished: Void? = await core.withinBudget(newOperation, step)
        if finished == nil {
            ledger.markUnsafe(key)
            metrics.unsafeKeys.record(ledger.unsafeKeys)
        }
    }

    fileprivate func finishMutation(
        _ key: Key,
        _ ticket: KeyLedger<Key>.MutationTicket,
        _ plan: CallPlan.Mutation,
        _ newOperation: StoreOperation,
        _ newStep: @Sendable () async throws -> Void,
        acknowledged: Bool = false
    ) async {
        let outcome: KeyLedger<Key>.MutationOutcome
        var newFailed = false
        switch plan {
        case .oldThenNew:
            do {
                try await core.callNewOrThrow(newOperation, newStep)
                outcome = .overwritten
            } catch {
                newFailed = true
                outcome = .unsafe
            }
        case .oldThenInvalidate:
            let new = self.new
            do {
                try await core.callNewOrThrow(.invalidate) { try await new.invalidate(key) }
                outcome = .notOverwritten
            } catch {
                newFailed = true
                outcome = .unsafe
            }
        case .oldThenHoldBack:
            // New is not touched while it is off; the key stays unsafe until a read repairs it.
            outcome = .unsafe
        case .oldOnly, .newThenOld, .newOnly:
            outcome = .notOverwritten
        }
        // A held-back step leaves New alone entirely, repairs included (New is off, or unavailable to this call).
        let mayRepair = plan != .oldThenHoldBack && !newFailed && isNewTrafficAllowed
        if let epoch = ledger.endMutation(key, ticket, outcome, mayRepair: mayRepair, acknowledged: acknowledged) {
            await core.repair(key, epoch: epoch)
        } else {
            metrics.unsafeKeys.record(ledger.unsafeKeys)
        }
    }

    /// Writes in `rampdown`: New (the source of truth) first, then Old so that a rollback stays possible.
    private func mutateNewFirst(
        oldOperation: StoreOperation,
        newOperation: StoreOperation,
        _ oldStep: () async throws -> Void,
        _ newStep: () async throws -> Void
    ) async throws {
        do {
            try await core.storeSpan(.new, newOperation, newStep)
        } catch {
            metrics.newFailure(newOperation)
            throw ZDDMError.store(.new, newOperation, error)
        }
        do {
            try await core.storeSpan(.old, oldOperation, oldStep)
        } catch {
            // New has the change; Old is behind for this key, which blocks a rollback until Old is repaired.
            metrics.oldFailure(oldOperation)
            gate.recordOldWriteMissed()
            logger.debug(
                "Old store failed during rampdown; New has the change",
                metadata: [
                    "zddm.store": "old", "zddm.operation": "\(oldOperation)", "zddm.error_type": "\(type(of: error))",
                ]
            )
        }
    }

    // MARK: Control

    /// Turns New traffic back on (killswitch off). The original ZDDM's `enable()`.
    public func enable() {
        gate.setKillswitch(false)
    }

    /// Turns all New traffic off (killswitch on): the proxy then behaves like Old alone. The original's `disable()`.
    public func disable() {
        gate.setKillswitch(true)
    }

    /// Invalidates in New the keys marked unsafe that have no operation in flight; see
    /// ``MigrationCore/repairUnsafeKeys(limit:)``.
    /// - Parameter limit: The largest number of keys to repair in this call.
    /// - Returns: The number of keys repaired.
    @discardableResult
    public func repairUnsafeKeys(limit: Int = .max) async -> Int {
        await core.repairUnsafeKeys(limit: limit)
    }

    /// Leaves degraded mode and forgets every unsafe key; see ``MigrationCore/resetAfterVerify()``.
    public func resetAfterVerify() {
        core.resetAfterVerify()
    }

    /// Forgets the unsafe keys a verify-and-repair pass covered; see ``MigrationCore/resetAfterVerify(_:)``.
    /// - Parameter report: The report of a verify pass with repair (or one that found no mismatch).
    public func resetAfterVerify(_ report: VerifyReport<Key>) {
        core.resetAfterVerify(report)
    }
}

// MARK: New steps, as values (no closure is allocated when no budget is set)

extension MigrationProxy {
    /// A read of New.
    fileprivate struct ReadStep: NewStep {
        let core: MigrationCore<Old, New>
        let key: Key

        func run(newAvailable: Bool) async -> MigrationCore<Old, New>.NewOutcome<StoreRecord<Value>?>? {
            guard newAvailable else { return nil }
            let (new, key) = (core.new, key)
            return await core.callNew(.read) { try await new.read(key) }
        }
    }

    /// A fill of Old's value into New, and the end of the fill in the safety memory.
    fileprivate struct FillStep: NewStep {
        let proxy: MigrationProxy
        let key: Key
        let value: Value

        func run(newAvailable: Bool) async {
            if newAvailable {
                await proxy.fill(key, value)
            } else {
                await proxy.endFill(key, mayRepair: false)
            }
        }
    }

    /// The repair of an unsafe key claimed by a read.
    struct RepairStep: NewStep {
        let core: MigrationCore<Old, New>
        let key: Key
        let epoch: UInt64

        func run(newAvailable: Bool) async {
            if newAvailable {
                await core.repair(key, epoch: epoch)
            } else {
                core.ledger.finishRepair(key, epoch: epoch, succeeded: false)
            }
        }
    }

    /// A write's or delete's New step, and its end in the safety memory.
    fileprivate struct MutationStep: NewStep {
        let proxy: MigrationProxy
        let key: Key
        let ticket: KeyLedger<Key>.MutationTicket
        let plan: CallPlan.Mutation
        let newOperation: StoreOperation
        let newStep: @Sendable () async throws -> Void

        func run(newAvailable: Bool) async {
            let plan = newAvailable ? plan : plan.withNewUnavailable()
            await proxy.finishMutation(key, ticket, plan, newOperation, newStep)
        }
    }
}
