public import ZDDM

/// The checks every ``ZDDM/FleetStateStore`` must pass, runnable against your own: operator changes and the rules
/// of ``ZDDM/FleetState/applying(_:)`` (stage transitions, `rampdown`'s conditions included), the record of a clean
/// verify pass, the barrier, and the applier's lease.
///
/// Give it a factory returning a store (fresh or not: every check uses a migration name of its own, made unique
/// with `prefix`). Lease expiry is checked with a lease of `shortLease`, polled with a generous deadline.
public struct FleetStateConformanceSuite<Store: FleetStateStore>: Sendable {
    private let makeStore: @Sendable () async throws -> Store
    private let prefix: String
    private let shortLease: Duration

    /// Creates the suite.
    /// - Parameters:
    ///   - makeStore: Returns a store.
    ///   - prefix: Prefixes every migration name the suite uses (for a shared database, make it unique per run).
    ///   - shortLease: A lease short enough to wait out in a test; 300 ms by default.
    public init(
        makeStore: @escaping @Sendable () async throws -> Store,
        prefix: String = "conformance",
        shortLease: Duration = .milliseconds(300)
    ) {
        self.makeStore = makeStore
        self.prefix = prefix
        self.shortLease = shortLease
    }

    /// Runs every check.
    /// - Throws: ``StoreConformanceFailure`` listing every failed check, or the first unexpected error.
    public func run() async throws {
        let failures = try await failures()
        if !failures.isEmpty { throw StoreConformanceFailure(failures: failures) }
    }

