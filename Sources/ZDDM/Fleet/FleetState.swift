/// A migration's control state as the whole fleet shares it: one row per migration in a shared table, which every
/// instance follows.
///
/// Besides what an operator sets (stage, rate, killswitch) it holds the fleet's barrier: ``behind`` grows whenever
/// New may have fallen behind Old for some key (a write's New step did not happen, or New stopped being written),
/// and ``caughtUp`` is the largest ``behind`` the change applier has caught up past. An instance reads New only while
/// `caughtUp >= behind` in a view of this state that is still current.
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

    /// Creates a state.
    public init(
        stage: MigrationStage = .off,
        rate: Double = 0,
        highWaterRate: Double = 0,
        killswitch: Bool = false,
        behind: UInt64 = 0,
        caughtUp: UInt64 = 0
    ) {
        self.stage = stage
        self.rate = rate
        self.highWaterRate = highWaterRate
        self.killswitch = killswitch
        self.behind = behind
        self.caughtUp = caughtUp
    }

    /// Whether proxies write New in this state (for keys the gate admits): the killswitch is off and the stage is
    /// not `off`.
    public var writesNew: Bool { !killswitch && stage != .off }

    /// Whether the change applier has caught up with everything New fell behind on.
    public var isCaughtUp: Bool { caughtUp >= behind }

    /// The state after an operator's change, with the rules every ``FleetStateStore`` applies: the high-water rate
    /// never goes down; a change after which New is no longer written (killswitch on, stage `off`) moves
    /// ``behind`` on, so that no instance reads New again before the applier has caught up; and so does a rise of
    /// the high-water rate (instances that have not seen it yet write the newly admitted keys to Old only).
    /// - Parameter change: What the operator changes.
    /// - Returns: The new state.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` for a rate outside `[0, 1]`.
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
    /// Reads a migration's state; a migration never set up reads as ``FleetState/init(stage:rate:highWaterRate:killswitch:behind:caughtUp:)``'s
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

    /// Gives the lease up, if `holder` still holds it with `token`, so another instance can take it at once.
    func releaseLease(_ migration: String, holder: String, token: UInt64) async throws
}
