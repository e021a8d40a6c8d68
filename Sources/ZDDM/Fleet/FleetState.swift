/// A migration's control state as the whole fleet shares it: one row per migration in a shared table, which every
/// instance follows.
///
/// Besides what an operator sets (stage, rate, killswitch) it holds the fleet's barrier: ``behind`` grows whenever
/// New may have fallen behind Old for some key (a write's New step did not happen, or New stopped being written),
/// and ``caughtUp`` is the largest ``behind`` the change applier has caught up past. An instance reads New only while
/// `caughtUp >= behind` in a view of this state that is still current.
///
/// It also records the latest clean verify pass (``verifiedBehind``): `live` → `rampdown` is permitted fleet-wide
/// once a clean pass began after New last fell behind (see ``applying(_:)`` and ``missingForRampdown``).
public struct FleetState: Sendable, Hashable, Codable {
    /// The stage.
    public var stage: MigrationStage
    /// The gate's rate, in `[0, 1]`.
    public var rate: Double
    /// The largest rate the fleet has used: keys below it may have a copy in New.
    public var highWaterRate: Double
    /// Whether the killswitch is on.
    public var killswitch: Bool
    /// Grows each time New may have fallen behind Old.
    public var behind: UInt64
    /// The largest ``behind`` the change applier has caught up past.
    public var caughtUp: UInt64
    /// The value of ``behind`` read before the latest clean verify pass began, or `nil` when none was recorded.
    ///
    /// A clean pass is a complete ``Verify`` pass at rate 1 that found no mismatch, with the safety memory empty
    /// and the migration not degraded (``VerifyReport/isClean``). When it equals ``behind``, New has not fallen
    /// behind since that pass began: the pass saw New hold what Old holds, and nothing can have made it stale since.
    /// Recorded with ``FleetStateStore/recordCleanVerify(_:startedAt:)``; it never goes down.
    public var verifiedBehind: UInt64?
    /// Grows each time New stops or resumes being written (``writesNew`` changes) and each time the high-water rate
    /// rises: the changes after which an instance may still act on an older view (a write held back under the
    /// killswitch, a newly admitted key written to Old only). The change applier publishes ``caughtUp`` only once
    /// every view older than its last move has expired. ``FleetStateStore/markBehind(_:)`` does not move it: a write
    /// whose New step did not happen records that after Old committed, so the applier's next pass sees its change.
    public var controlEpoch: UInt64

    /// Creates a state.
    public init(
        stage: MigrationStage = .off,
        rate: Double = 0,
        highWaterRate: Double = 0,
        killswitch: Bool = false,
        behind: UInt64 = 0,
        caughtUp: UInt64 = 0,
        verifiedBehind: UInt64? = nil,
        controlEpoch: UInt64 = 0
    ) {
        self.stage = stage
        self.rate = rate
        self.highWaterRate = highWaterRate
        self.killswitch = killswitch
        self.behind = behind
        self.caughtUp = caughtUp
        self.verifiedBehind = verifiedBehind
        self.controlEpoch = controlEpoch
    }

    /// Whether proxies write New in this state (for keys the gate admits): the killswitch is off and the stage is
    /// not `off`.
    public var writesNew: Bool { !killswitch && stage != .off }

    /// Whether the change applier has caught up with everything New fell behind on.
    public var isCaughtUp: Bool { caughtUp >= behind }

    /// Whether a clean verify pass began after New last fell behind: ``verifiedBehind`` equals ``behind``.
    public var isVerified: Bool { verifiedBehind == behind }

    /// What this state lacks for `rampdown`, in words an operator can act on, in the order to fix them; empty when
    /// rate, killswitch, change applier and verify pass all permit it. The stage is not considered: only `live`
    /// moves to `rampdown`.
    public var missingForRampdown: [String] {
        var missing: [String] = []
        if rate != 1 { missing.append("rate 1 (the rate is \(rate))") }
        if killswitch { missing.append("the killswitch off") }
        if !isCaughtUp {
            missing.append(
                "the change applier caught up (behind \(behind), caught up \(caughtUp); wait for the applier)"
            )
        }
        if !isVerified {
            let pass =
                switch verifiedBehind {
                case nil: "none recorded yet"
                case let verified?:
                    "the last one began at behind \(verified), and New has fallen behind since (behind \(behind))"
                }
            missing.append(
                "a clean verify pass at rate 1 that began after New last fell behind (\(pass); run zddm verify "
                    + "with --migration, or a Verify pass on an instance of the fleet)"
            )
        }
        return missing
    }

