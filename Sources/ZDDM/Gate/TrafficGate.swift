import Synchronization

/// Decides which keys take part in a migration: a rate in `[0, 1]`, a hasher, a killswitch, and the
/// high-water rate.
///
/// A key is *in* when the killswitch is off and its hash rate is below the rate. Rate 0 admits no key and rate 1
/// admits every key, both without hashing. Admission is monotonic: a key in at rate `r` is in at every rate
/// above `r`.
///
/// Rate and killswitch can be changed at any time from any task; reading them on the request path is a couple of
/// atomic loads (no lock, no actor hop). Share one gate between the proxies of one migration.
///
/// The gate also remembers the *high-water rate*, the largest rate it has ever had. A key whose hash rate is below
/// it may have a copy in New even after the rate goes down, so the proxy keeps such keys safe on writes and
/// deletes. If other processes of the fleet ran at a higher rate, tell this gate with
/// ``raiseHighWaterRate(to:)`` when it starts.
public final class TrafficGate: Sendable {
    /// The hasher that maps keys to hash rates.
    public let hasher: any GateHasher

    /// Every change goes through this, one at a time.
    private let control: Mutex<GateControlState>
    /// What the request path reads, published from `control` after every change (a sequence lock: odd while a
    /// change is being published, so a reader retries rather than mixing two states).
    private let sequence = Atomic<UInt64>(0)
    private let rateBits: Atomic<UInt64>
    private let highWaterBits: Atomic<UInt64>
    /// Bit 8: killswitch; bits 0–7: the stage's code.
    private let flags: Atomic<UInt64>

    /// Creates a gate.
    /// - Parameters:
    ///   - rate: The initial rate, in `[0, 1]`; 0 (the default) admits no key.
    ///   - hasher: The hasher; by default the original ZDDM's unsalted SHA-1 rate hasher.
    ///   - killswitch: Whether New traffic starts switched off.
    ///   - stage: The initial stage; `live` (the original ZDDM behaviour) by default. Only `off` to `live` can be
    ///     given here; `rampdown` and `complete` are reached through ``setStage(_:)``.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` when `rate` is NaN or outside `[0, 1]`, or
    ///   ``ZDDMError/Code/refusedTransition`` for a stage a gate cannot start in.
    public init(
        rate: Double = 0,
        hasher: any GateHasher = SHA1RateHasher(),
        killswitch: Bool = false,
        stage: MigrationStage = .live
    ) throws {
        let state = try GateControlState(rate: rate, killswitch: killswitch, stage: stage)
        self.hasher = hasher
        self.control = Mutex(state)
        self.rateBits = Atomic(rate.bitPattern)
        self.highWaterBits = Atomic(rate.bitPattern)
        self.flags = Atomic(Self.flags(state.snapshot))
    }

    private static func flags(_ snapshot: GateSnapshot) -> UInt64 {
        (snapshot.killswitch ? 1 << 8 : 0) | UInt64(snapshot.stage.code)
    }

    /// Checks that a rate is a number in `[0, 1]`.
    /// - Parameter rate: The rate to check.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate``, naming the value.
    public static func validate(_ rate: Double) throws {
        try GateControlState.validate(rate)
    }

    /// Rate, high-water rate, killswitch and stage, read together: a consistent view even while another task
    /// changes them. A couple of atomic loads, no lock.
    public var snapshot: GateSnapshot { versionedSnapshot.snapshot }

    /// The snapshot and the version of the control state it was read at; ``version`` changes with every change.
    var versionedSnapshot: (snapshot: GateSnapshot, version: UInt64) {
        while true {
            let before = sequence.load(ordering: .acquiring)
            if before & 1 == 0 {
                let rate = rateBits.load(ordering: .acquiring)
                let highWater = highWaterBits.load(ordering: .acquiring)
                let flags = flags.load(ordering: .acquiring)
                if sequence.load(ordering: .acquiring) == before {
                    let snapshot = GateSnapshot(
                        rate: Double(bitPattern: rate),
                        highWaterRate: Double(bitPattern: highWater),
                        killswitch: flags & (1 << 8) != 0,
                        stage: MigrationStage(code: UInt8(truncatingIfNeeded: flags))
                    )
                    return (snapshot, before)
                }
            }
        }
    }

    /// Applies a change to the control state and publishes the result; runs nothing else under the lock.
    @discardableResult
    private func change(
        _ body: (inout GateControlState) throws -> GateControlState.Events
    ) rethrows
        -> GateControlState.Events
    {
        try control.withLock { state in
            let events = try body(&state)
            if events.contains(.published) {
                let snapshot = state.snapshot
                let odd = sequence.load(ordering: .relaxed) &+ 1
                sequence.store(odd, ordering: .relaxed)
                highWaterBits.store(snapshot.highWaterRate.bitPattern, ordering: .releasing)
                rateBits.store(snapshot.rate.bitPattern, ordering: .releasing)
                flags.store(Self.flags(snapshot), ordering: .releasing)
                sequence.store(odd &+ 1, ordering: .releasing)
            }
            return events
        }
    }

