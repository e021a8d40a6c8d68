public import CoreMetrics
public import Logging

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
/// (``Options/maxUnsafeKeys``); past it the proxy is *degraded*: every read goes to Old and no read fills New
/// until ``resetAfterVerify()`` is called after a verify-and-repair pass.
///
/// Old's errors are the caller's, wrapped in a ``ZDDMError`` that names Old and the operation. "Not found" is `nil`.
///
/// Share one proxy per migration between all tasks of a process: its protection against same-key races covers the
/// calls that go through it.
public final class MigrationProxy<Old: KeyValueStore, New: KeyValueStore>: Sendable
where Old.Key == New.Key, Old.Value == New.Value, Old.Key: GateKey {
    public typealias Key = Old.Key
    public typealias Value = Old.Value

    /// Tuning of the proxy's safety memory.
    public struct Options: Sendable {
        /// The largest number of keys remembered as unsafe before the proxy degrades (keeps New out of all reads).
        public var maxUnsafeKeys: Int

        /// The longest a request waits for New (a read, a fill, a write's New step, a repair); `nil` waits as long as
        /// New takes. A call that runs out of budget goes on in the background; the request continues as if New
        /// had failed (the key is kept out of New until the background call has finished and the key is repaired).
        public var newCallTimeout: Duration?
        /// Turns New traffic off when it fails or slows down too much, and probes it back on; `nil` for none.
        public var circuitBreaker: CircuitBreakerConfiguration?

        /// Creates options.
        /// - Parameters:
        ///   - maxUnsafeKeys: At least 1; 100 000 by default (a few MB at most).
        ///   - newCallTimeout: The budget for each New call on a request's path; none by default.
        ///   - circuitBreaker: The automatic killswitch; none by default.
        public init(
            maxUnsafeKeys: Int = 100_000,
            newCallTimeout: Duration? = nil,
            circuitBreaker: CircuitBreakerConfiguration? = nil
        ) {
            self.maxUnsafeKeys = maxUnsafeKeys
            self.newCallTimeout = newCallTimeout
            self.circuitBreaker = circuitBreaker
        }
    }

    /// The migration's name, used as the `migration` dimension of metrics and in logs.
    public let name: String
    /// The Old store.
    public let old: Old
    /// The New store.
    public let new: New
    /// The gate deciding which keys take part.
    public let gate: TrafficGate

    let ledger: KeyLedger<Key>
    let metrics: ProxyMetrics
    let logger: Logger
    let shadowComparison: ShadowComparison<Value>?
    let shadowSampler = FastRateHasher(salt: "zddm-shadow")
    let shadowInFlight = InFlightLimit()
    let newCallTimeout: Duration?
    let breaker: CircuitBreaker?
    let writeBack = WriteBackState()
    let writeBackPending = InFlightLimit()

    /// Creates a proxy.
    /// - Parameters:
    ///   - name: The migration's name (a metrics dimension; keep it short and stable).
    ///   - old: The source of truth.
    ///   - new: The target; must support atomic insert-if-absent and tombstones.
    ///   - gate: The traffic gate; share it with the other proxies of this migration.
    ///   - options: Safety-memory tuning.
    ///   - logger: Where the proxy logs; by default nowhere. The proxy never bootstraps logging.
    ///   - metricsFactory: Where the proxy's metrics go; by default the application's `MetricsSystem.factory`.
    ///   - shadow: How the `shadow` stage compares New with Old; by default every admitted key, with `==` for
    ///     `Equatable` values, nothing published.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/unsupported`` when New lacks a required capability, or
    ///   ``ZDDMError/Code/invalidArgument`` for an empty name or a bound below 1.
    public init(
        name: String,
        old: Old,
        new: New,
        gate: TrafficGate,
        options: Options = Options(),
        logger: Logger = Logger(label: "zddm", factory: { _ in SwiftLogNoOpLogHandler() }),
        metricsFactory: (any MetricsFactory)? = nil,
        shadow: ShadowComparison<Value> = ShadowComparison()
    ) throws {
        guard !name.isEmpty else {
            throw ZDDMError(.invalidArgument, message: "the migration name must not be empty")
        }
        guard options.maxUnsafeKeys >= 1 else {
            throw ZDDMError(.invalidArgument, message: "maxUnsafeKeys must be at least 1, got \(options.maxUnsafeKeys)")
        }
        let missing = StoreCapabilities.newStoreRequirements.subtracting(new.capabilities)
        if !missing.isEmpty {
            var names: [String] = []
            if missing.contains(.atomicInsertIfAbsent) { names.append("atomic insert-if-absent") }
            if missing.contains(.tombstones) { names.append("tombstones") }
            throw ZDDMError(
                .unsupported,
                role: .new,
                message: "the New store must support \(names.joined(separator: " and "))"
            )
        }
        guard shadow.sampleRatio >= 0, shadow.sampleRatio <= 1, shadow.maxInFlight >= 1 else {
            throw ZDDMError(.invalidArgument, message: "the shadow sample ratio must be in [0, 1] and maxInFlight ≥ 1")
        }
        if let timeout = options.newCallTimeout, timeout <= .zero {
            throw ZDDMError(.invalidArgument, message: "newCallTimeout must be above zero, got \(timeout)")
        }
        try options.circuitBreaker?.validate()
        self.newCallTimeout = options.newCallTimeout
        self.shadowComparison = shadow
        self.name = name
        self.old = old
        self.new = new
        self.gate = gate
        var logger = logger
        logger[metadataKey: "zddm.migration"] = .string(name)
        self.logger = logger
        let metrics = ProxyMetrics(migration: name, factory: metricsFactory ?? MetricsSystem.factory)
        self.metrics = metrics
        let degradedLogger = logger
        self.breaker = options.circuitBreaker.map { configuration in
            CircuitBreaker(configuration: configuration) { event in
                switch event {
                case .opened:
                    metrics.breakerTrips.increment()
                    metrics.breakerState.record(2)
                    degradedLogger.warning("New is failing or slow: circuit breaker open, New traffic off")
                case .halfOpened:
                    metrics.breakerState.record(1)
                    degradedLogger.info("circuit breaker half-open: probing New")
                case .closed:
                    metrics.breakerState.record(0)
                    degradedLogger.info("circuit breaker closed: New traffic back on")
                case .none:
                    break
                }
            }
        }
        self.ledger = KeyLedger(
            maxUnsafeKeys: options.maxUnsafeKeys,
            onUnsafe: { gate.markNewBehind() },
            onDegraded: {
                metrics.degraded.record(1)
                degradedLogger.warning(
                    "too many keys to keep safe individually; New is kept out of all reads until a verify pass",
                    metadata: ["zddm.max_unsafe_keys": "\(options.maxUnsafeKeys)"]
                )
            }
        )
    }

    /// Whether New traffic is on (the killswitch is off). The original ZDDM's `isEnabled`.
    public var isEnabled: Bool { !gate.isKillswitchOn }

    /// Number of `shadow` comparisons still running in the background.
    public var shadowComparisonsInFlight: Int { shadowInFlight.current }

    /// Number of keys currently kept out of New until repaired.
    public var unsafeKeyCount: Int { ledger.unsafeKeys }

    /// Whether the proxy is degraded: too many unsafe keys to track, so every read goes to Old.
    public var isDegraded: Bool { ledger.isDegraded }

    // MARK: Read

    /// Reads a key.
    /// - Parameter key: The key.
    /// - Returns: The value, or `nil` when the key does not exist (or was deleted).
    /// - Throws: ``ZDDMError`` naming Old when Old's read fails. New's failures never throw.
    public func read(_ key: Key) async throws -> Value? {
        let decision = gate.decide(key)
        switch decision.stage {
        case .rampdown, .complete:
            return try await readAuthoritativeNew(key, fillFromOld: decision.stage == .rampdown)
        case .off, .dualwrite:
            return try await readOld(key, servedBy: .oldOnly)
        case .shadow:
            guard decision.admitted, !(breaker?.isOpen ?? false) else {
                return try await readOld(key, servedBy: .oldOnly)
            }
            return try await shadowRead(key)
        case .live:
            guard decision.admitted, breakerAllows() else { return try await readOld(key, servedBy: .oldOnly) }
        }
        switch ledger.readPlan(key) {
        case .normal:
            break
        case .bypass:
            return try await readOld(key, servedBy: .oldFallback)
        case .repair(let epoch):
            if newCallTimeout == nil {
                await repair(key, epoch: epoch)
            } else {
                _ = await withinBudget(.invalidate) { await self.repair(key, epoch: epoch) }
            }
            return try await readOld(key, servedBy: .oldFallback)
        }

        let record: StoreRecord<Value>?
        do {
            record = try await newReadWithinBudget(key)
        } catch {
            newFailed(.read, error)
            return try await readOld(key, servedBy: .oldFallback)
        }
        switch record {
        case .value(let value):
            metrics.read(.new)
            return value
        case .tombstone:
            metrics.read(.new)
            return nil
        case nil:
            return try await readOldAndFill(key)
        }
    }

    /// Reads in `rampdown` and `complete`, where New is the source of truth: its failures are the caller's.
    private func readAuthoritativeNew(_ key: Key, fillFromOld: Bool) async throws -> Value? {
        let record: StoreRecord<Value>?
        do {
            record = try await new.read(key)
        } catch {
            metrics.newFailure(.read)
            throw ZDDMError.store(.new, .read, error)
        }
        switch record {
        case .value(let value):
            metrics.read(.new)
            return value
        case .tombstone:
            metrics.read(.new)
            return nil
        case nil:
            // Old is still written in rampdown, so a key New never received (cold, or invalidated) is there.
            return fillFromOld ? try await readOldAndFill(key) : nil
        }
    }

    private func readOldAndFill(_ key: Key) async throws -> Value? {
        guard ledger.beginFill(key) else {
            return try await readOld(key, servedBy: .oldFallback)
        }
        let value: Value?
        do {
            value = try await readOld(key, servedBy: .oldAfterMiss)
        } catch {
            await endFill(key, mayRepair: true)
            throw error
        }
        guard let value else {
            await endFill(key, mayRepair: true)
            return nil
        }
        // The fill finishes in the background if it runs out of budget; the ledger keeps it in flight until then.
        if newCallTimeout == nil {
            await fill(key, value)
        } else {
            _ = await withinBudget(.insertIfAbsent) { await self.fill(key, value) }
        }
        return value
    }

    /// Inserts Old's value into New if New still holds nothing, then ends the fill.
    private func fill(_ key: Key, _ value: Value) async {
        var newFailed = false
        do {
            if try await newCall({ try await self.new.insertIfAbsent(key, value) }) {
                metrics.fillsInserted.increment()
            } else {
                metrics.fillsLost.increment()
            }
        } catch {
            // An insert-if-absent that failed either stored Old's value or nothing; races are the ledger's job.
            self.newFailed(.insertIfAbsent, error)
            newFailed = true
        }
        await endFill(key, mayRepair: !newFailed)
    }

    private func endFill(_ key: Key, mayRepair: Bool) async {
        if let epoch = ledger.endFill(key, mayRepair: mayRepair && isNewTrafficAllowed) {
            await repair(key, epoch: epoch)
        }
    }

    func readOld(_ key: Key, servedBy source: ReadSource) async throws -> Value? {
        let record: StoreRecord<Value>?
        do {
            record = try await old.read(key)
        } catch {
            metrics.oldFailure(.read)
            throw ZDDMError.store(.old, .read, error)
        }
        metrics.read(source)
        return record?.value
    }

    func repair(_ key: Key, epoch: UInt64) async {
        do {
            try await newCall { try await self.new.invalidate(key) }
            ledger.finishRepair(key, epoch: epoch, succeeded: true)
        } catch {
            ledger.finishRepair(key, epoch: epoch, succeeded: false)
            newFailed(.invalidate, error)
        }
        metrics.unsafeKeys.record(ledger.unsafeKeys)
    }

    // MARK: Write and delete

    /// Writes a value: to Old, then (for keys that take part) to New.
    /// - Parameters:
    ///   - key: The key.
    ///   - value: The value.
    /// - Throws: ``ZDDMError`` naming Old when Old's write fails (New is then not touched). New's failures never
    ///   throw.
    public func write(_ key: Key, _ value: Value) async throws {
        try await mutate(key, oldOperation: .write, newOperation: .write) {
            try await self.old.write(key, value)
        } newStep: {
            try await self.new.write(key, value)
        }
    }

    /// Deletes a key: from Old, then (for keys that take part) a tombstone in New.
    /// - Parameter key: The key.
    /// - Throws: ``ZDDMError`` naming Old when Old's delete fails (New is then not touched). New's failures never
    ///   throw.
    public func delete(_ key: Key) async throws {
        try await mutate(key, oldOperation: .delete, newOperation: .writeTombstone) {
            try await self.old.delete(key)
        } newStep: {
            try await self.new.writeTombstone(key)
        }
    }

    private func mutate(
        _ key: Key,
        oldOperation: StoreOperation,
        newOperation: StoreOperation,
        oldStep: () async throws -> Void,
        newStep: @escaping @Sendable () async throws -> Void
    ) async throws {
        switch gate.stage {
        case .rampdown:
            try await mutateNewFirst(oldOperation: oldOperation, newOperation: newOperation, oldStep, newStep)
            return
        case .complete:
            do {
                try await newStep()
            } catch {
                metrics.newFailure(newOperation)
                throw ZDDMError.store(.new, newOperation, error)
            }
            return
        case .off, .dualwrite, .shadow, .live:
            break
        }
        let ticket = ledger.beginMutation(key)
        var decision = gate.decide(key)
        let touchesNew = decision.admitted || (decision.mayBeInNew && !decision.killswitch)
        if touchesNew, !breakerAllows() {
            // The circuit breaker is open: New is off for this call, exactly as with the killswitch.
            decision.admitted = false
            decision.killswitch = true
        }
        do {
            try await oldStep()
        } catch {
            // Old may have applied the change before failing; if New may hold the key, keep New out of it.
            _ = ledger.endMutation(key, ticket, decision.mayBeInNew ? .unsafe : .notOverwritten, mayRepair: false)
            metrics.oldFailure(oldOperation)
            throw ZDDMError.store(.old, oldOperation, error)
        }
        // Old has acknowledged: from here on nothing throws, and New's step runs even if the caller was cancelled.
        if decision.admitted || (decision.mayBeInNew && !decision.killswitch), writeBack.isEnabled,
            writeBackPending.begin(limit: writeBack.maxPending)
        {
            // Write-back: acknowledge now; New's step follows in the background, and reads keep New out of the
            // key until it has finished.
            ledger.acknowledge(key)
            Task { [decision] in
                await self.finishMutation(
                    key,
                    ticket,
                    decision,
                    newOperation: newOperation,
                    newStep: newStep,
                    acknowledged: true
                )
                self.writeBackPending.end()
            }
            return
        }
        // It runs within the budget; past it, it goes on in the background and the key stays in flight until then.
        guard newCallTimeout != nil else {
            await finishMutation(key, ticket, decision, newOperation: newOperation, newStep: newStep)
            return
        }
        let finished = await withinBudget(newOperation) { [decision] in
            await self.finishMutation(key, ticket, decision, newOperation: newOperation, newStep: newStep)
        }
        if !finished {
            ledger.markUnsafe(key)
            metrics.unsafeKeys.record(ledger.unsafeKeys)
        }
    }

    private func finishMutation(
        _ key: Key,
        _ ticket: KeyLedger<Key>.MutationTicket,
        _ decision: TrafficGate.Decision,
        newOperation: StoreOperation,
        newStep: @Sendable () async throws -> Void,
        acknowledged: Bool = false
    ) async {
        let outcome: KeyLedger<Key>.MutationOutcome
        var newFailed = false
        if decision.admitted {
            do {
                try await newCall(newStep)
                outcome = .overwritten
            } catch {
                self.newFailed(newOperation, error)
                newFailed = true
                outcome = .unsafe
            }
        } else if !decision.mayBeInNew {
            outcome = .notOverwritten
        } else if decision.killswitch {
            // New is not touched while the killswitch is on; the key stays unsafe until a read repairs it.
            outcome = .unsafe
        } else {
            do {
                try await newCall { try await self.new.invalidate(key) }
                outcome = .notOverwritten
            } catch {
                self.newFailed(.invalidate, error)
                newFailed = true
                outcome = .unsafe
            }
        }
        let mayRepair = !newFailed && isNewTrafficAllowed
        if let epoch = ledger.endMutation(key, ticket, outcome, mayRepair: mayRepair, acknowledged: acknowledged) {
            await repair(key, epoch: epoch)
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
            try await newStep()
        } catch {
            metrics.newFailure(newOperation)
            throw ZDDMError.store(.new, newOperation, error)
        }
        do {
            try await oldStep()
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

    func newFailed(_ operation: StoreOperation, _ error: any Error) {
        metrics.newFailure(operation)
        logger.debug(
            "New store failed; served from Old",
            metadata: [
                "zddm.store": "new",
                "zddm.operation": "\(operation)",
                "zddm.error_type": "\(type(of: error))",
            ]
        )
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

    /// Invalidates in New the keys marked unsafe that have no operation in flight, so they can be served from New
    /// again; reads do the same one key at a time.
    /// - Parameter limit: The largest number of keys to repair in this call.
    /// - Returns: The number of keys repaired.
    @discardableResult
    public func repairUnsafeKeys(limit: Int = .max) async -> Int {
        // With New traffic off (killswitch, stage off, breaker open), New is not touched.
        guard isNewTrafficAllowed else { return 0 }
        var repaired = 0
        for (key, epoch) in ledger.claimRepairs(limit: limit) {
            do {
                try await new.invalidate(key)
                ledger.finishRepair(key, epoch: epoch, succeeded: true)
                repaired += 1
            } catch {
                ledger.finishRepair(key, epoch: epoch, succeeded: false)
                newFailed(.invalidate, error)
            }
        }
        metrics.unsafeKeys.record(ledger.unsafeKeys)
        return repaired
    }

    /// Leaves degraded mode and forgets every unsafe key. Call it only with traffic stopped, after a
    /// verify-and-repair pass; with traffic running, use ``resetAfterVerify(_:)``, which keeps what the pass did
    /// not cover.
    public func resetAfterVerify() {
        ledger.resetAfterVerify()
        metrics.degraded.record(0)
        metrics.unsafeKeys.record(ledger.unsafeKeys)
        logger.info("safety memory reset after verify")
    }

    /// Leaves degraded mode and forgets the unsafe keys that a verify-and-repair pass covered: keys marked (and
    /// an overflow that happened) before the pass started. Keys marked during or after it stay unsafe.
    /// - Parameter report: The report of a verify pass with repair (or one that found no mismatch).
    public func resetAfterVerify(_ report: VerifyReport<Key>) {
        if ledger.resetAfterVerify(startedAt: report.safetyMark) { metrics.degraded.record(0) }
        metrics.unsafeKeys.record(ledger.unsafeKeys)
        logger.info("safety memory reset after verify")
    }
}
