public import CoreMetrics
public import Logging
public import ServiceLifecycle
public import Tracing

/// One migration's shared parts: its stores, its gate, the safety memory that keeps stale copies in New from being
/// served, its metrics, logs, traces, clock and background work. The ``MigrationProxy``, ``Backfill`` and
/// ``Verify`` of a migration share one core, so that a backfill batch or a verify repair in the same process is
/// protected against every race the proxy's calls are.
///
/// It is also a `Service`: ``run()`` runs the migration's background work (New calls that outlive their budget,
/// write-back steps, `shadow` comparisons). Run it in the application's `ServiceGroup` when any of those is used.
/// Without it, New calls that have a budget are not made (the keys are kept out of New, as after a timeout),
/// write-back steps run before the write returns and comparisons are skipped; the core says so once in a warning.
public final class MigrationCore<Old: KeyValueStore, New: KeyValueStore>: Service, Sendable
where Old.Key == New.Key, Old.Value == New.Value, Old.Key: GateKey {
    public typealias Key = Old.Key
    public typealias Value = Old.Value

    /// The migration's name, used as the `migration` dimension of metrics and in logs and traces.
    public let name: String
    /// The Old store (the source of truth until `rampdown`).
    public let old: Old
    /// The New store.
    public let new: New
    /// The gate deciding which keys take part.
    public let gate: TrafficGate

    @usableFromInline let ledger: KeyLedger<Key>
    @usableFromInline let metrics: ProxyMetrics
    @usableFromInline let logger: Logger
    @usableFromInline let tracer: (any Tracer)?
    /// Whether ``tracer`` is set: what the request path tests (a flag, without copying the existential).
    @usableFromInline let isTracing: Bool
    /// Whether store calls need nothing around them: no tracer, no New-call budget, no circuit breaker. The request
    /// path then calls the stores in line.
    @usableFromInline let callsStoresPlainly: Bool
    @usableFromInline let clock: MigrationClock
    let background = BackgroundWork()
    @usableFromInline let newCallTimeout: Duration?
    @usableFromInline let breaker: CircuitBreaker?
    private let warnedNoBackground = AtomicFlag()

    /// Whether both stores keep versions: writes into New are then fenced ("if newer"), fills and repairs copy
    /// Old's version, and concurrent writers of a key no longer need to keep it out of New.
    public let usesVersions: Bool
    /// The instance's membership in a fleet, when the migration's state is shared by several processes.
    public let fleet: FleetMember?

    /// Creates a migration's core.
    /// - Parameters:
    ///   - name: The migration's name (a metrics dimension; keep it short and stable).
    ///   - old: The source of truth.
    ///   - new: The target; must support atomic insert-if-absent and tombstones.
    ///   - gate: The traffic gate.
    ///   - options: Safety-memory bound, New-call budget and circuit breaker.
    ///   - logger: Where the migration logs; by default nowhere. The library never bootstraps logging.
    ///   - metricsFactory: Where metrics go; by default the application's `MetricsSystem.factory`.
    ///   - tracer: Where spans go; by default the tracer installed in `InstrumentationSystem` when the core is
    ///     created. With none installed (the no-op tracer), no span is made at all.
    ///   - clock: The clock budgets, the circuit breaker and throttles measure time with.
    ///   - fleet: This instance's membership in a fleet sharing the migration's state; its gate must be `gate`.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/unsupported`` when New lacks a required capability or a
    ///   fleet is given over stores without versions, or ``ZDDMError/Code/invalidArgument`` for an empty name or
    ///   an option out of range.
    public init(
        name: String,
        old: Old,
        new: New,
        gate: TrafficGate,
        options: MigrationOptions = MigrationOptions(),
        logger: Logger = Logger(label: "zddm", factory: { _ in SwiftLogNoOpLogHandler() }),
        metricsFactory: (any MetricsFactory)? = nil,
        tracer: (any Tracer)? = nil,
        clock: some Clock<Duration> = ContinuousClock(),
        fleet: FleetMember? = nil
    ) throws {
        guard !name.isEmpty else {
            throw ZDDMError(.invalidArgument, message: "the migration name must not be empty")
        }
        try options.validate()
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
        let unversioned = [
            old.capabilities.contains(.versions) ? nil : "Old (\(type(of: old)))",
            new.capabilities.contains(.versions) ? nil : "New (\(type(of: new)))",
        ].compactMap { $0 }
        if let fleet {
            guard unversioned.isEmpty else {
                throw ZDDMError(
                    .unsupported,
                    message: "a fleet needs stores that keep versions; \(unversioned.joined(separator: " and ")) do not"
                )
            }
            guard options.usesVersions else {
                throw ZDDMError(.invalidArgument, message: "a fleet needs MigrationOptions.usesVersions")
            }
            guard fleet.gate === gate else {
                throw ZDDMError(.invalidArgument, message: "the fleet member must follow this migration's gate")
            }
        }
        self.name = name
        self.old = old
        self.new = new
        self.gate = gate
        self.usesVersions = unversioned.isEmpty && options.usesVersions
        self.fleet = fleet
        var logger = logger
        logger[metadataKey: "zddm.migration"] = .string(name)
        self.logger = logger
        if !unversioned.isEmpty {
            logger.warning(
                """
                \(unversioned.joined(separator: " and ")) keep no versions: protection against stale reads and \
                out-of-order writes holds within this process only, not across a fleet
                """
            )
        }
        let metrics = ProxyMetrics(migration: name, factory: metricsFactory ?? MetricsSystem.factory)
        self.metrics = metrics
        let tracer = tracer ?? InstrumentationSystem.tracer
        self.tracer = tracer is NoOpTracer ? nil : tracer
        self.isTracing = !(tracer is NoOpTracer)
        let clock = MigrationClock(clock)
        self.clock = clock
        self.newCallTimeout = options.newCallTimeout
        self.callsStoresPlainly = tracer is NoOpTracer && options.newCallTimeout == nil && options.circuitBreaker == nil
        let eventLogger = logger
        self.breaker = options.circuitBreaker.map { configuration in
            CircuitBreaker(configuration: configuration, clock: clock) { event in
                switch event {
                case .opened:
                    metrics.breakerTrips.increment()
                    metrics.breakerState.record(2)
                    eventLogger.warning("New is failing or slow: circuit breaker open, New traffic off")
                case .halfOpened:
                    metrics.breakerState.record(1)
                    eventLogger.info("circuit breaker half-open: probing New")
                case .closed:
                    metrics.breakerState.record(0)
                    eventLogger.info("circuit breaker closed: New traffic back on")
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
                eventLogger.warning(
                    "too many keys to keep safe individually; New is kept out of all reads until a verify pass",
                    metadata: ["zddm.max_unsafe_keys": "\(options.maxUnsafeKeys)"]
                )
            }
        )
    }

    // MARK: State

    /// Whether New traffic is on: killswitch off, stage not `off`, circuit breaker not open.
    public var isNewTrafficAllowed: Bool {
        gate.allowsNewTraffic && !(breaker?.isOpen ?? false)
    }

    /// Number of keys currently kept out of New until repaired.
    public var unsafeKeyCount: Int { ledger.unsafeKeys }

    /// Whether the safety memory overflowed, so that every read goes to Old until a verify pass.
    public var isDegraded: Bool { ledger.isDegraded }

    // MARK: Background work

    /// Runs the migration's background work until the service group shuts down (or the task is cancelled); on a
    /// graceful shutdown it stops taking work and finishes what it has.
    public func run() async throws {
        await background.run()
    }

    /// Waits until no background work is pending (New calls past their budget, write-back steps, comparisons).
    public func waitForBackgroundWork() async {
        await background.waitUntilIdle()
    }

    /// Waits until ``run()`` is accepting background work (for tests and for applications that must not start
    /// serving before it).
    public func waitUntilAcceptingBackgroundWork() async {
        await background.waitUntilRunning()
    }

    /// Whether ``run()`` is accepting background work now.
    public var isAcceptingBackgroundWork: Bool { background.isRunning }

    /// Number of background jobs submitted and not yet finished.
    public var backgroundWorkPending: Int { background.pending }

    /// Hands `job` to the background work, or reports that it is not running (warning once). With a tracer, the
    /// job runs in the submitting task's service context, so its spans stay children of the request's.
    func submitBackground(_ job: @escaping @Sendable () async -> Void) -> Bool {
        let submitted: Bool
        if tracer != nil, let context = ServiceContext.current {
            submitted = background.submit { await ServiceContext.withValue(context) { await job() } }
        } else {
            submitted = background.submit(job)
        }
        if submitted { return true }
        if warnedNoBackground.setIfUnset() {
            logger.warning(
                """
                the migration's background work is not running (run the proxy as a Service): New calls with a \
                budget are skipped (their keys are kept out of New), write-back steps run in the caller's task, \
                and shadow comparisons are skipped
                """
            )
        }
        return false
    }

    // MARK: Tracing

    /// Runs `body` in a span named `name` when a tracer is installed; otherwise just runs it. An error is recorded
    /// in the span by its type's name only (never its description, which may hold a store's details).
    @inline(__always)
    @usableFromInline
    func traced<R>(
        _ name: String,
        kind: SpanKind = .internal,
        _ body: (_ span: (any Span)?) async throws -> R
    ) async throws -> R {
        guard let tracer else { return try await body(nil) }
        let span = tracer.startSpan(name, context: ServiceContext.current ?? .topLevel, ofKind: kind)
        span.attributes["zddm.migration"] = self.name
        defer { span.end() }
        do {
            return try await ServiceContext.withValue(span.context) { try await body(span) }
        } catch {
            span.setStatus(SpanStatus(code: .error, message: "\(type(of: error))"))
            throw error
        }
    }

    /// Runs one store call in a child span `zddm.old.<operation>` or `zddm.new.<operation>`.
    @inlinable @inline(__always)
    func storeSpan<R>(
        _ role: StoreRole,
        _ operation: StoreOperation,
        _ body: () async throws -> R
    ) async throws -> R {
        guard isTracing else { return try await body() }
        return try await traced("zddm.\(role.rawValue).\(operation.rawValue)", kind: .client) { span in
            span?.attributes["db.operation.name"] = operation.rawValue
            span?.attributes["zddm.store"] = role.rawValue
            return try await body()
        }
    }

    // MARK: New calls

    /// How a New call ended.
    enum NewOutcome<R: Sendable>: Sendable {
        case succeeded(R)
        case failed(any Error)
    }

    /// Runs one call to New: the circuit breaker hears of its outcome and duration, a failure is counted and logged,
    /// and it gets its own span. It never throws.
    func callNew<R: Sendable>(_ operation: StoreOperation, _ body: () async throws -> R) async -> NewOutcome<R> {
        do {
            return .succeeded(try await callNewOrThrow(operation, body))
        } catch {
            return .failed(error)
        }
    }

    /// ``callNew(_:_:)`` for callers that handle a failure with `catch` (the request path: no result enum to build).
    @inlinable @inline(__always)
    func callNewOrThrow<R>(_ operation: StoreOperation, _ body: () async throws -> R) async throws -> R {
        let started = breaker == nil ? nil : clock.now
        do {
            let result = try await storeSpan(.new, operation, body)
            if let started { breaker?.record(failed: false, duration: clock.now - started) }
            return result
        } catch {
            if let started { breaker?.record(failed: true, duration: clock.now - started) }
            newFailed(operation, error)
            throw error
        }
    }

    /// Runs a New step within the New-call budget: the one place where the budget is enforced. The step does its
    /// New calls through ``callNew(_:_:)`` and its bookkeeping; its argument says whether it may call New. Without
    /// a budget it runs in the caller's task (a value, not a closure: nothing is allocated). With one, it runs as
    /// background work and the caller waits at most the budget: past it, the step goes on in the background and
    /// this returns `nil`. (The request path calls the step's work directly when no budget is set, so that no step
    /// value is built on the hot path.) With a budget but no background work running, New is not called at all (`run(false)`,
    /// in the caller's task): a request never waits longer than its budget, and the step records New as
    /// unavailable. A caller cancelled while waiting also gets `nil`, without counting a timeout.
    @usableFromInline
    func withinBudget<Step: NewStep>(_ operation: StoreOperation, _ step: Step) async -> Step.Result? {
        guard let budget = newCallTimeout else { return await step.run(newAvailable: true) }
        let result = OneShot<Step.Result>()
        guard submitBackground({ result.fulfil(await step.run(newAvailable: true)) }) else {
            return await step.run(newAvailable: false)
        }
        let clock = self.clock
        let finished = await withTaskGroup(of: Step.Result?.self) { group in
            group.addTask { await result.wait() }
            group.addTask {
                try? await clock.sleep(for: budget)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        if finished == nil, !Task.isCancelled {
            metrics.newTimeouts.increment()
            breaker?.record(failed: true, duration: budget)
            logger.debug(
                "New call ran out of budget; it goes on in the background",
                metadata: ["zddm.store": "new", "zddm.operation": "\(operation)"]
            )
        }
        return finished
    }

    @usableFromInline
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

    // MARK: Old

    /// Reads Old for a caller, counting where the read was served from.
    @inlinable @inline(__always)
    func readOld(_ key: Key, servedBy source: ReadSource) async throws -> Value? {
        let record: StoreRecord<Value>?
        do {
            record = try await storeSpan(.old, .read) { try await old.read(key) }
        } catch {
            metrics.oldFailure(.read)
            throw ZDDMError.store(.old, .read, error)
        }
        metrics.read(source)
        return record?.value
    }

    // MARK: Repairs

    /// Makes New safe for an unsafe key (a repair claimed from the safety memory) and records the outcome: with
    /// versions, Old's record is copied through the fence; without, the key is invalidated.
    @usableFromInline
    func repair(_ key: Key, epoch: UInt64) async {
        do {
            try await repairInNew(key)
            ledger.finishRepair(key, epoch: epoch, succeeded: true)
        } catch {
            ledger.finishRepair(key, epoch: epoch, succeeded: false)
        }
        metrics.unsafeKeys.record(ledger.unsafeKeys)
    }

    /// Brings New's copy of a key up to Old's: Old's versioned record through the fence, or an invalidation.
    private func repairInNew(_ key: Key) async throws {
        guard usesVersions else {
            try await callNewOrThrow(.invalidate) { try await new.invalidate(key) }
            return
        }
        let record: VersionedRecord<Value>
        do {
            record = try await storeSpan(.old, .read) { try await old.readVersioned(key) } ?? .tombstone(version: 0)
        } catch {
            metrics.oldFailure(.read)
            throw error
        }
        _ = try await callNewOrThrow(.writeIfNewer) { try await new.writeIfNewer(key, record) }
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
            if (try? await repairInNew(key)) != nil {
                ledger.finishRepair(key, epoch: epoch, succeeded: true)
                repaired += 1
            } else {
                ledger.finishRepair(key, epoch: epoch, succeeded: false)
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

/// Tuning of a migration's safety memory and its protection against a failing or slow New.
public struct MigrationOptions: Sendable {
    /// The largest number of keys remembered as unsafe before the migration degrades (keeps New out of all reads).
    public var maxUnsafeKeys: Int
    /// The longest a request waits for New (a read, a fill, a write's New step, a repair); `nil` waits as long as
    /// New takes. A call that runs out of budget goes on in the background; the request continues as if New
    /// had failed (the key is kept out of New until the background call has finished and the key is repaired).
    public var newCallTimeout: Duration?
    /// Turns New traffic off when it fails or slows down too much, and probes it back on; `nil` for none.
    public var circuitBreaker: CircuitBreakerConfiguration?
    /// Whether to use versions when both stores keep them (fenced writes into New); `true` by default. Turn it
    /// off only for write-back, or to compare with the per-process protection.
    public var usesVersions: Bool

    /// Creates options.
    /// - Parameters:
    ///   - maxUnsafeKeys: At least 1; 100 000 by default (a few MB at most).
    ///   - newCallTimeout: The budget for each New call on a request's path; none by default.
    ///   - circuitBreaker: The automatic killswitch; none by default.
    ///   - usesVersions: Whether to use versions when both stores keep them; `true` by default.
    public init(
        maxUnsafeKeys: Int = 100_000,
        newCallTimeout: Duration? = nil,
        circuitBreaker: CircuitBreakerConfiguration? = nil,
        usesVersions: Bool = true
    ) {
        self.maxUnsafeKeys = maxUnsafeKeys
        self.newCallTimeout = newCallTimeout
        self.circuitBreaker = circuitBreaker
        self.usesVersions = usesVersions
    }

    func validate() throws {
        guard maxUnsafeKeys >= 1 else {
            throw ZDDMError(.invalidArgument, message: "maxUnsafeKeys must be at least 1, got \(maxUnsafeKeys)")
        }
        if let timeout = newCallTimeout, timeout <= .zero {
            throw ZDDMError(.invalidArgument, message: "newCallTimeout must be above zero, got \(timeout)")
        }
        try circuitBreaker?.validate()
    }
}

/// One New step of a proxy call (a read, a fill, a write's New step, a repair), as a value: what
/// ``MigrationCore/withinBudget(_:_:)`` runs in the caller's task or in the background.
@usableFromInline
protocol NewStep: Sendable {
    associatedtype Result: Sendable
    /// Runs the step; `newAvailable` is `false` when New must not be called (the step records New as unavailable).
    func run(newAvailable: Bool) async -> Result
}
