import Synchronization
import Testing
import ZDDM
import ZDDMTesting

@Suite("A fleet: versions, fenced writes, the change applier and the barrier")
struct FleetTests {
    /// A fleet in `live` at rate 1 whose applier has caught up with the rise of the high water.
    private func liveFleet(_ count: Int) async throws -> InProcessFleet {
        // A view lease long enough that a view refreshed a moment ago is still current on a busy machine.
        let fleet = try InProcessFleet(count: count, viewLease: .seconds(1))
        try await fleet.control(FleetControlChange(stage: .live, rate: 1))
        try await fleet.refreshAll()
        #expect(try await fleet.catchUp())
        let readable = fleet.instances.allSatisfy { $0.member.mayReadNew }
        #expect(readable)
        return fleet
    }

    @Test("Two instances' writes of one key reach New in the other order: New keeps the newer")
    func writesConvergeInAnyOrder() async throws {
        let fleet = try await liveFleet(2)
        let (a, b) = (fleet.instances[0], fleet.instances[1])
        let entered = AsyncSignal()
        let release = AsyncSignal()
        a.new.setHooks(
            before: { operation, key in
                if operation == .writeIfNewer, key == "k" {
                    entered.signal()
                    await release.wait()
                }
            },
            after: nil
        )
        let first = Task { try await a.proxy.write("k", "first") }
        await entered.wait()
        try await b.proxy.write("k", "second")
        release.signal()
        try await first.value
        #expect(try await fleet.newBase.read("k") == .value("second"))
        #expect(try await fleet.oldBase.read("k") == .value("second"))
        #expect(try await a.proxy.read("k") == "second")
        #expect(fleet.divergentKeys().isEmpty)
    }

    @Test("A fill that read Old before a write never overwrites the write in New")
    func fillNeverOverwritesNewerWrite() async throws {
        let fleet = try await liveFleet(2)
        let (a, b) = (fleet.instances[0], fleet.instances[1])
        try await fleet.oldBase.write("k", "old")
        #expect(try await fleet.catchUp())
        let release = AsyncSignal()
        let filling = Atomic<Bool>(false)
        var held: Task<String?, any Error>?
        // On a busy machine a's view can expire before its read reaches New; the read then answers from Old and
        // fills nothing. Try again under a fresh view until a read's fill is held on its way into New.
        for _ in 0..<20 {
            try await fleet.newBase.delete("k")  // a cold key: the next read fills it
            try await a.member.refresh()
            let reached = AsyncSignal()
            a.new.setHooks(
                before: { operation, _ in
                    if operation == .writeIfNewer {
                        filling.store(true, ordering: .releasing)
                        reached.signal()
                        await release.wait()
                    }
                },
                after: nil
            )
            let read = Task {
                defer { reached.signal() }
                return try await a.proxy.read("k")
            }
            await reached.wait()
            if filling.load(ordering: .acquiring) {
                held = read
                break
            }
            _ = try await read.value
            a.new.setHooks(before: nil, after: nil)
        }
        let read = try #require(held, "no read reached New's fill in 20 tries")
        try await b.proxy.write("k", "new")
        release.signal()
        #expect(try await read.value == "old")  // it started before the write was acknowledged
        #expect(try await fleet.newBase.read("k") == .value("new"))
        #expect(try await b.proxy.read("k") == "new")
    }

    @Test("A read that misses in both stores fills a tombstone, so the next read does not reach Old")
    func absenceIsFilled() async throws {
        let fleet = try await liveFleet(1)
        let proxy = fleet.instances[0].proxy
        let oldCalls = fleet.instances[0].old.calls
        #expect(try await proxy.read("never") == nil)
        #expect(try await fleet.newBase.readVersioned("never") == .tombstone(version: 0))
        #expect(try await proxy.read("never") == nil)
        #expect(fleet.instances[0].old.calls == oldCalls + 1)
        try await fleet.oldBase.write("never", "now")  // a writer that bypasses the proxy
        #expect(try await fleet.catchUp())
        #expect(try await proxy.read("never") == "now")
    }

