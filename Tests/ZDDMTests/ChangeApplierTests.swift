import Synchronization
import Testing
import ZDDM
import ZDDMTesting

@Suite("Change applier: passes, catching up, publishing")
struct ChangeApplierTests {
    @Test("A pass completes and publishes caught-up while writers keep adding changes")
    func completesUnderSteadyWrites() async throws {
        let clock = ManualClock()
        let base = InMemoryStore<String, String>(captureChanges: true)
        // A writer that adds one change each time the applier reads or removes changes, up to 200 times: the change
        // table never reads empty while it runs.
        let writes = Mutex(0)
        let old = FaultInjectingStore(base)
        old.setHooks(
            before: nil,
            after: { operation, _ in
                guard operation == .changes else { return }
                let next = writes.withLock { count -> Int? in
                    guard count < 200 else { return nil }
                    count += 1
                    return count
                }
                if let next { try await base.write("k\(next % 7)", "v\(next)") }
            }
        )
        let new = InMemoryStore<String, String>()
        let fleetState = InMemoryFleetStateStore(clock: clock)
        _ = try await fleetState.update("m", FleetControlChange(stage: .live, rate: 1))
        #expect(try await fleetState.markBehind("m") == 2, "the rise of the high water moved it to 1")
        let core = try MigrationCore(name: "m", old: old, new: new, gate: try TrafficGate(rate: 1), clock: clock)
        let fleetOptions = FleetOptions(viewLease: .seconds(1))
        let applier = try ChangeApplier(
            core: core,
            fleetState: fleetState,
            fleetOptions: fleetOptions,
            options: ChangeApplierOptions(batchSize: 50)
        )
        for key in 0..<3 { try await base.write("k\(key)", "start") }

        // The first pass sees the state for the first time: it applies, but may not publish before a lease.
        let first = try await applier.applyPass()
        #expect(first.holdsLease && first.publishedCaughtUp == nil)
        #expect(first.entries < 10, "the pass should end at the first short read, not when writers pause")
        clock.advance(by: .seconds(2))
        let second = try await applier.applyPass()
        #expect(second.entries < 10)
        #expect(second.publishedCaughtUp == 2)
        #expect(try await fleetState.state(of: "m").isCaughtUp)
        #expect(writes.withLock { $0 } < 200)
    }

    @Test("A pass publishes the barrier value read before the read that completed it, not one read after it")
    func publishesOnlyWhatItCaughtUpWith() async throws {
        let clock = ManualClock()
        let base = InMemoryStore<String, String>(captureChanges: true)
        let old = FaultInjectingStore(base)
        let new = InMemoryStore<String, String>()
        let fleetState = InMemoryFleetStateStore(clock: clock)
        // A rate below 1: the applier reads the state again after each batch of changes.
        _ = try await fleetState.update("m", FleetControlChange(stage: .live, rate: 0.5))
        let core = try MigrationCore(name: "m", old: old, new: new, gate: try TrafficGate(rate: 0.5), clock: clock)
        let applier = try ChangeApplier(
            core: core,
            fleetState: fleetState,
            fleetOptions: FleetOptions(viewLease: .seconds(1)),
            options: ChangeApplierOptions(batchSize: 50)
        )
        _ = try await applier.applyPass()
        clock.advance(by: .seconds(2))
        #expect(try await fleetState.markBehind("m") == 2, "the rise of the high water moved it to 1")
        try await base.write("a", "1")
        // Right after the pass reads the change table, a writer changes a key and records that New fell behind on
        // it: that change is not in the batch, so the pass has not caught up with behind = 2.
        let armed = Mutex(true)
        old.setHooks(
            before: nil,
            after: { operation, _ in
                guard operation == .changes,
                    armed.withLock({
                        let was = $0
                        $0 = false
                        return was
                    })
                else { return }
                try await base.write("b", "2")
                _ = try await fleetState.markBehind("m")
            }
        )
        let pass = try await applier.applyPass()
        #expect(pass.publishedCaughtUp == 2)
        let state = try await fleetState.state(of: "m")
        #expect(state.behind == 3 && state.caughtUp == 2 && !state.isCaughtUp)
        // The next pass applies it and catches up (a write's failed New step needs no wait for older views).
        old.setHooks(before: nil, after: nil)
        #expect(try await applier.applyPass().publishedCaughtUp == 3)
    }

    @Test(
        "The killswitch turned on and off between two passes restarts the wait for older views; a failure mark does not"
    )
    func waitsAfterControlChangesOnly() async throws {
        let clock = ManualClock()
        let base = InMemoryStore<String, String>(captureChanges: true)
        let fleetState = InMemoryFleetStateStore(clock: clock)
        _ = try await fleetState.update("m", FleetControlChange(stage: .live, rate: 1))
        let core = try MigrationCore(
            name: "m",
            old: base,
            new: InMemoryStore<String, String>(),
            gate: try TrafficGate(rate: 1),
            clock: clock
        )
        let applier = try ChangeApplier(
            core: core,
            fleetState: fleetState,
            fleetOptions: FleetOptions(viewLease: .seconds(1)),
            options: ChangeApplierOptions(batchSize: 50)
        )
        _ = try await applier.applyPass()
        clock.advance(by: .seconds(2))
        #expect(try await applier.applyPass().publishedCaughtUp == 1)

        // Between two passes the killswitch goes on and off: the applier never sees it on, yet writes held back
        // under views from that moment may still be on their way to Old.
        _ = try await fleetState.update("m", FleetControlChange(killswitch: true))
        _ = try await fleetState.update("m", FleetControlChange(killswitch: false))
        try await base.write("a", "1")
        #expect(try await applier.applyPass().publishedCaughtUp == nil, "older views have not expired yet")
        clock.advance(by: .seconds(2))
        #expect(try await applier.applyPass().publishedCaughtUp == 2)

        // A write whose New step failed records it after Old committed: the next pass publishes at once.
        try await base.write("b", "2")
        #expect(try await fleetState.markBehind("m") == 3)
        #expect(try await applier.applyPass().publishedCaughtUp == 3)
        #expect(try await fleetState.state(of: "m").isCaughtUp)
    }
}
