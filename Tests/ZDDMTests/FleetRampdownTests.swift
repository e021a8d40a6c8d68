import Testing
import ZDDM
import ZDDMTesting

/// `rampdown` in a fleet: permitted by the shared state once a clean verify pass began after New last fell behind.
@Suite("Fleet rampdown: permitted by one recorded clean verify pass")
struct FleetRampdownTests {
    /// A state at `live`, rate 1, killswitch off, the applier caught up, and a clean pass recorded since the last
    /// fall-behind: everything rampdown needs.
    private func ready() throws -> FleetState {
        var state = try FleetState().applying(FleetControlChange(stage: .live, rate: 1))
        state.caughtUp = state.behind
        return try state.recordingCleanVerify(startedAt: state.behind)
    }

    /// The message of the refusal of `change` from `state`, which must be a `refusedTransition`.
    private func refusal(_ state: FleetState, _ change: FleetControlChange) -> String? {
        do {
            _ = try state.applying(change)
            return nil
        } catch let error as ZDDMError {
            #expect(error.code == .refusedTransition, "\(error)")
            return error.message
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test("Permitted once everything is in place; the pass and the barrier are kept")
    func permitted() throws {
        let state = try ready()
        #expect(state.permitsRampdown && state.missingForRampdown.isEmpty && state.isVerified)
        let next = try state.applying(FleetControlChange(stage: .rampdown))
        #expect(next.stage == .rampdown && next.verifiedBehind == state.behind && next.behind == state.behind)
    }

    @Test("Each missing condition is refused, naming it and what to do")
    func eachMissingConditionRefused() throws {
        let ready = try ready()
        let rampdown = FleetControlChange(stage: .rampdown)

        var state = ready
        state.rate = 0.5
        var message = try #require(refusal(state, rampdown))
        #expect(message.contains("rampdown needs rate 1 (the rate is 0.5)"), "\(message)")
        #expect(!message.contains("killswitch") && !message.contains("verify"), "only what is missing: \(message)")

        state = ready
        state.killswitch = true
        message = try #require(refusal(state, rampdown))
        #expect(message.contains("the killswitch off") && !message.contains("rate 1"), "\(message)")
        // Turning the killswitch on in the same change: it stops New's writes, so behind moves on too.
        message = try #require(refusal(ready, FleetControlChange(stage: .rampdown, killswitch: true)))
        #expect(message.contains("the killswitch off") && message.contains("change applier"), "\(message)")

        state = ready
        state.behind += 1
        state.verifiedBehind = state.behind
        message = try #require(refusal(state, rampdown))
        #expect(message.contains("the change applier caught up (behind 2, caught up 1"), "\(message)")
        #expect(!message.contains("verify"), "\(message)")

        state = ready
        state.verifiedBehind = nil
        message = try #require(refusal(state, rampdown))
        #expect(message.contains("a clean verify pass") && message.contains("none recorded yet"), "\(message)")
        #expect(message.contains("zddm verify") && message.contains("--migration"), "what to run: \(message)")

        // Raising the rate to 1 in the same change raises the high water: New may be behind for the newly
        // admitted keys, so neither the applier nor the pass is current for the state after the change.
        var low = try FleetState().applying(FleetControlChange(stage: .live, rate: 0.5))
        low.caughtUp = low.behind
        low = try low.recordingCleanVerify(startedAt: low.behind)
        message = try #require(refusal(low, FleetControlChange(stage: .rampdown, rate: 1)))
        #expect(message.contains("change applier") && message.contains("verify pass"), "\(message)")
    }

    @Test("New falling behind after the pass revokes it, until a pass that began after that")
    func fallBehindRevokes() throws {
        var state = try ready()
        let verified = try #require(state.verifiedBehind)
        state.behind += 1  // markBehind: a write's New step did not happen
        state.caughtUp = state.behind
        #expect(!state.isVerified && !state.permitsRampdown)
        let message = try #require(refusal(state, FleetControlChange(stage: .rampdown)))
        #expect(
            message.contains("the last one began at behind \(verified), and New has fallen behind since"),
            "\(message)"
        )
        // A pass that began before the fall-behind (and ended after it) is no help.
        state = try state.recordingCleanVerify(startedAt: verified)
        #expect(!state.permitsRampdown)
        state = try state.recordingCleanVerify(startedAt: state.behind)
        #expect(state.permitsRampdown)
        // The killswitch going on and off moves behind on: the pass is revoked again.
        state = try state.applying(FleetControlChange(killswitch: true))
        state = try state.applying(FleetControlChange(killswitch: false))
        state.caughtUp = state.behind
        #expect(!state.isVerified && refusal(state, FleetControlChange(stage: .rampdown)) != nil)
    }

    @Test("The record never goes down, and never ahead of behind")
    func recordMonotonic() throws {
        var state = FleetState(behind: 5)
        state = try state.recordingCleanVerify(startedAt: 4)
        #expect(state.verifiedBehind == 4)
        state = try state.recordingCleanVerify(startedAt: 2)
        #expect(state.verifiedBehind == 4)
        #expect(throws: ZDDMError.self) { try state.recordingCleanVerify(startedAt: 6) }
        #expect(state.verifiedBehind == 4)
    }

    @Test("The other transitions: complete only from rampdown, rampdown only from live, rate 1 after, complete final")
    func otherTransitions() throws {
        let ready = try ready()
        for stage in [MigrationStage.off, .dualwrite, .shadow] {
            var state = ready
            state.stage = stage
            #expect(refusal(state, FleetControlChange(stage: .rampdown))?.contains("only live can move") == true)
            #expect(refusal(state, FleetControlChange(stage: .complete))?.contains("go through rampdown") == true)
        }
        #expect(refusal(ready, FleetControlChange(stage: .complete))?.contains("go through rampdown") == true)
        var state = try ready.applying(FleetControlChange(stage: .rampdown))
        #expect(
            refusal(state, FleetControlChange(rate: 0.5))?.contains("the rate must stay 1 in stage rampdown") == true
        )
        // Rolling back to live is allowed, with the rate lowered in the same change.
        #expect(try state.applying(FleetControlChange(stage: .live, rate: 0.5)).stage == .live)
        state = try state.applying(FleetControlChange(stage: .complete))
        #expect(refusal(state, FleetControlChange(rate: 0.9))?.contains("must stay 1 in stage complete") == true)
        for stage in MigrationStage.allCases where stage != .complete {
            #expect(refusal(state, FleetControlChange(stage: stage))?.contains("Old is no longer written") == true)
        }
        #expect(try state.applying(FleetControlChange(killswitch: true)).killswitch, "other settings still change")
    }

