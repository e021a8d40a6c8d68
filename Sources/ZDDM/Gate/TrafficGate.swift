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

    /// Creates a gate.
    /// - Parameters:
    ///   - rate: The initial rate, in `[0, 1]`; 0 (the default) admits no key.
    ///   - hasher: The hasher; by default the original ZDDM's unsalted SHA-1 rate hasher.
    ///   - killswitch: Whether New traffic starts switched off.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` when `rate` is NaN or outside `[0, 1]`.
    public init(rate: Double = 0, hasher: any GateHasher = SHA1RateHasher(), killswitch: Bool = false) throws {
        try Self.validate(rate)
        self.hasher = hasher
        self.rateBits = Atomic(rate.bitPattern)
        self.highWaterBits = Atomic(rate.bitPattern)
        self.killswitchFlag = Atomic(killswitch)
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
        killswitchFlag.store(on, ordering: .releasing)
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
    struct Decision {
        /// The key takes part: read New first, write both.
        var admitted: Bool
        /// New may hold a copy of the key (its hash rate is below the high-water rate).
        var mayBeInNew: Bool
        /// The killswitch was on.
        var killswitch: Bool
    }

    func decide(_ key: some GateKey) -> Decision {
        let killswitch = isKillswitchOn
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
        return Decision(admitted: open && !killswitch, mayBeInNew: mayBeInNew || open, killswitch: killswitch)
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
