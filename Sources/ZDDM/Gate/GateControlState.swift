/// The control state of one migration's gate, as a value: rate, high-water rate, killswitch, stage, and the
/// bookkeeping that decides whether `rampdown` is permitted. Every change is a method that checks it, applies it
/// and returns what happened, or throws and leaves the state as it was.
///
/// ``TrafficGate`` keeps one of these behind one lock and publishes the part the request path reads (a
/// ``GateSnapshot``) after every change; callers act on the returned events outside the lock.
struct GateControlState: Sendable, Equatable {
    /// What a change did, for the caller to act on outside the lock.
    struct Events: OptionSet, Sendable {
        let rawValue: UInt8
        /// The snapshot the request path reads changed.
        static let published = Events(rawValue: 1 << 0)
        /// New may have fallen behind Old: a clean verify pass from before no longer permits rampdown.
        static let newFellBehind = Events(rawValue: 1 << 1)
        /// The stage changed.
        static let stageChanged = Events(rawValue: 1 << 2)
    }

    private(set) var rate: Double
    private(set) var highWaterRate: Double
    private(set) var killswitch: Bool
    private(set) var stage: MigrationStage
    /// Bumped by every event that can leave New behind Old (a key marked unsafe, the killswitch, a lower rate).
    private(set) var newBehindEpoch: UInt64 = 1
    /// The `newBehindEpoch` a clean verify pass saw from start to end; rampdown needs it to be current.
    private(set) var verifiedEpoch: UInt64 = 0
    /// Writes to Old that failed during rampdown: Old is behind New by that many keys.
    private(set) var oldWritesMissed = 0

    /// Creates the state a gate starts with.
    /// - Throws: ``ZDDMError`` with ``ZDDMError/Code/invalidRate`` or ``ZDDMError/Code/refusedTransition``.
    init(rate: Double, killswitch: Bool, stage: MigrationStage) throws {
        try Self.validate(rate)
        guard stage.oldIsAuthoritative else {
            throw ZDDMError(
                .refusedTransition,
                message: "a gate cannot start in stage \(stage); reach it with setStage"
            )
        }
        self.rate = rate
        self.highWaterRate = rate
        self.killswitch = killswitch
        self.stage = stage
    }

    static func validate(_ rate: Double) throws {
        guard rate >= 0, rate <= 1 else {
            throw ZDDMError(.invalidRate, message: "rate must be a number in [0, 1], got \(rate)")
        }
    }

    /// What the request path reads.
    var snapshot: GateSnapshot {
        GateSnapshot(rate: rate, highWaterRate: highWaterRate, killswitch: killswitch, stage: stage)
    }

    /// Whether `live` → `rampdown` is allowed now: rate 1, killswitch off, and a clean verify pass that nothing has
    /// invalidated since.
    var isRampdownPermitted: Bool {
        rate >= 1 && !killswitch && verifiedEpoch == newBehindEpoch
    }

    mutating func setRate(_ newRate: Double) throws -> Events {
        try Self.validate(newRate)
        if newRate < 1, !stage.oldIsAuthoritative {
            throw ZDDMError(.refusedTransition, message: "the rate stays 1 in stage \(stage), got \(newRate)")
        }
        guard newRate != rate else { return [] }
        var events: Events = .published
        if newRate < rate { events.formUnion(markNewBehind()) }
        rate = newRate
        highWaterRate = max(highWaterRate, newRate)
        return events
    }

    mutating func raiseHighWaterRate(to newRate: Double) throws -> Events {
        try Self.validate(newRate)
        guard newRate > highWaterRate else { return [] }
        highWaterRate = newRate
        return .published
    }

    mutating func setKillswitch(_ on: Bool) -> Events {
        guard on != killswitch else { return [] }
        killswitch = on
        // Turning it on lets New fall behind: a clean verify from before no longer permits rampdown.
        return on ? markNewBehind().union(.published) : .published
    }

    mutating func setStage(_ newStage: MigrationStage) throws -> Events {
        let current = stage
        if current == newStage { return [] }
        switch (current, newStage) {
        case (.off, _), (.dualwrite, _), (.shadow, _), (.live, _):
            if newStage == .complete {
                throw refused(current, newStage, "go through rampdown first")
            }
            if newStage == .rampdown {
                guard current == .live else { throw refused(current, newStage, "only live can move to rampdown") }
                guard isRampdownPermitted else {
                    throw refused(
                        current,
                        newStage,
                        "it needs rate 1, the killswitch off and a clean verify pass since New last fell behind"
                    )
                }
                oldWritesMissed = 0
            }
        case (.rampdown, .complete):
            break
        case (.rampdown, _):
            guard oldWritesMissed == 0 else {
                throw refused(
                    current,
                    newStage,
                    "\(oldWritesMissed) writes to Old failed during rampdown; repair Old from New before rolling back"
                )
            }
        case (.complete, _):
            throw refused(current, newStage, "Old is no longer written; going back needs a migration the other way")
        }
        stage = newStage
        return [.published, .stageChanged]
    }

    /// Takes the fleet's shared state as it is: the shared table is the authority, and whoever changed it checked
    /// the change. The high-water rate only rises.
    mutating func follow(_ fleet: FleetState) -> Events {
        var events: Events = []
        if fleet.rate.isFinite, fleet.rate >= 0, fleet.rate <= 1, fleet.rate != rate {
            if fleet.rate < rate { events.formUnion(markNewBehind()) }
            rate = fleet.rate
            events.insert(.published)
        }
        let highWater = max(highWaterRate, rate, fleet.highWaterRate.isFinite ? min(1, fleet.highWaterRate) : 0)
        if highWater != highWaterRate {
            highWaterRate = highWater
            events.insert(.published)
        }
        if fleet.killswitch != killswitch { events.formUnion(setKillswitch(fleet.killswitch)) }
        if fleet.stage != stage {
            stage = fleet.stage
            events.formUnion([.published, .stageChanged])
        }
        return events
    }

    mutating func markNewBehind() -> Events {
        newBehindEpoch &+= 1
        return .newFellBehind
    }

    mutating func recordCleanVerify(startedAt mark: UInt64) {
        verifiedEpoch = mark
    }

    mutating func recordOldWriteMissed() {
        oldWritesMissed += 1
    }

    private func refused(_ from: MigrationStage, _ to: MigrationStage, _ reason: String) -> ZDDMError {
        ZDDMError(.refusedTransition, message: "cannot move from stage \(from) to \(to): \(reason)")
    }
}

/// What one call reads of the gate, all at once: a consistent view of rate, high-water rate, killswitch and stage.
public struct GateSnapshot: Sendable, Hashable {
    /// The rate.
    public var rate: Double
    /// The largest rate the gate has had (or was told about).
    public var highWaterRate: Double
    /// Whether the killswitch is on.
    public var killswitch: Bool
    /// The stage.
    public var stage: MigrationStage

    /// Creates a snapshot (for tests of code that plans from one).
    public init(rate: Double, highWaterRate: Double, killswitch: Bool, stage: MigrationStage) {
        self.rate = rate
        self.highWaterRate = max(rate, highWaterRate)
        self.killswitch = killswitch
        self.stage = stage
    }

    /// Whether New may be touched at all: the killswitch is off and the stage is not `off`.
    public var allowsNewTraffic: Bool { !killswitch && stage != .off }
}