    /// Whether `live` → `rampdown` is permitted now: the stage is `live` and nothing in ``missingForRampdown``.
    public var permitsRampdown: Bool { stage == .live && missingForRampdown.isEmpty }

    /// The state after an operator's change, with the rules every ``FleetStateStore`` applies atomically with the
    /// change.
    ///
    /// The high-water rate never goes down; a change after which New is no longer written (killswitch on, stage
    /// `off`) moves ``behind`` on, so that no instance reads New again before the applier has caught up; and so does
    /// a rise of the high-water rate (instances that have not seen it yet write the newly admitted keys to Old only).
    /// A change of ``writesNew`` either way, and a rise of the high-water rate, move ``controlEpoch`` on.
    ///
    /// Stage transitions are checked as a ``TrafficGate`` checks its own: nothing leaves `complete`; `complete` is
    /// reached only from `rampdown`; `rampdown` only from `live`, and only when the state after the change has
    /// rate 1, the killswitch off, the change applier caught up and a clean verify pass that began after New last
    /// fell behind (``missingForRampdown`` is empty); the rate stays 1 throughout `rampdown` and `complete`.
    /// - Parameter change: What the operator changes.
    /// - Returns: The new state.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` for a rate outside `[0, 1]`, or
    ///   ``ZDDMError/Code/refusedTransition`` for a transition these rules refuse, naming what is missing.
    public func applying(_ change: FleetControlChange) throws -> FleetState {
        var next = self
        if let rate = change.rate {
            guard rate.isFinite, rate >= 0, rate <= 1 else {
                throw ZDDMError(.invalidRate, operation: .fleetState, message: "a rate must be in [0, 1], got \(rate)")
            }
            next.rate = rate
            next.highWaterRate = max(highWaterRate, rate)
        }
        if let stage = change.stage { next.stage = stage }
        if let killswitch = change.killswitch { next.killswitch = killswitch }
        if writesNew, !next.writesNew { next.behind &+= 1 }
        if next.highWaterRate > highWaterRate { next.behind &+= 1 }
        if writesNew != next.writesNew { next.controlEpoch &+= 1 }
        if next.highWaterRate > highWaterRate { next.controlEpoch &+= 1 }
        try checkTransition(to: next)
        return next
    }

    /// Refuses a change these rules do not allow, from this state to `next`.
    private func checkTransition(to next: FleetState) throws {
        func refused(_ reason: String) -> ZDDMError {
            ZDDMError(
                .refusedTransition,
                operation: .fleetState,
                message: "stage \(stage) → \(next.stage) refused: \(reason)"
            )
        }
        if stage != next.stage {
            switch (stage, next.stage) {
            case (.complete, _):
                throw refused("Old is no longer written; going back needs a migration the other way")
            case (_, .complete) where stage != .rampdown:
                throw refused("go through rampdown first")
            case (_, .rampdown) where stage != .live:
                throw refused("only live can move to rampdown")
            case (.live, .rampdown):
                let missing = next.missingForRampdown
                if !missing.isEmpty { throw refused("rampdown needs " + missing.joined(separator: "; ")) }
            default:
                break
            }
        }
        if next.stage == .rampdown || next.stage == .complete, next.rate != 1 {
            throw ZDDMError(
                .refusedTransition,
                operation: .fleetState,
                message: "the rate must stay 1 in stage \(next.stage), got \(next.rate)"
            )
        }
    }

