public import CoreMetrics
public import Tracing

/// The proxy's paths when both stores keep versions: every write into New is fenced ("if newer than what New
/// holds"), so the order in which writes, fills and repairs reach New no longer matters, and the safety memory
/// is needed only for New steps that did not happen. With a fleet, those are handled by the fleet's barrier.
extension MigrationProxy {
    /// What a versioned write or delete does to Old.
    @usableFromInline
    enum VersionedMutation: Sendable {
        case write(Value)
        case delete

        /// What New gets: the value, or a tombstone.
        @inlinable
        var record: StoreRecord<Value> {
            switch self {
            case .write(let value): .value(value)
            case .delete: .tombstone
            }
        }

        @inlinable
        var oldOperation: StoreOperation {
            switch self {
            case .write: .write
            case .delete: .delete
            }
        }
    }

    // MARK: Read

    /// A read-through miss with versions: Old's record and version are filled through the fence (a tombstone at
    /// Old's version when Old has nothing), so a fill never overwrites a newer write.
    @inlinable
    func readOldAndFillVersioned(_ key: Key, _ span: (any Span)?) async throws -> Value? {
        let found: VersionedRecord<Value>?
        do {
            found = try await core.storeSpan(.old, .read) { try await old.readVersioned(key) }
        } catch {
            metrics.oldFailure(.read)
            throw ZDDMError.store(.old, .read, error)
        }
        metrics.read(.oldAfterMiss)
        let record = found ?? .tombstone(version: 0)
        if core.newCallTimeout == nil {
            await fillVersioned(key, record)
        } else {
            await fillVersionedWithinBudget(key, record)
        }
        return served(record.value, .oldAfterMiss, span)
    }

    @usableFromInline
    func fillVersionedWithinBudget(_ key: Key, _ record: VersionedRecord<Value>) async {
        _ = await core.withinBudget(.writeIfNewer, VersionedFillStep(proxy: self, key: key, record: record))
    }

    /// Fills New through the fence. A failed fill leaves New as it was (nothing for the key), so it needs no
    /// protection.
    @inlinable
    func fillVersioned(_ key: Key, _ record: VersionedRecord<Value>) async {
        let new = self.new
        guard
            let stored = try? await core.callNewOrThrow(.writeIfNewer, { try await new.writeIfNewer(key, record) })
        else { return }
        if stored { metrics.fillsInserted.increment() } else { metrics.fillsLost.increment() }
    }

    // MARK: Write and delete

    /// A write or delete with versions: Old first (its version comes back), then, for keys New may hold, the same
    /// record at that version into New through the fence.
    /// - Returns: `false` when the call is not for this path (New is authoritative), having done nothing.
    @inlinable
    func mutateVersioned(_ key: Key, _ mutation: VersionedMutation) async throws -> Bool {
        // The view deadline is read before the gate's snapshot, so the snapshot is at least as new as that view.
        let viewDeadline = core.fleet?.viewDeadline ?? .max
        var plan = CallPlan.mutation(gate.snapshot) { gate.hashRate(of: key) }
        guard plan.isOldFirst else { return false }
        var heldByBreaker = false
        if plan.hasNewStepAfterOld, !(core.breaker?.allowCall() ?? true) {
            plan = plan.withNewUnavailable()
            heldByBreaker = true
        }
        guard core.isTracing else {
            try await performVersioned(key, mutation, plan, heldByBreaker: heldByBreaker, viewDeadline: viewDeadline)
            return true
        }
        try await performVersionedTraced(key, mutation, plan, heldByBreaker: heldByBreaker, viewDeadline: viewDeadline)
        return true
    }

    /// ``performVersioned(_:_:_:heldByBreaker:viewDeadline:)`` in a span (kept off the untraced path).
    @usableFromInline
    func performVersionedTraced(
        _ key: Key,
        _ mutation: VersionedMutation,
        _ plan: CallPlan.Mutation,
        heldByBreaker: Bool,
        viewDeadline: Int64
    ) async throws {
        let name = mutation.oldOperation == .write ? "zddm.write" : "zddm.delete"
        let stage = gate.stage
        try await core.traced(name) { span in
            span?.attributes["zddm.stage"] = stage.rawValue
            span?.attributes["zddm.admitted"] = plan == .oldThenNew
            span?.attributes["db.operation.name"] = mutation.oldOperation.rawValue
            try await performVersioned(key, mutation, plan, heldByBreaker: heldByBreaker, viewDeadline: viewDeadline)
        }
    }

    @inlinable
    func performVersioned(
        _ key: Key,
        _ mutation: VersionedMutation,
        _ plan: CallPlan.Mutation,
        heldByBreaker: Bool,
        viewDeadline: Int64
    ) async throws {
        // With nothing around store calls, both steps run in line (as ``readThrough(_:_:)`` explains); the other
        // plans, and wrapped store calls, run in a function of their own.
        guard core.callsStoresPlainly, plan.hasNewStepAfterOld else {
            return try await performVersionedWrapped(
                key,
                mutation,
                plan,
                heldByBreaker: heldByBreaker,
                viewDeadline: viewDeadline
            )
        }
        let version: UInt64
        do {
            switch mutation {
            case .write(let value): version = try await old.writeVersioned(key, value)
            case .delete: version = try await old.deleteVersioned(key)
            }
        } catch {
            throw oldStepFailed(key, mutation, plan, error)
        }
        // Old has acknowledged: from here on nothing throws. A key the gate no longer admits but New may hold gets
        // the same fenced write: New stays current. A refused older record counts as done.
        do {
            _ = try await new.writeIfNewer(key, VersionedRecord(mutation.record, version: version))
        } catch {
            core.newFailed(.writeIfNewer, error)
            await newFellBehind(key)
        }
    }

