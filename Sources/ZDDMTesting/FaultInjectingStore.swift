import Synchronization
public import ZDDM

/// The error a ``FaultInjectingStore`` throws for an injected failure.
public struct InjectedFault: Error, Sendable, ValueFreeDescription {
    /// The operation that was made to fail.
    public let operation: StoreOperation
    /// Whether the wrapped store had applied the operation before the failure was reported (like a timeout that
    /// fires after the database committed).
    public let applied: Bool

    /// Creates an injected failure.
    /// - Parameters:
    ///   - operation: The failed operation.
    ///   - applied: Whether the store had applied it.
    public init(operation: StoreOperation, applied: Bool) {
        self.operation = operation
        self.applied = applied
    }

    public var description: String {
        "injected fault on \(operation) (\(applied ? "after" : "before") the store applied it)"
    }
}

/// Wraps a store to inject delays, failures and hooks, for failure and race tests.
///
/// Faults are random but seeded; the order in which concurrent calls draw from the generator depends on
/// scheduling, so a seed reproduces the distribution of faults, and a single-task run exactly. An injected failure
/// is reported either before the wrapped store is called (nothing applied) or after it returned (applied), chosen
/// at random; either way the operation has taken effect or not by the time the error is thrown, as the
/// ``KeyValueStore`` contract requires.
///
/// Hooks run before and after each call and may suspend (to hold a call at a chosen point with an
/// ``AsyncSignal``) or throw (to fail that call).
public final class FaultInjectingStore<Base: KeyValueStore>: KeyValueStore, Sendable {
    public typealias Key = Base.Key
    public typealias Value = Base.Value
    /// A hook called with the operation and the key (the first key for batch operations, `nil` for listings).
    public typealias Hook = @Sendable (StoreOperation, Key?) async throws -> Void

    /// What to inject.
    public struct Faults: Sendable {
        /// Share of calls that fail, in `[0, 1]`.
        public var failureRate: Double
        /// Each call is delayed by a random duration in `[0, maxDelay]`.
        public var maxDelay: Duration
        /// The operations faults apply to.
        public var operations: Set<StoreOperation>
        /// Share of injected failures reported after the wrapped store applied the operation.
        public var appliedShare: Double

        /// Creates a fault plan.
        /// - Parameters:
        ///   - failureRate: Share of calls that fail; 0 by default.
        ///   - maxDelay: Largest random delay; none by default.
        ///   - operations: Operations affected; all by default.
        ///   - appliedShare: Share of failures reported after applying; half by default.
        public init(
            failureRate: Double = 0,
            maxDelay: Duration = .zero,
            operations: Set<StoreOperation> = Set(StoreOperation.allCases),
            appliedShare: Double = 0.5
        ) {
            self.failureRate = failureRate
            self.maxDelay = maxDelay
            self.operations = operations
            self.appliedShare = appliedShare
        }
    }

    private struct State {
        var faults: Faults
        var random: SplitMix64
        var outage = false
        var injected = 0
        var calls = 0
        var before: Hook?
        var after: Hook?
    }

    /// The wrapped store.
    public let base: Base
    private let state: Mutex<State>

    public var capabilities: StoreCapabilities { base.capabilities }

    /// Wraps a store.
    /// - Parameters:
    ///   - base: The store to wrap.
    ///   - faults: What to inject; nothing by default.
    ///   - seed: The random seed.
    ///   - before: A hook run before each call.
    ///   - after: A hook run after each successful call of the wrapped store.
    public init(_ base: Base, faults: Faults = Faults(), seed: UInt64 = 0, before: Hook? = nil, after: Hook? = nil) {
        self.base = base
        self.state = Mutex(State(faults: faults, random: SplitMix64(seed: seed), before: before, after: after))
    }

    /// Replaces the fault plan.
    public func setFaults(_ faults: Faults) {
        state.withLock { $0.faults = faults }
    }

    /// Starts or ends an outage: while it lasts, every call fails before reaching the wrapped store.
    public func setOutage(_ on: Bool) {
        state.withLock { $0.outage = on }
    }

    /// Replaces the hooks.
    public func setHooks(before: Hook?, after: Hook?) {
        state.withLock {
            $0.before = before
            $0.after = after
        }
    }

    /// How many failures have been injected so far (outages included).
    public var injectedFailures: Int { state.withLock { $0.injected } }

    /// How many calls reached this wrapper.
    public var calls: Int { state.withLock { $0.calls } }

    private struct Plan {
        var delay: Duration
        var fail: Bool
        var failAfterApplying: Bool
        var before: Hook?
        var after: Hook?
    }