    // MARK: Verify through a fleet member

    /// A one-instance fleet at `live`, rate 1, caught up, with some keys written through the proxy.
    private func liveFleet() async throws -> InProcessFleet {
        let fleet = try InProcessFleet(count: 1)
        try await fleet.control(FleetControlChange(stage: .live, rate: 1))
        try await fleet.refreshAll()
        let proxy = fleet.instances[0].proxy
        for index in 0..<20 { try await proxy.write("k\(index)", "v\(index)") }
        #expect(try await fleet.catchUp())
        return fleet
    }

    @Test("A clean Verify pass on an instance records itself in the shared state, which then permits rampdown")
    func cleanPassRecorded() async throws {
        let fleet = try await liveFleet()
        let before = try await fleet.state.state(of: InProcessFleet.migration)
        #expect(before.verifiedBehind == nil && !before.permitsRampdown)
        await #expect(throws: ZDDMError.self) { try await fleet.control(FleetControlChange(stage: .rampdown)) }

        let report = try await Verify(core: fleet.instances[0].core).verify()
        #expect(report.mismatches == 0 && report.isClean && report.fleetVerifiedBehind == before.behind)
        let after = try await fleet.state.state(of: InProcessFleet.migration)
        #expect(after.verifiedBehind == before.behind && after.permitsRampdown, "\(after)")
        #expect(try await fleet.control(FleetControlChange(stage: .rampdown)).stage == .rampdown)
        try await fleet.refreshAll()
        #expect(fleet.instances[0].gate.stage == .rampdown)
    }

    @Test("A pass that finds a mismatch records nothing; a fall-behind after a clean pass revokes it")
    func uncleanPassNotRecorded() async throws {
        let fleet = try await liveFleet()
        try await fleet.newBase.write("k3", "stale")
        let report = try await Verify(core: fleet.instances[0].core).verify()
        #expect(report.mismatches == 1 && !report.isClean && report.fleetVerifiedBehind == nil)
        #expect(try await fleet.state.state(of: InProcessFleet.migration).verifiedBehind == nil)

        try await fleet.newBase.write("k3", "v3")
        let clean = try await Verify(core: fleet.instances[0].core).verify()
        #expect(clean.isClean && clean.fleetVerifiedBehind != nil)
        _ = try await fleet.state.markBehind(InProcessFleet.migration)
        #expect(try await fleet.catchUp())
        let state = try await fleet.state.state(of: InProcessFleet.migration)
        #expect(state.isCaughtUp && !state.isVerified && !state.permitsRampdown)
        await #expect(throws: ZDDMError.self) { try await fleet.control(FleetControlChange(stage: .rampdown)) }
    }

    @Test("A pass below rate 1 is not clean and records nothing")
    func passBelowRateOneNotRecorded() async throws {
        let fleet = try await liveFleet()
        try await fleet.control(FleetControlChange(rate: 0.5))
        try await fleet.refreshAll()
        let report = try await Verify(core: fleet.instances[0].core).verify()
        #expect(report.mismatches == 0 && !report.isClean && report.fleetVerifiedBehind == nil)
        #expect(try await fleet.state.state(of: InProcessFleet.migration).verifiedBehind == nil)
    }
}