    /// Counts a failed Old step and keeps New out of the key when needed; returns the caller's error.
    @usableFromInline
    func oldStepFailed(
        _ key: Key,
        _ mutation: VersionedMutation,
        _ plan: CallPlan.Mutation,
        _ error: any Error
    ) -> ZDDMError {
        metrics.oldFailure(mutation.oldOperation)
        // Old may have applied the change before failing: without a fleet (whose change applier copies it), keep
        // New out of the key until it is repaired.
        if core.fleet == nil, plan.mayBeInNew { markUnsafe(key) }
        return ZDDMError.store(.old, mutation.oldOperation, error)
    }

    /// ``performVersioned(_:_:_:heldByBreaker:viewDeadline:)`` with store calls wrapped, or a plan with no New step.
    @usableFromInline @inline(never)
    func performVersionedWrapped(
        _ key: Key,
        _ mutation: VersionedMutation,
        _ plan: CallPlan.Mutation,
        heldByBreaker: Bool,
        viewDeadline: Int64
    ) async throws {
        let old = self.old
        let version: UInt64
        do {
            version = try await core.storeSpan(.old, mutation.oldOperation) {
                switch mutation {
                case .write(let value): try await old.writeVersioned(key, value)
                case .delete: try await old.deleteVersioned(key)
                }
            }
        } catch {
            throw oldStepFailed(key, mutation, plan, error)
        }
        // Old has acknowledged: from here on nothing throws.
        let record = VersionedRecord(mutation.record, version: version)
        switch plan {
        case .oldThenNew, .oldThenInvalidate:
            // A key the gate no longer admits but New may hold gets the same fenced write: New stays current.
            let stored: Bool
            if core.newCallTimeout == nil {
                stored = await writeNewVersioned(key, record)
            } else {
                stored = await writeNewVersionedWithinBudget(key, record)
            }
            if !stored { await newFellBehind(key) }
        case .oldThenHoldBack:
            if heldByBreaker {
                await newFellBehind(key)
            } else if let fleet = core.fleet {
                // New is not written in this state: wait until no instance can still read New under a view from
                // before that, and acknowledge only under a current view.
                await fleet.waitOutWritingViews()
                if !fleet.isBefore(viewDeadline) { await fleet.fallBehind() }
            } else {
                markUnsafe(key)
            }
        case .oldOnly:
            // New cannot hold the key under this view; acknowledging after the view expired could race a rate
            // increase seen elsewhere.
            if let fleet = core.fleet, !fleet.isBefore(viewDeadline) { await fleet.fallBehind() }
        case .newThenOld, .newOnly:
            break
        }
    }

    /// Writes a record into New through the fence; returns `false` when New failed (a refused older record counts
    /// as done: New already holds something newer).
    @inlinable
    func writeNewVersioned(_ key: Key, _ record: VersionedRecord<Value>) async -> Bool {
        let new = self.new
        return (try? await core.callNewOrThrow(.writeIfNewer) { try await new.writeIfNewer(key, record) }) != nil
    }

    /// ``writeNewVersioned(_:_:)`` within the budget; `false` past it.
    @usableFromInline
    func writeNewVersionedWithinBudget(_ key: Key, _ record: VersionedRecord<Value>) async -> Bool {
        await core.withinBudget(.writeIfNewer, VersionedWriteStep(proxy: self, key: key, record: record)) ?? false
    }

    /// New missed a write that Old acknowledged: the fleet's barrier, or this process's safety memory.
    @usableFromInline
    func newFellBehind(_ key: Key) async {
        if let fleet = core.fleet {
            await fleet.fallBehind()
        } else {
            markUnsafe(key)
        }
    }

    @usableFromInline
    func markUnsafe(_ key: Key) {
        ledger.markUnsafe(key)
        metrics.unsafeKeys.record(ledger.unsafeKeys)
    }
}

extension MigrationProxy {
    /// A fill through the fence.
    fileprivate struct VersionedFillStep: NewStep {
        let proxy: MigrationProxy
        let key: Key
        let record: VersionedRecord<Value>

        func run(newAvailable: Bool) async {
            if newAvailable { await proxy.fillVersioned(key, record) }
        }
    }

    /// A write's or delete's New step through the fence; its result says whether New has the record (or newer).
    fileprivate struct VersionedWriteStep: NewStep {
        let proxy: MigrationProxy
        let key: Key
        let record: VersionedRecord<Value>

        func run(newAvailable: Bool) async -> Bool {
            guard newAvailable else { return false }
            return await proxy.writeNewVersioned(key, record)
        }
    }
}