    private func plan(_ operation: StoreOperation) -> Plan {
        state.withLock { state in
            state.calls += 1
            var plan = Plan(
                delay: .zero,
                fail: false,
                failAfterApplying: false,
                before: state.before,
                after: state.after
            )
            if state.outage {
                plan.fail = true
                state.injected += 1
                return plan
            }
            guard state.faults.operations.contains(operation) else { return plan }
            if state.faults.maxDelay > .zero {
                let nanos =
                    state.faults.maxDelay.components.seconds * 1_000_000_000
                    + state.faults.maxDelay.components.attoseconds / 1_000_000_000
                if nanos > 0 { plan.delay = .nanoseconds(Int64.random(in: 0...nanos, using: &state.random)) }
            }
            if state.faults.failureRate > 0, Double.random(in: 0..<1, using: &state.random) < state.faults.failureRate {
                plan.fail = true
                plan.failAfterApplying = Double.random(in: 0..<1, using: &state.random) < state.faults.appliedShare
                state.injected += 1
            }
            return plan
        }
    }

    private func run<R>(_ operation: StoreOperation, _ key: Key?, _ body: () async throws -> R) async throws -> R {
        let plan = plan(operation)
        try await plan.before?(operation, key)
        if plan.delay > .zero { try await Task.sleep(for: plan.delay) }
        if plan.fail, !plan.failAfterApplying { throw InjectedFault(operation: operation, applied: false) }
        let result = try await body()
        if plan.fail { throw InjectedFault(operation: operation, applied: true) }
        try await plan.after?(operation, key)
        return result
    }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        try await run(.read, key) { try await base.read(key) }
    }

    public func write(_ key: Key, _ value: Value) async throws {
        try await run(.write, key) { try await base.write(key, value) }
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        try await run(.insertIfAbsent, key) { try await base.insertIfAbsent(key, value) }
    }

    public func delete(_ key: Key) async throws {
        try await run(.delete, key) { try await base.delete(key) }
    }

    public func writeTombstone(_ key: Key) async throws {
        try await run(.writeTombstone, key) { try await base.writeTombstone(key) }
    }

    public func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>? {
        try await run(.read, key) { try await base.readVersioned(key) }
    }

    public func versionedRecords(
        after cursor: Key?,
        limit: Int
    ) async throws -> [(key: Key, record: VersionedRecord<Value>)] {
        try await run(.listKeys, nil) { try await base.versionedRecords(after: cursor, limit: limit) }
    }

    public func writeManyIfNewerCounting(
        _ entries: [(key: Key, record: VersionedRecord<Value>)]
    ) async throws -> FencedWriteCount {
        try await run(.writeIfNewer, nil) { try await base.writeManyIfNewerCounting(entries) }
    }

    public func keyVersions(after cursor: Key?, limit: Int) async throws -> [KeyVersion<Key>] {
        try await run(.listKeys, nil) { try await base.keyVersions(after: cursor, limit: limit) }
    }

    public func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>] {
        try await run(.readMany, nil) { try await base.readManyVersioned(keys) }
    }

    public func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64 {
        try await run(.write, key) { try await base.writeVersioned(key, value) }
    }

    public func deleteVersioned(_ key: Key) async throws -> UInt64 {
        try await run(.delete, key) { try await base.deleteVersioned(key) }
    }

    public func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool {
        try await run(.writeIfNewer, key) { try await base.writeIfNewer(key, record) }
    }

    public func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key> {
        try await run(.writeIfNewer, nil) { try await base.writeManyIfNewer(entries) }
    }

    public func capturedChanges(limit: Int) async throws -> [CapturedChange<Key>] {
        try await run(.changes, nil) { try await base.capturedChanges(limit: limit) }
    }

    public func removeCapturedChanges(_ changes: [CapturedChange<Key>]) async throws {
        try await run(.changes, nil) { try await base.removeCapturedChanges(changes) }
    }

    public func changeBacklog() async throws -> ChangeBacklog {
        try await base.changeBacklog()
    }

    public func invalidate(_ key: Key) async throws {
        try await run(.invalidate, key) { try await base.invalidate(key) }
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        try await run(.listKeys, nil) { try await base.keys(after: cursor, limit: limit) }
    }

    public func keysIncludingDeleted(after cursor: Key?, limit: Int) async throws -> [Key] {
        try await run(.listKeys, nil) { try await base.keysIncludingDeleted(after: cursor, limit: limit) }
    }

    public func listsKey(_ first: Key, before second: Key) -> Bool? {
        base.listsKey(first, before: second)
    }

    public func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>] {
        try await run(.readMany, keys.first) { try await base.readMany(keys) }
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        try await run(.insertManyIfAbsent, entries.first?.key) { try await base.insertManyIfAbsent(entries) }
    }
}
