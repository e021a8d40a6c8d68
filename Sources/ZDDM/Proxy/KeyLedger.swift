import Synchronization

/// The proxy's memory of keys whose copy in New cannot be trusted, and of the operations in flight on each key.
///
/// New holds a stale value for a key only in these ways, and the ledger closes each of them:
///
/// - a New step of a write or delete failed (or the killswitch skipped it, or Old failed ambiguously) while New
///   may hold an older copy → the key is marked *unsafe*;
/// - two writes or deletes of the same key overlapped, so New may have applied them in another order than Old →
///   unsafe;
/// - a fill (Old read, then insert-if-absent into New) overlapped a write or delete that did not overwrite New
///   (an invalidation, or a key the gate kept out of New): the fill may insert a value older than Old's → unsafe.
///
/// A New call that ran out of the proxy's budget stays in flight here until it really ends (the key is marked
/// unsafe at once), and a write-back write acknowledged before its New step keeps reads of the key on Old until
/// that step ends.
///
/// Reads never serve an unsafe key from New and never fill it. Once no operation on it is in flight, the last
/// operation to finish, a later read, or `repairUnsafeKeys` repairs it by invalidating it in New; marks made
/// meanwhile keep it unsafe. The number of unsafe keys is bounded; past the bound the ledger is *degraded*: New is
/// kept out of every read until a reset after a verify pass (``resetAfterVerify(startedAt:)``), which forgets only
/// what happened before the pass started.
@usableFromInline
final class KeyLedger<Key: Hashable & Sendable>: Sendable {
    struct State {
        var mutations = 0
        var fills = 0
        var fillStarts: UInt64 = 0
        var unsafe = false
        var unsafeEpoch: UInt64 = 0
        var repairing = false
        /// Write-back mutations acknowledged to the caller whose New step has not finished.
        var acknowledged = 0
        /// The ledger's sequence number when the key was last marked unsafe.
        var markedAt: UInt64 = 0

        var isIdle: Bool { mutations == 0 && fills == 0 && !unsafe && !repairing && acknowledged == 0 }
    }

    final class Shard: Sendable {
        let states = Mutex<[Key: State]>([:])
    }

    /// What a read should do with New.
    @usableFromInline
    enum ReadPlan: Equatable, Sendable {
        /// Read New first, as usual.
        case normal
        /// Keep New out of this read (unsafe key, repair in progress, or degraded).
        case bypass
        /// Invalidate the key in New, then read Old; report with ``finishRepair(_:epoch:succeeded:)``.
        case repair(epoch: UInt64)
    }

    /// What a write or delete did to New.
    enum MutationOutcome {
        /// New now holds the latest value or tombstone.
        case overwritten
        /// New was not overwritten (invalidated, or not touched because New holds no copy).
        case notOverwritten
        /// New may hold an older value than Old.
        case unsafe
        /// New's copy was invalidated by a repair: like ``notOverwritten``, and the key's unsafe mark is cleared if
        /// nothing marked it since the repair began and nothing else is in flight on it.
        case invalidated
    }

    /// A snapshot taken when a write or delete begins.
    struct MutationTicket: Sendable {
        var fillsInFlight: Bool
        var fillStarts: UInt64
        /// The key's mark count when the mutation began (before its own overlap mark, if any).
        var unsafeEpoch: UInt64 = 0
    }

    private let shards: [Shard]
    private let shardShift: UInt
    private let unsafeCount = Atomic<Int>(0)
    private let acknowledgedCount = Atomic<Int>(0)
    private let sequence = Atomic<UInt64>(1)
    private let degradedAt = Atomic<UInt64>(0)
    private let degradedFlag = Atomic<Bool>(false)
    let maxUnsafeKeys: Int
    private let onDegraded: @Sendable () -> Void
    private let onUnsafe: @Sendable () -> Void

    init(
        maxUnsafeKeys: Int,
        shardBits: Int = 4,
        onUnsafe: @escaping @Sendable () -> Void = {},
        onDegraded: @escaping @Sendable () -> Void = {}
    ) {
        self.maxUnsafeKeys = maxUnsafeKeys
        let bits = min(max(shardBits, 0), 12)
        self.shards = (0..<(1 << bits)).map { _ in Shard() }
        self.shardShift = UInt(UInt.bitWidth - bits)
        self.onUnsafe = onUnsafe
        self.onDegraded = onDegraded
    }

    /// The number of keys currently marked unsafe.
    @usableFromInline
    var unsafeKeys: Int { unsafeCount.load(ordering: .relaxed) }

    /// Whether the ledger overflowed and keeps New out of every read.
    var isDegraded: Bool { degradedFlag.load(ordering: .acquiring) }