    /// Runs every check and returns the failures.
    public func failures() async throws -> [StoreConformanceFailure.Check] {
        var failures: [StoreConformanceFailure.Check] = []
        func expect(_ condition: Bool, _ check: String, _ detail: @autoclosure () -> String) {
            if !condition { failures.append(StoreConformanceFailure.Check(check: check, detail: detail())) }
        }
        let store = try await makeStore()
        let name = { (suffix: String) in "\(prefix)-\(suffix)" }

        let fresh = try await store.state(of: name("fresh"))
        expect(fresh == FleetState(), "state-default", "a migration never set up must read as the default state")

        // Operator changes and their rules.
        do {
            let migration = name("control")
            var state = try await store.update(migration, FleetControlChange(stage: .live, rate: 0.5))
            expect(
                state.stage == .live && state.rate == 0.5 && state.highWaterRate == 0.5 && state.behind == 1,
                "update",
                "an update must set stage and rate, raise the high-water rate and move behind on"
            )
            state = try await store.update(migration, FleetControlChange(rate: 0.2))
            expect(
                state.rate == 0.2 && state.highWaterRate == 0.5 && state.behind == 1,
                "high-water",
                "the high-water rate never goes down, and a lower rate does not move behind on"
            )
            state = try await store.update(migration, FleetControlChange(killswitch: true))
            expect(
                state.killswitch && state.behind == 2,
                "killswitch-behind",
                "turning the killswitch on moves behind on"
            )
            state = try await store.update(migration, FleetControlChange(killswitch: true))
            expect(state.behind == 2, "killswitch-behind", "a killswitch already on does not move behind again")
            let epochBefore = state.controlEpoch
            state = try await store.update(migration, FleetControlChange(killswitch: false))
            expect(
                state.controlEpoch == epochBefore + 1 && state.behind == 2,
                "control-epoch",
                "turning the killswitch off moves the control epoch on, not behind"
            )
            state = try await store.update(migration, FleetControlChange(stage: .off))
            expect(state.behind == 3, "stage-off-behind", "stage off stops New's writes, so it moves behind on")
            expect(
                state.controlEpoch == epochBefore + 2,
                "control-epoch",
                "stopping New's writes moves the control epoch on (kept by the store: \(state.controlEpoch))"
            )
            let stored = try await store.state(of: migration)
            expect(stored == state, "control-epoch", "the state read back must be the state the update returned")
            var rejected = false
            do { _ = try await store.update(migration, FleetControlChange(stage: .live, rate: 1.5)) } catch {
                rejected = (error as? ZDDMError)?.code == .invalidRate
            }
            expect(rejected, "invalid-rate", "a rate above 1 must be refused with invalidRate")
            let after = try await store.state(of: migration)
            expect(after == state, "invalid-rate", "a refused change must change nothing (stage included)")
            expect(
                try await store.state(of: name("fresh")) == FleetState(),
                "migrations-independent",
                "changing one migration must not change another"
            )
        }

        // The record of a clean verify pass: never goes down, never ahead of behind.
        do {
            let migration = name("verified")
            expect(
                try await store.state(of: migration).verifiedBehind == nil,
                "verified-default",
                "no verify pass is recorded for a migration never set up"
            )
            _ = try await store.markBehind(migration)
            _ = try await store.markBehind(migration)
            var state = try await store.recordCleanVerify(migration, startedAt: 1)
            expect(
                state.verifiedBehind == 1 && state.behind == 2 && !state.isVerified,
                "verified-record",
                "recording a pass that began at behind 1 sets verifiedBehind to 1 and changes nothing else"
            )
            state = try await store.recordCleanVerify(migration, startedAt: 2)
            expect(state.verifiedBehind == 2 && state.isVerified, "verified-record", "a later pass moves it on")
            state = try await store.recordCleanVerify(migration, startedAt: 1)
            expect(state.verifiedBehind == 2, "verified-monotonic", "an older pass never moves it back")
            var refused = false
            do { _ = try await store.recordCleanVerify(migration, startedAt: 3) } catch {
                refused = (error as? ZDDMError)?.code == .invalidArgument
            }
            expect(refused, "verified-ahead", "a pass cannot have begun at a behind not reached yet: invalidArgument")
            state = try await store.state(of: migration)
            expect(
                state.verifiedBehind == 2 && state.behind == 2,
                "verified-stored",
                "the record is read back, and a refused record changes nothing"
            )
            _ = try await store.markBehind(migration)
            expect(
                try await store.state(of: migration).isVerified == false,
                "verified-revoked",
                "New falling behind after the pass revokes it"
            )
        }

        // The rampdown rule, enforced by the store in the same step as the change.
        do {
            let migration = name("rampdown")
            func refusal(_ change: FleetControlChange) async throws -> String? {
                do {
                    _ = try await store.update(migration, change)
                    return nil
                } catch let error as ZDDMError where error.code == .refusedTransition {
                    return error.message
                }
            }
            _ = try await store.update(migration, FleetControlChange(stage: .live, rate: 0.5))
            let rate = try await refusal(FleetControlChange(stage: .rampdown))
            expect(rate?.contains("rate 1") == true, "rampdown-rate", "rampdown at rate 0.5 is refused, naming rate")
            var state = try await store.update(migration, FleetControlChange(rate: 1))
            let caughtUp = try await refusal(FleetControlChange(stage: .rampdown))
            expect(
                caughtUp?.contains("change applier") == true && caughtUp?.contains("verify") == true,
                "rampdown-caught-up",
                "rampdown before the applier caught up and before a verify pass is refused, naming both"
            )
            if let token = try await store.acquireLease(migration, holder: "applier", duration: .seconds(60)) {
                _ = try await store.publishCaughtUp(migration, through: state.behind, token: token)
            }
            let unverified = try await refusal(FleetControlChange(stage: .rampdown))
            expect(
                unverified?.contains("verify") == true && unverified?.contains("change applier") == false,
                "rampdown-verify",
                "rampdown without a clean verify pass is refused, naming it (and only it)"
            )
            state = try await store.recordCleanVerify(migration, startedAt: state.behind)
            let killed = try await refusal(FleetControlChange(stage: .rampdown, killswitch: true))
            expect(killed?.contains("killswitch") == true, "rampdown-killswitch", "rampdown with the killswitch on")
            let before = try await store.state(of: migration)
            expect(
                before.stage == .live && before.verifiedBehind == state.verifiedBehind && !before.killswitch,
                "rampdown-refused-unchanged",
                "a refused change changes nothing"
            )
            let permitted = try await refusal(FleetControlChange(stage: .rampdown))
            state = try await store.state(of: migration)
            expect(
                permitted == nil && state.stage == .rampdown && state.verifiedBehind == before.verifiedBehind,
                "rampdown-permitted",
                "rampdown is permitted at rate 1, killswitch off, caught up, after a clean pass since the last fall-behind"
            )
            let lower = try await refusal(FleetControlChange(rate: 0.5))
            expect(lower?.contains("rate must stay 1") == true, "rampdown-rate-stays", "the rate stays 1 in rampdown")
            let completed = try await refusal(FleetControlChange(stage: .complete))
            let back = try await refusal(FleetControlChange(stage: .live))
            expect(
                permitted != nil || (completed == nil && back != nil),
                "complete-final",
                "complete is reached from rampdown and never left"
            )
            let fresh = name("rampdown-fresh")
            var jumped: Bool
            do {
                _ = try await store.update(fresh, FleetControlChange(stage: .complete, rate: 1))
                jumped = true
            } catch {
                jumped = false
            }
            expect(!jumped, "complete-from-rampdown", "complete only from rampdown")
            do {
                _ = try await store.update(fresh, FleetControlChange(stage: .rampdown, rate: 1))
                jumped = true
            } catch {
                jumped = false
            }
            expect(!jumped, "rampdown-from-live", "rampdown only from live")
            expect(
                try await store.state(of: fresh) == FleetState(),
                "rampdown-from-live",
                "a refused change on a migration never set up changes nothing"
            )
        }

        // The barrier: concurrent marks are all counted; caught-up is published only by the lease holder.
        do {
            let migration = name("barrier")
            let marks = try await withThrowingTaskGroup(of: UInt64.self) { group in
                for _ in 0..<20 { group.addTask { try await store.markBehind(migration) } }
                var marks: [UInt64] = []
                for try await mark in group { marks.append(mark) }
                return marks
            }
            expect(Set(marks) == Set(1...20), "mark-behind", "20 concurrent marks must return 1…20, each once")
            expect(
                try await store.state(of: migration).controlEpoch == 0,
                "mark-behind-epoch",
                "marking behind must not move the control epoch"
            )
            let token = try await store.acquireLease(migration, holder: "a", duration: .seconds(60))
            expect(token != nil, "lease-acquire", "a free lease must be granted")
            let other = try await store.acquireLease(migration, holder: "b", duration: .seconds(60))
            expect(other == nil, "lease-exclusive", "a held lease must not be granted to another holder")
            let renewed = try await store.acquireLease(migration, holder: "a", duration: .seconds(60))
            expect(renewed == token, "lease-renew", "a renewal keeps the token")
            if let token {
                expect(
                    try await store.publishCaughtUp(migration, through: 15, token: token + 1) == false,
                    "caught-up-fenced",
                    "a token that is not the lease's must be refused"
                )
                expect(try await store.state(of: migration).caughtUp == 0, "caught-up-fenced", "and change nothing")
                expect(
                    try await store.publishCaughtUp(migration, through: 15, token: token),
                    "caught-up",
                    "the holder's token must be accepted"
                )
                _ = try await store.publishCaughtUp(migration, through: 9, token: token)
                let state = try await store.state(of: migration)
                expect(
                    state.caughtUp == 15 && state.behind == 20 && !state.isCaughtUp,
                    "caught-up-monotonic",
                    "caught-up never goes down"
                )
                try await store.releaseLease(migration, holder: "a", token: token)
                let taken = try await store.acquireLease(migration, holder: "b", duration: .seconds(60))
                expect(
                    taken != nil && taken ?? 0 > token,
                    "lease-release",
                    "a released lease goes to the next, with a larger token"
                )
                expect(
                    try await store.publishCaughtUp(migration, through: 20, token: token) == false,
                    "caught-up-stale-holder",
                    "a former holder's token must be refused"
                )
            }
        }

        // Expiry: a lease not renewed can be taken over.
        do {
            let migration = name("expiry")
            let first = try await store.acquireLease(migration, holder: "a", duration: shortLease)
            expect(first != nil, "lease-expiry", "a free lease must be granted")
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(60)
            var taken: UInt64?
            while taken == nil, clock.now < deadline {
                taken = try await store.acquireLease(migration, holder: "b", duration: .seconds(60))
                if taken == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            expect(taken != nil && taken ?? 0 > first ?? 0, "lease-expiry", "an expired lease must be taken over")
            let back = try await store.acquireLease(migration, holder: "a", duration: .seconds(60))
            expect(back == nil, "lease-expiry", "the former holder must not get it back while the new lease runs")
        }
        return failures
    }
}