    /// The version of the control state now: it changes with every change to what ``snapshot`` shows.
    var version: UInt64 { sequence.load(ordering: .acquiring) }

    /// The current rate.
    public var rate: Double { snapshot.rate }

    /// The largest rate this gate has had (or was told about).
    public var highWaterRate: Double { snapshot.highWaterRate }

    /// Whether the killswitch is on (all New traffic off).
    public var isKillswitchOn: Bool { snapshot.killswitch }

    /// Changes the rate.
    /// - Parameter newRate: The new rate, in `[0, 1]`.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` when `newRate` is NaN or outside `[0, 1]`,
    ///   or ``ZDDMError/Code/refusedTransition`` below 1 in `rampdown` and `complete`; the rate is then unchanged.
    public func setRate(_ newRate: Double) throws {
        try change { try $0.setRate(newRate) }
    }

    /// Raises the high-water rate, for example to the largest rate other instances of the fleet have used.
    /// - Parameter rate: A rate in `[0, 1]`; a value below the current high-water rate changes nothing.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` when `rate` is NaN or outside `[0, 1]`.
    public func raiseHighWaterRate(to rate: Double) throws {
        try change { try $0.raiseHighWaterRate(to: rate) }
    }

    /// Turns the killswitch on or off. While it is on, the proxy never touches New.
    /// - Parameter on: `true` to stop all New traffic.
    public func setKillswitch(_ on: Bool) {
        change { $0.setKillswitch(on) }
    }

    /// Whether New may be touched at all: the killswitch is off and the stage is not `off`.
    public var allowsNewTraffic: Bool { snapshot.allowsNewTraffic }

    // MARK: Stages

    /// The current stage.
    public var stage: MigrationStage { snapshot.stage }

    /// Whether `live` → `rampdown` is allowed now: rate 1, killswitch off, and a clean verify pass that nothing
    /// has invalidated since.
    public var isRampdownPermitted: Bool {
        control.withLock { $0.isRampdownPermitted }
    }

    /// How many writes to Old failed during `rampdown` (Old is behind New for those keys).
    public var oldWritesMissed: Int { control.withLock { $0.oldWritesMissed } }

    /// Moves to another stage.
    /// - Parameter newStage: The stage to move to.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/refusedTransition`` naming the transition and what it
    ///   needs when it is not allowed (see ``MigrationStage``); the stage is then unchanged.
    public func setStage(_ newStage: MigrationStage) throws {
        try change { try $0.setStage(newStage) }
    }

    /// Takes a fleet's shared state (stage, rate, high-water rate, killswitch) as it is, without the transition
    /// checks of ``setStage(_:)``: whoever changed the shared state checked it.
    func follow(_ fleet: FleetState) {
        change { $0.follow(fleet) }
    }

    /// Records that New may have fallen behind Old (a clean verify from before no longer counts).
    func markNewBehind() {
        change { $0.markNewBehind() }
    }

    /// The epoch a verify pass should read when it starts.
    var newBehindMark: UInt64 { control.withLock { $0.newBehindEpoch } }

    /// Records a clean verify pass that started at `mark`; it permits rampdown if nothing happened since.
    func recordCleanVerify(startedAt mark: UInt64) {
        control.withLock { $0.recordCleanVerify(startedAt: mark) }
    }

    /// Records a write to Old that failed during rampdown.
    func recordOldWriteMissed() {
        control.withLock { $0.recordOldWriteMissed() }
    }

    /// Whether the gate admits a key now (killswitch off and the key's hash rate below the rate).
    /// - Parameter key: The key.
    /// - Returns: `true` when the key takes part in the migration.
    @inlinable
    public func admits(_ key: some GateKey) -> Bool {
        let snapshot = self.snapshot
        guard snapshot.allowsNewTraffic || !snapshot.stage.oldIsAuthoritative else { return false }
        return admits(key, atRate: snapshot.rate)
    }

    /// Whether a key is admitted at a given rate, ignoring the killswitch; rate 0 and 1 are decided without
    /// hashing.
    /// - Parameters:
    ///   - key: The key.
    ///   - rate: The rate to test against.
    /// - Returns: `true` when the key's hash rate is below `rate`, or `rate` is at least 1.
    @inlinable
    public func admits(_ key: some GateKey, atRate rate: Double) -> Bool {
        if rate >= 1 { return true }
        if !(rate > 0) { return false }
        return hashRate(of: key) < rate
    }

    /// A key's hash rate under this gate's hasher.
    ///
    /// The key's bytes are made where the key's type is known (inlined into the caller, without generic dispatch)
    /// and handed to the hasher in one call.
    /// - Parameter key: The key.
    /// - Returns: A value in `[0, 1]`.
    @inlinable
    public func hashRate(of key: some GateKey) -> Double {
        key.withGateBytes { hasher.hashRate(ofBytes: $0) }
    }
}