    @Test("Killswitch on, seen by one instance first: the other never serves New's older copy after the write")
    func killswitchSeenAtDifferentMoments() async throws {
        let fleet = try await liveFleet(2)
        let (a, b) = (fleet.instances[0], fleet.instances[1])
        try await a.proxy.write("k", "v0")
        try await fleet.refreshAll()
        try await fleet.control(FleetControlChange(killswitch: true))
        try await a.member.refresh()  // b still holds its view from before: killswitch off, New readable
        #expect(a.gate.isKillswitchOn && !b.gate.isKillswitchOn && b.member.mayReadNew)
        try await a.proxy.write("k", "v1")
        #expect(try await fleet.newBase.read("k") == .value("v0"), "New is not touched with the killswitch on")
        // Acknowledged: b's view from before the killswitch has expired, so b does not read New.
        #expect(!b.member.mayReadNew)
        #expect(try await b.proxy.read("k") == "v1")

        try await fleet.control(FleetControlChange(killswitch: false))
        try await fleet.refreshAll()
        #expect(!b.member.mayReadNew, "New is behind until the applier has caught up")
        #expect(try await b.proxy.read("k") == "v1")
        #expect(try await fleet.catchUp())
        #expect(b.member.mayReadNew)
        #expect(try await fleet.newBase.read("k") == .value("v1"))
        #expect(try await b.proxy.read("k") == "v1")
    }

    @Test("New failing in one instance: the write waits, never fails, and no instance reads the older copy")
    func newFailingInOneInstance() async throws {
        let fleet = try await liveFleet(2)
        let (a, b) = (fleet.instances[0], fleet.instances[1])
        try await b.proxy.write("k", "v0")
        a.new.setOutage(true)
        try await a.proxy.write("k", "v1")
        #expect(try await fleet.newBase.read("k") == .value("v0"))
        #expect(try await fleet.state.state(of: InProcessFleet.migration).isCaughtUp == false)
        #expect(try await b.proxy.read("k") == "v1")  // b's view from before the barrier has expired
        try await b.member.refresh()
        #expect(!b.member.mayReadNew)
        #expect(try await b.proxy.read("k") == "v1")
        #expect(try await fleet.catchUp())
        #expect(try await fleet.newBase.read("k") == .value("v1"))
        #expect(try await b.proxy.read("k") == "v1")
        a.new.setOutage(false)
    }

    @Test("A newly started instance takes the rate, stage and high-water rate from the shared state")
    func newInstanceFollowsSharedState() async throws {
        let fleet = try InProcessFleet(count: 1)
        try await fleet.control(FleetControlChange(stage: .live, rate: 0.8))
        try await fleet.control(FleetControlChange(rate: 0.2))
        let gate = try TrafficGate(rate: 0)
        let member = try FleetMember(store: fleet.state, migration: InProcessFleet.migration, gate: gate)
        #expect(!member.mayReadNew)
        try await member.refresh()
        #expect(gate.stage == .live && gate.rate == 0.2 && gate.highWaterRate == 0.8)
    }

    @Test("Options and set-up are checked: a fleet needs versions and the member must follow the core's gate")
    func setUpChecks() async throws {
        let state = InMemoryFleetStateStore()
        let gate = try TrafficGate(rate: 1)
        #expect(throws: ZDDMError.self) { try FleetMember(store: state, migration: "", gate: gate) }
        #expect(throws: ZDDMError.self) {
            try FleetMember(store: state, migration: "m", gate: gate, options: FleetOptions(viewLease: .zero))
        }
        let member = try FleetMember(store: state, migration: "m", gate: gate)
        let unversioned = ClosureStore<String, String>(readValue: { _ in nil }, write: { _, _ in })
        let error = #expect(throws: ZDDMError.self) {
            try MigrationCore(
                name: "m",
                old: unversioned,
                new: InMemoryStore<String, String>(),
                gate: gate,
                fleet: member
            )
        }
        #expect(error?.code == .unsupported || error?.code == .invalidArgument)
        #expect(throws: ZDDMError.self) {
            try MigrationCore(
                name: "m",
                old: InMemoryStore<String, String>(),
                new: InMemoryStore<String, String>(),
                gate: try TrafficGate(rate: 1),
                fleet: member
            )
        }
        let core = try MigrationCore(
            name: "m",
            old: InMemoryStore<String, String>(),
            new: InMemoryStore<String, String>(),
            gate: gate
        )
        #expect(throws: ZDDMError.self) { try ChangeApplier(core: core, fleetState: state) }
    }
}
