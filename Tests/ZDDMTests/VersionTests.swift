import Synchronization
import Testing
import ZDDM
import ZDDMTesting

@Suite("Versions, fenced writes, change capture and the fleet's shared state")
struct VersionTests {
    @Test("The in-memory store passes the version, fence and change-capture checks")
    func inMemoryVersions() async throws {
        let suite = StoreConformanceSuite(
            makeStore: { InMemoryStore<String, String>(captureChanges: true) },
            key: { "key-\($0)" },
            value: { "value-\($0)" },
            areInIncreasingOrder: { $0 < $1 }
        )
        #expect(try await suite.failures().isEmpty)
        let store = InMemoryStore<String, String>(captureChanges: true)
        #expect(store.capabilities.isSuperset(of: [.versions, .changeCapture]))
        #expect(!InMemoryStore<String, String>().capabilities.contains(.changeCapture))
    }

    @Test("The suite catches a store whose fence lets an older version through")
    func suiteCatchesUnfencedStore() async throws {
        let suite = StoreConformanceSuite(
            makeStore: { UnfencedStore() },
            key: { "k\($0)" },
            value: { "v\($0)" },
            versionRoles: .fence
        )
        let failures = try await suite.failures().map(\.check)
        #expect(failures.contains("fence-older"))
        #expect(failures.contains("fence-concurrent"))
    }

    @Test("The suite catches a store that leaves deleted keys out of keysIncludingDeleted")
    func suiteCatchesStoreForgettingDeletions() async throws {
        let suite = StoreConformanceSuite(
            makeStore: { ForgetfulLister() },
            key: { "k\($0)" },
            value: { "v\($0)" },
            areInIncreasingOrder: { $0 < $1 },
            versionRoles: .assigns
        )
        let failures = try await suite.failures().map(\.check)
        #expect(failures.contains("keys-including-deleted"))
        #expect(!failures.contains("keys-including-deleted-pages"))
    }

    @Test("Operator changes follow the fleet's rules: high water never falls, stopping New's writes moves behind on")
    func fleetStateRules() throws {
        var state = try FleetState().applying(FleetControlChange(stage: .live, rate: 0.7))
        #expect(state.highWaterRate == 0.7 && state.writesNew && state.behind == 1, "a rise of the high water")
        #expect(state.controlEpoch == 2, "New written from now on, and a rise of the high water")
        state.caughtUp = 1
        state = try state.applying(FleetControlChange(rate: 0.1))
        #expect(state.rate == 0.1 && state.highWaterRate == 0.7 && state.isCaughtUp)
        state = try state.applying(FleetControlChange(rate: 0.5))
        #expect(state.isCaughtUp, "below the high water: nothing new for New")
        #expect(state.controlEpoch == 2, "a rate below the high water changes no view's meaning")
        state = try state.applying(FleetControlChange(killswitch: true))
        #expect(state.behind == 2 && !state.writesNew && !state.isCaughtUp && state.controlEpoch == 3)
        state = try state.applying(FleetControlChange(stage: .off, killswitch: false))
        #expect(state.behind == 2, "already not writing New: nothing new fell behind")
        #expect(state.controlEpoch == 3, "still not writing New")
        state = try state.applying(FleetControlChange(stage: .dualwrite))
        #expect(state.controlEpoch == 4, "writing New again")
        state = try state.applying(FleetControlChange(stage: .off))
        #expect(state.behind == 3 && state.controlEpoch == 5)
        #expect(throws: ZDDMError.self) { try state.applying(FleetControlChange(rate: .nan)) }
        #expect(throws: ZDDMError.self) { try state.applying(FleetControlChange(rate: -0.1)) }
    }

