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

    private let rateBits: Atomic<UInt64>
    private let highWaterBits: Atomic<UInt64>
    private let killswitchFlag: Atomic<Bool>
    private let stageCode: Atomic<UInt8>
    /// Bumped by every event that can leave New behind Old (a key marked unsafe, the killswitch, a lower rate).
    private let newBehindEpoch = Atomic<UInt64>(1)
    /// The `newBehindEpoch` a clean verify pass saw from start to end; rampdown needs it to be current.
    private let verifiedEpoch = Atomic<UInt64>(0)
    /// Writes to Old that failed during rampdown: Old is behind New by that many keys.
    private let oldBehind = Atomic<Int>(0)

    /// Creates a gate.
    /// - Parameters:
    ///   - rate: The initial rate, in `[0, 1]`; 0 (the default) admits no key.
    ///   - hasher: The hasher; by default the original ZDDM's unsalted SHA-1 rate hasher.
    ///   - killswitch: Whether New traffic starts switched off.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` when `rate` is NaN or outside `[0, 1]`.
    ///   - stage: The initial stage; `live` (the original ZDDM behaviour) by default. Only `off` to `live` can be
    ///     given here; `rampdown` and `complete` are reached through ``setStage(_:)``.
    public init(
        rate: Double = 0,
        hasher: any GateHasher = SHA1RateHasher(),
        killswitch: Bool = false,
        stage: MigrationStage = .live
    ) throws {
        try Self.validate(rate)
        guard stage.oldIsAuthoritative else {
            throw ZDDMError(.invalidArgument, message: "a gate cannot start in stage \(stage); reach it with setStage")
        }
        self.hasher = hasher
        self.rateBits = Atomic(rate.bitPattern)
        self.highWaterBits = Atomic(rate.bitPattern)
        self.killswitchFlag = Atomic(killswitch)
        self.stageCode = Atomic(stage.code)
    }

    /// Checks that a rate is a number in `[0, 1]`.
    /// - Parameter rate: The rate to check.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate``, naming the value.
    public static func validate(_ rate: Double) throws {
        guard rate >= 0, rate <= 1 else {
            throw ZDDMError(.invalidRate, message: "rate must be a number in [0, 1], got \(rate)")
        }
    }

    /// The current rate.
    public var rate: Double {
        Double(bitPattern: rateBits.load(ordering: .acquiring))
    }

    /// The largest rate this gate has had (or was told about).
    public var highWaterRate: Double {
        Double(bitPattern: highWaterBits.load(ordering: .acquiring))
    }

    /// Whether the killswitch is on (all New traffic off).
    public var isKillswitchOn: Bool {
        killswitchFlag.load(ordering: .acquiring)
    }

    /// Changes the rate.
    /// - Parameter newRate: The new rate, in `[0, 1]`.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` when `newRate` is NaN or outside `[0, 1]`;
    ///   the rate is then unchanged.
    public func setRate(_ newRate: Double) throws {
        try Self.validate(newRate)
        if newRate < 1, !stage.oldIsAuthoritative {
            throw ZDDMError(.refusedTransition, message: "the rate stays 1 in stage \(stage), got \(newRate)")
        }
        if newRate < rate { markNewBehind() }
        // The high-water mark goes up before the rate does, so that whoever sees the new rate also sees a
        // high-water rate at least as large.
        raiseHighWater(newRate)
        rateBits.store(newRate.bitPattern, ordering: .releasing)
    }

    /// Raises the high-water rate, for example to the largest rate other instances of the fleet have used.
    /// - Parameter rate: A rate in `[0, 1]`; a value below the current high-water rate changes nothing.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` when `rate` is NaN or outside `[0, 1]`.
    public func raiseHighWaterRate(to rate: Double) throws {
        try Self.validate(rate)
        raiseHighWater(rate)
    }

    /// Turns the killswitch on or off. While it is on, the proxy never touches New.
    /// - Parameter on: `true` to stop all New traffic.
    public func setKillswitch(_ on: Bool) {
        let wasOn = killswitchFlag.exchange(on, ordering: .acquiringAndReleasing)
        // Turning it on lets New fall behind: a clean verify from before no longer permits rampdown.
        if on, !wasOn { markNewBehind() }
    }

    /// Whether New may be touched at all: the killswitch is off and the stage is not `off`.
    public var allowsNewTraffic: Bool {
        !isKillswitchOn && stage != .off
    }

    // MARK: Stages

    /// The current stage.
    public var stage: MigrationStage {
        MigrationStage(code: stageCode.load(ordering: .acquiring))
    }

    /// Whether `live` → `rampdown` is allowed now: rate 1, killswitch off, and a clean verify pass that nothing
    /// has invalidated since.
    public var isRampdownPermitted: Bool {
        rate >= 1 && !isKillswitchOn
            && verifiedEpoch.load(ordering: .acquiring) == newBehindEpoch.load(ordering: .acquiring)
    }

    /// How many writes to Old failed during `rampdown` (Old is behind New for those keys).
    public var oldWritesMissed: Int { oldBehind.load(ordering: .acquiring) }

    /// Moves to another stage.
    /// - Parameter newStage: The stage to move to.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` naming the transition and what it needs
    ///   when it is not allowed (see ``MigrationStage``); the stage is then unchanged.
    public func setStage(_ newStage: MigrationStage) throws {
        let current = stage
        if current == newStage { return }
        switch (current, newStage) {
        case (.off, _), (.dualwrite, _), (.shadow, _), (.live, _):
            if newStage == .complete {
                throw stageError(current, newStage, "go through rampdown first")
            }
            if newStage == .rampdown {
                guard current == .live else { throw stageError(current, newStage, "only live can move to rampdown") }
                guard isRampdownPermitted else {
                    throw stageError(
                        current,
                        newStage,
                        "it needs rate 1, the killswitch off and a clean verify pass since New last fell behind"
                    )
                }
                oldBehind.store(0, ordering: .releasing)
            }
        case (.rampdown, .complete):
            break
        case (.rampdown, _):
            let missed = oldWritesMissed
            guard missed == 0 else {
                throw stageError(
                    current,
                    newStage,
                    "\(missed) writes to Old failed during rampdown; repair Old from New before rolling back"
                )
            }
        case (.complete, _):
            throw stageError(current, newStage, "Old is no longer written; going back needs a migration the other way")
        }
        stageCode.store(newStage.code, ordering: .releasing)
    }

    private func stageError(_ from: MigrationStage, _ to: MigrationStage, _ reason: String) -> ZDDMError {
        ZDDMError(.refusedTransition, message: "cannot move from stage \(from) to \(to): \(reason)")
    }

    /// Records that New may have fallen behind Old (a clean verify from before no longer counts).
    func markNewBehind() {
        newBehindEpoch.wrappingAdd(1, ordering: .acquiringAndReleasing)
    }

    /// The epoch a verify pass should read when it starts.
    var newBehindMark: UInt64 { newBehindEpoch.load(ordering: .acquiring) }

    /// Records a clean verify pass that started at `mark`; it permits rampdown if nothing happened since.
    func recordCleanVerify(startedAt mark: UInt64) {
        verifiedEpoch.store(mark, ordering: .releasing)
    }

    /// Records a write to Old that failed during rampdown.
    func recordOldWriteMissed() {
        oldBehind.wrappingAdd(1, ordering: .acquiringAndReleasing)
    }

    /// Whether the gate admits a key now (killswitch off and the key's hash rate below the rate).
    /// - Parameter key: The key.
    /// - Returns: `true` when the key takes part in the migration.
    public func admits(_ key: some GateKey) -> Bool {
        decide(key).admitted
    }

    /// Whether a key is admitted at a given rate, ignoring the killswitch; rate 0 and 1 are decided without
    /// hashing.
    /// - Parameters:
    ///   - key: The key.
    ///   - rate: The rate to test against.
    /// - Returns: `true` when the key's hash rate is below `rate`, or `rate` is at least 1.
    public func admits(_ key: some GateKey, atRate rate: Double) -> Bool {
        if rate >= 1 { return true }
        if !(rate > 0) { return false }
        return hasher.hashRate(of: key) < rate
    }

    /// The gate's verdict on one key, computed with at most one hash.
    struct Decision: Sendable {
        /// The key takes part: read New first, write both.
        var admitted: Bool
        /// New may hold a copy of the key (its hash rate is below the high-water rate).
        var mayBeInNew: Bool
        /// The killswitch was on, or the stage was `off`: New must not be touched.
        var killswitch: Bool
        /// The stage.
        var stage: MigrationStage
    }

    func decide(_ key: some GateKey) -> Decision {
        let stage = self.stage
        if !stage.oldIsAuthoritative {
            return Decision(admitted: true, mayBeInNew: true, killswitch: false, stage: stage)
        }
        let killswitch = isKillswitchOn || stage == .off
        let rate = self.rate
        let highWater = self.highWaterRate
        var hashRate: Double?
        func hash() -> Double {
            if let hashRate { return hashRate }
            let value = hasher.hashRate(of: key)
            hashRate = value
            return value
        }
        let mayBeInNew = highWater >= 1 || (highWater > 0 && hash() < highWater)
        let open = rate >= 1 || (rate > 0 && hash() < rate)
        return Decision(
            admitted: open && !killswitch,
            mayBeInNew: mayBeInNew || open,
            killswitch: killswitch,
            stage: stage
        )
    }

    private func raiseHighWater(_ rate: Double) {
        var current = highWaterBits.load(ordering: .relaxed)
        while Double(bitPattern: current) < rate {
            let (exchanged, original) = highWaterBits.compareExchange(
                expected: current,
                desired: rate.bitPattern,
                ordering: .acquiringAndReleasing
            )
            if exchanged { return }
            current = original
        }
    }
}