    private func shard(for key: Key) -> Shard {
        // Swift's per-process hash is fine here: sharding is local to this process and never decides routing. The
        // high bits pick the shard: the shard's dictionary places keys by the low ones, which would all be alike.
        shards[Int(truncatingIfNeeded: UInt(bitPattern: key.hashValue) >> shardShift)]
    }

    /// What happened under a shard's lock that the callbacks must hear of, once the lock is released.
    struct Events {
        var marked = false
        var degraded = false
    }

    private func update<R>(_ key: Key, _ body: (inout State, inout Events) -> R) -> R {
        var events = Events()
        let result = shard(for: key).states.withLock { states in
            var state = states[key] ?? State()
            let result = body(&state, &events)
            if state.isIdle {
                states.removeValue(forKey: key)
            } else {
                states[key] = state
            }
            return result
        }
        notify(events)
        return result
    }

    /// Runs the callbacks for what happened; never called with a lock held.
    private func notify(_ events: Events) {
        if events.marked { onUnsafe() }
        if events.degraded { onDegraded() }
    }

    /// A fresh sequence number for a verify pass to take when it starts: every mark made before it is smaller,
    /// every mark made after it larger.
    func takeMark() -> UInt64 {
        sequence.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
    }

    private func markUnsafe(_ state: inout State, _ events: inout Events) {
        state.unsafeEpoch &+= 1
        state.markedAt = sequence.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
        events.marked = true
        guard !state.unsafe else { return }
        // Reserve a slot; past the bound, degrade instead of growing.
        let previous = unsafeCount.wrappingAdd(1, ordering: .relaxed).oldValue
        if previous >= maxUnsafeKeys {
            unsafeCount.wrappingSubtract(1, ordering: .relaxed)
            degradedAt.store(state.markedAt, ordering: .releasing)
            if !degradedFlag.exchange(true, ordering: .acquiringAndReleasing) { events.degraded = true }
            return
        }
        state.unsafe = true
    }

    private func clearUnsafe(_ state: inout State) {
        guard state.unsafe else { return }
        state.unsafe = false
        unsafeCount.wrappingSubtract(1, ordering: .relaxed)
    }

    // MARK: Reads

    @usableFromInline
    func readPlan(_ key: Key) -> ReadPlan {
        if isDegraded { return .bypass }
        // Fast path: nothing is unsafe or pending, so nothing to look up.
        if unsafeCount.load(ordering: .acquiring) == 0, acknowledgedCount.load(ordering: .acquiring) == 0 {
            return .normal
        }
        return update(key) { state, events in
            // A write-back write was acknowledged and New does not have it yet: Old answers.
            if state.acknowledged > 0 { return .bypass }
            guard state.unsafe else { return .normal }
            guard let epoch = claimIfIdle(&state) else { return .bypass }
            return .repair(epoch: epoch)
        }
    }

    func finishRepair(_ key: Key, epoch: UInt64, succeeded: Bool) {
        update(key) { state, events in
            state.repairing = false
            if succeeded, state.unsafeEpoch == epoch { clearUnsafe(&state) }
        }
    }

    /// Registers a fill before it reads Old. Returns `false` when the key must not be filled.
    func beginFill(_ key: Key) -> Bool {
        if isDegraded { return false }
        return update(key) { state, events in
            if state.unsafe || state.repairing || state.acknowledged > 0 { return false }
            state.fills += 1
            state.fillStarts &+= 1
            return true
        }
    }

    /// Ends a fill. Returns a repair claim when the fill leaves the key unsafe and idle and `mayRepair` is set.
    func endFill(_ key: Key, mayRepair: Bool) -> UInt64? {
        update(key) { state, events in
            state.fills -= 1
            return mayRepair ? claimIfIdle(&state) : nil
        }
    }

    /// Claims the repair of an unsafe key that has no operation in flight.
    private func claimIfIdle(_ state: inout State) -> UInt64? {
        guard state.unsafe, !state.repairing, state.fills == 0, state.mutations == 0 else { return nil }
        state.repairing = true
        return state.unsafeEpoch
    }

    /// Registers fills for a batch (backfill, repair); returns the keys that may be filled, in order.
    /// - Parameter whileDegraded: Whether the batch may fill while the ledger is degraded: only for keys a repair
    ///   has just invalidated (registered as mutations), so that nothing older than Old's value can be in New for
    ///   them; a race during the fill marks them again, and a degraded ledger stays degraded until a reset that
    ///   covers that mark.
    func beginFills(_ keys: [Key], whileDegraded: Bool = false) -> [Key] {
        if isDegraded, !whileDegraded { return [] }
        return keys.filter { key in
            update(key) { state, _ in
                if state.unsafe || state.repairing || state.acknowledged > 0 { return false }
                state.fills += 1
                state.fillStarts &+= 1
                return true
            }
        }
    }