    @Test("The in-memory fleet state passes the fleet-state checks")
    func inMemoryFleetState() async throws {
        let suite = FleetStateConformanceSuite(makeStore: { InMemoryFleetStateStore() })
        let failures = try await suite.failures()
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test("The fleet-state suite catches a store that publishes caught-up without checking the lease")
    func fleetSuiteCatchesUnfencedPublish() async throws {
        let suite = FleetStateConformanceSuite(makeStore: { UnfencedFleetState() })
        let failures = try await suite.failures().map(\.check)
        #expect(failures.contains("caught-up-fenced"))
        #expect(failures.contains("caught-up-stale-holder"))
    }

    @Test("The fleet-state suite catches a store that records a verify pass backwards or ahead of behind")
    func fleetSuiteCatchesCarelessVerifyRecord() async throws {
        let suite = FleetStateConformanceSuite(makeStore: { CarelessVerifyRecord() })
        let failures = try await suite.failures().map(\.check)
        #expect(failures.contains("verified-monotonic"))
        #expect(failures.contains("verified-ahead"))
    }

    @Test("A lease expires by the store's clock and goes to the next holder with a larger token")
    func leaseExpiryByInjectedClock() async throws {
        let clock = ManualClock()
        let store = InMemoryFleetStateStore(clock: clock)
        let first = try #require(try await store.acquireLease("m", holder: "a", duration: .seconds(5)))
        clock.advance(by: .seconds(4))
        #expect(try await store.acquireLease("m", holder: "b", duration: .seconds(5)) == nil)
        #expect(try await store.acquireLease("m", holder: "a", duration: .seconds(5)) == first)
        clock.advance(by: .seconds(4))
        #expect(try await store.acquireLease("m", holder: "b", duration: .seconds(5)) == nil, "renewed at 4 s")
        clock.advance(by: .seconds(2))
        let second = try #require(try await store.acquireLease("m", holder: "b", duration: .seconds(5)))
        #expect(second > first)
        #expect(try await store.publishCaughtUp("m", through: 1, token: first) == false)
    }
}

/// A store whose "fenced" write ignores versions: what the fence checks must catch.
private struct UnfencedStore: KeyValueStore {
    let base = InMemoryStore<String, String>()
    var capabilities: StoreCapabilities { base.capabilities.subtracting(.orderedKeys) }
    func read(_ key: String) async throws -> StoreRecord<String>? { try await base.read(key) }
    func write(_ key: String, _ value: String) async throws { try await base.write(key, value) }
    func insertIfAbsent(_ key: String, _ value: String) async throws -> Bool {
        try await base.insertIfAbsent(key, value)
    }
    func delete(_ key: String) async throws { try await base.delete(key) }
    func writeTombstone(_ key: String) async throws { try await base.writeTombstone(key) }
    func readVersioned(_ key: String) async throws -> VersionedRecord<String>? { try await base.readVersioned(key) }
    func writeIfNewer(_ key: String, _ record: VersionedRecord<String>) async throws -> Bool {
        try await base.delete(key)
        return try await base.writeIfNewer(key, record)
    }
}

/// A versioned store whose key listing leaves deleted keys out (the protocol's default).
private struct ForgetfulLister: KeyValueStore {
    let base = InMemoryStore<String, String>()
    var capabilities: StoreCapabilities { base.capabilities }
    func read(_ key: String) async throws -> StoreRecord<String>? { try await base.read(key) }
    func write(_ key: String, _ value: String) async throws { try await base.write(key, value) }
    func insertIfAbsent(_ key: String, _ value: String) async throws -> Bool {
        try await base.insertIfAbsent(key, value)
    }
    func delete(_ key: String) async throws { try await base.delete(key) }
    func writeTombstone(_ key: String) async throws { try await base.writeTombstone(key) }
    func keys(after cursor: String?, limit: Int) async throws -> [String] {
        try await base.keys(after: cursor, limit: limit)
    }
    func readVersioned(_ key: String) async throws -> VersionedRecord<String>? { try await base.readVersioned(key) }
    func readManyVersioned(_ keys: [String]) async throws -> [String: VersionedRecord<String>] {
        try await base.readManyVersioned(keys)
    }
    func writeVersioned(_ key: String, _ value: String) async throws -> UInt64 {
        try await base.writeVersioned(key, value)
    }
    func deleteVersioned(_ key: String) async throws -> UInt64 { try await base.deleteVersioned(key) }
    func writeIfNewer(_ key: String, _ record: VersionedRecord<String>) async throws -> Bool {
        try await base.writeIfNewer(key, record)
    }
}

/// A fleet state whose caught-up mark ignores the lease token.
private final class UnfencedFleetState: FleetStateStore {
    let base = InMemoryFleetStateStore()
    let lastGranted = Mutex<UInt64>(0)
    func state(of migration: String) async throws -> FleetState { try await base.state(of: migration) }
    func update(_ migration: String, _ change: FleetControlChange) async throws -> FleetState {
        try await base.update(migration, change)
    }
    func markBehind(_ migration: String) async throws -> UInt64 { try await base.markBehind(migration) }
    func publishCaughtUp(_ migration: String, through behind: UInt64, token: UInt64) async throws -> Bool {
        try await base.publishCaughtUp(migration, through: behind, token: lastGranted.withLock { $0 })
    }
    func acquireLease(_ migration: String, holder: String, duration: Duration) async throws -> UInt64? {
        let token = try await base.acquireLease(migration, holder: holder, duration: duration)
        if let token { lastGranted.withLock { $0 = token } }
        return token
    }
    func recordCleanVerify(_ migration: String, startedAt behind: UInt64) async throws -> FleetState {
        try await base.recordCleanVerify(migration, startedAt: behind)
    }
    func releaseLease(_ migration: String, holder: String, token: UInt64) async throws {
        try await base.releaseLease(migration, holder: holder, token: token)
    }
}

/// A fleet state that records a verify pass as given: backwards, and ahead of behind.
private final class CarelessVerifyRecord: FleetStateStore {
    let base = InMemoryFleetStateStore()
    let recorded = Mutex<[String: UInt64]>([:])
    func state(of migration: String) async throws -> FleetState {
        var state = try await base.state(of: migration)
        state.verifiedBehind = recorded.withLock { $0[migration] }
        return state
    }
    func update(_ migration: String, _ change: FleetControlChange) async throws -> FleetState {
        try await base.update(migration, change)
    }
    func markBehind(_ migration: String) async throws -> UInt64 { try await base.markBehind(migration) }
    func publishCaughtUp(_ migration: String, through behind: UInt64, token: UInt64) async throws -> Bool {
        try await base.publishCaughtUp(migration, through: behind, token: token)
    }
    func recordCleanVerify(_ migration: String, startedAt behind: UInt64) async throws -> FleetState {
        recorded.withLock { $0[migration] = behind }
        return try await state(of: migration)
    }
    func acquireLease(_ migration: String, holder: String, duration: Duration) async throws -> UInt64? {
        try await base.acquireLease(migration, holder: holder, duration: duration)
    }
    func releaseLease(_ migration: String, holder: String, token: UInt64) async throws {
        try await base.releaseLease(migration, holder: holder, token: token)
    }
}