    /// The state after recording a clean verify pass that began when ``behind`` was `behind`: ``verifiedBehind``
    /// becomes the larger of its value and `behind` (it never goes down).
    /// - Parameter behind: The value of ``behind`` read before the pass began.
    /// - Returns: The new state.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when `behind` is larger than ``behind``
    ///   (no pass can have read it; recording it would permit rampdown once ``behind`` grows to it).
    public func recordingCleanVerify(startedAt behind: UInt64) throws -> FleetState {
        guard behind <= self.behind else {
            throw ZDDMError(
                .invalidArgument,
                operation: .fleetState,
                message: "a verify pass cannot have begun at behind \(behind): behind is \(self.behind)"
            )
        }
        var next = self
        next.verifiedBehind = max(verifiedBehind ?? 0, behind)
        return next
    }
}

/// An operator's change to a migration's shared state; `nil` fields are left as they are.
public struct FleetControlChange: Sendable, Hashable {
    /// The new stage.
    public var stage: MigrationStage?
    /// The new rate.
    public var rate: Double?
    /// The new killswitch position.
    public var killswitch: Bool?

    /// Creates a change.
    public init(stage: MigrationStage? = nil, rate: Double? = nil, killswitch: Bool? = nil) {
        self.stage = stage
        self.rate = rate
        self.killswitch = killswitch
    }
}

/// Where a fleet keeps its shared migration state and the change applier's lease: a table in a database every
/// instance reaches (Old's, by default).
///
/// Every method is one atomic step on the shared table. Lease expiry is measured by the store's own clock (the
/// database server's), never by the instances' clocks.
public protocol FleetStateStore: Sendable {
    /// Reads a migration's state; a migration never set up reads as ``FleetState/init(stage:rate:highWaterRate:killswitch:behind:caughtUp:verifiedBehind:)``'s
    /// defaults.
    /// - Parameter migration: The migration's name.
    func state(of migration: String) async throws -> FleetState

    /// Applies an operator's change atomically, with ``FleetState/applying(_:)``'s rules.
    /// - Parameters:
    ///   - migration: The migration's name.
    ///   - change: The change.
    /// - Returns: The state after the change.
    func update(_ migration: String, _ change: FleetControlChange) async throws -> FleetState

    /// Records that New may have fallen behind Old: moves ``FleetState/behind`` on by one.
    /// - Parameter migration: The migration's name.
    /// - Returns: The new value of ``FleetState/behind``.
    func markBehind(_ migration: String) async throws -> UInt64

    /// Records that the change applier has caught up past `behind`, if the caller still holds the applier's lease
    /// with this token. ``FleetState/caughtUp`` never goes down.
    /// - Parameters:
    ///   - migration: The migration's name.
    ///   - behind: A value of ``FleetState/behind`` read before the applier's last complete pass began.
    ///   - token: The caller's lease token.
    /// - Returns: `false` when the token is no longer the lease's (nothing changed).
    func publishCaughtUp(_ migration: String, through behind: UInt64, token: UInt64) async throws -> Bool

    /// Takes or renews a migration's applier lease for `holder`.
    /// - Parameters:
    ///   - migration: The migration's name.
    ///   - holder: A name unique to the caller (an instance id).
    ///   - duration: How long the lease lasts from now, by the store's clock.
    /// - Returns: The lease's fencing token when `holder` holds it (a new, larger token each time the lease changes
    ///   hands; the same token on renewal), or `nil` while another holder's lease has not expired.
    func acquireLease(_ migration: String, holder: String, duration: Duration) async throws -> UInt64?

    /// Records a clean verify pass atomically, with ``FleetState/recordingCleanVerify(startedAt:)``'s rules:
    /// ``FleetState/verifiedBehind`` never goes down.
    /// - Parameters:
    ///   - migration: The migration's name.
    ///   - behind: The value of ``FleetState/behind`` read before the pass began.
    /// - Returns: The state after the record.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when `behind` is larger than the
    ///   state's ``FleetState/behind``, or the store's error.
    func recordCleanVerify(_ migration: String, startedAt behind: UInt64) async throws -> FleetState

    /// Gives the lease up, if `holder` still holds it with `token`, so another instance can take it at once.
    func releaseLease(_ migration: String, holder: String, token: UInt64) async throws
}