    /// Ends a batch of fills; returns the repair claims of keys left unsafe and idle.
    func endFills(_ keys: [Key], mayRepair: Bool) -> [(key: Key, epoch: UInt64)] {
        keys.compactMap { key in endFill(key, mayRepair: mayRepair).map { (key, $0) } }
    }

    // MARK: Writes and deletes

    func beginMutation(_ key: Key) -> MutationTicket {
        update(key) { state, events in
            state.mutations += 1
            // Taken before this mutation's own overlap mark: a repair that overlapped other mutations never clears.
            let epoch = state.unsafeEpoch
            // Two writes in flight on one key may reach New in another order than they reached Old.
            if state.mutations > 1 { markUnsafe(&state, &events) }
            return MutationTicket(fillsInFlight: state.fills > 0, fillStarts: state.fillStarts, unsafeEpoch: epoch)
        }
    }

    /// Ends a write or delete. Returns a repair claim when the key is left unsafe and idle and `mayRepair` is set,
    /// so that the last operation out invalidates New before returning.
    func endMutation(
        _ key: Key,
        _ ticket: MutationTicket,
        _ outcome: MutationOutcome,
        mayRepair: Bool,
        acknowledged: Bool = false
    ) -> UInt64? {
        if acknowledged { acknowledgedCount.wrappingSubtract(1, ordering: .acquiringAndReleasing) }
        return update(key) { state, events in
            state.mutations -= 1
            if acknowledged { state.acknowledged -= 1 }
            switch outcome {
            case .overwritten:
                break
            case .notOverwritten, .invalidated:
                // A fill that overlapped this mutation may have read Old before it and insert afterwards.
                if ticket.fillsInFlight || state.fills > 0 || state.fillStarts != ticket.fillStarts {
                    markUnsafe(&state, &events)
                } else if outcome == .invalidated, state.unsafeEpoch == ticket.unsafeEpoch, state.mutations == 0,
                    !state.repairing
                {
                    // New holds nothing for the key now, and nothing happened to it meanwhile: it is repaired.
                    clearUnsafe(&state)
                }
            case .unsafe:
                markUnsafe(&state, &events)
            }
            return mayRepair ? claimIfIdle(&state) : nil
        }
    }

    /// Records that a write-back mutation was acknowledged before its New step finished: reads keep New out of
    /// the key until ``endMutation(_:_:_:mayRepair:acknowledged:)`` reports it.
    func acknowledge(_ key: Key) {
        update(key) { state, _ in state.acknowledged += 1 }
        acknowledgedCount.wrappingAdd(1, ordering: .acquiringAndReleasing)
    }

    /// Keeps New out of every read until ``resetAfterVerify()`` (New cannot be trusted, for example after a
    /// write-back session ended without draining).
    func degrade() {
        degradedAt.store(sequence.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue, ordering: .releasing)
        if !degradedFlag.exchange(true, ordering: .acquiringAndReleasing) { notify(Events(degraded: true)) }
    }

    /// Marks a key unsafe now, whatever is in flight on it (a New call that ran out of budget).
    func markUnsafe(_ key: Key) {
        update(key) { state, events in markUnsafe(&state, &events) }
    }

    // MARK: Recovery

    /// Keys marked unsafe with no operation in flight, claimed for repair (at most `limit`).
    func claimRepairs(limit: Int) -> [(key: Key, epoch: UInt64)] {
        var claimed: [(key: Key, epoch: UInt64)] = []
        for shard in shards where claimed.count < limit {
            shard.states.withLock { states in
                for (key, var state) in states where claimed.count < limit {
                    guard state.unsafe, !state.repairing, state.fills == 0, state.mutations == 0 else { continue }
                    state.repairing = true
                    states[key] = state
                    claimed.append((key, state.unsafeEpoch))
                }
            }
        }
        return claimed
    }

    /// Leaves degraded mode and forgets unsafe keys with no operation in flight, counting only what happened
    /// before `mark` (a verify pass's starting mark): later marks are not covered by that pass and stay.
    /// - Returns: Whether degraded mode was left.
    @discardableResult
    func resetAfterVerify(startedAt mark: UInt64 = .max) -> Bool {
        for shard in shards {
            shard.states.withLock { states in
                for (key, var state) in states
                where state.unsafe && state.mutations == 0 && state.fills == 0 && state.markedAt < mark {
                    clearUnsafe(&state)
                    if state.isIdle { states.removeValue(forKey: key) } else { states[key] = state }
                }
            }
        }
        guard degradedAt.load(ordering: .acquiring) < mark else { return false }
        degradedFlag.store(false, ordering: .releasing)
        return true
    }
}
