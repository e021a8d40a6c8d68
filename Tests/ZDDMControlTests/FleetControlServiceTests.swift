import Configuration
import Foundation
import InMemoryLogging
import Logging
import Synchronization
import SystemPackage
import Testing
import ZDDM
import ZDDMControl
import ZDDMTesting

@Suite("Publishing controls to a fleet's shared state")
struct FleetControlServiceTests {
    @Test("Environment values are published once; invalid ones are logged and left out, the others published")
    func environmentPublished() async throws {
        let store = InMemoryFleetStateStore()
        let (logger, handler) = memoryLogger()
        let environment = EnvironmentVariablesProvider(environmentVariables: [
            "ZDDM_ORDERS_RATE": "0.25",
            "ZDDM_ORDERS_KILLSWITCH": "maybe",
            "ZDDM_ORDERS_STAGE": "live",
        ])
        let service = try FleetControlService(
            config: ConfigReader(provider: environment),
            migration: "orders",
            store: store,
            logger: logger
        )
        let state = try #require(try await service.publishCurrentConfiguration())
        #expect(state.stage == .live && state.rate == 0.25 && !state.killswitch && state.highWaterRate == 0.25)
        #expect(try await store.state(of: "orders") == state)
        let rejected = handler.entries.filter {
            $0.level == .error && "\($0.message)".contains("zddm.orders.killswitch: invalid value 'maybe'")
        }
        #expect(rejected.count == 1, "\(handler.entries)")
        #expect(try await service.publishCurrentConfiguration() == nil, "nothing new to publish")

        #expect(try await store.state(of: "other") == FleetState())
        #expect(throws: ZDDMError.self) {
            try FleetControlService(config: ConfigReader(provider: environment), migration: "", store: store)
        }
    }

    @Test("A watched file: each change reaches the shared state, and instances following it see it")
    func watchedFile() async throws {
        let file = try ControlFile()
        defer { file.remove() }
        try file.write(#"{"zddm": {"orders": {"rate": 0.1, "killswitch": false, "stage": "dualwrite"}}}"#)
        let store = InMemoryFleetStateStore()
        let provider = try await ReloadingFileProvider<JSONSnapshot>(
            filePath: FilePath(file.url.path),
            pollInterval: .milliseconds(20)
        )
        let service = try FleetControlService(
            config: ConfigReader(provider: provider),
            migration: "orders",
            store: store,
            providerServices: [provider]
        )
        let gate = try TrafficGate(rate: 0)
        let member = try FleetMember(store: store, migration: "orders", gate: gate)
        try await withRunningService(service) {
            #expect(try await eventuallyAsync { try await store.state(of: "orders").stage == .dualwrite })
            try file.write(#"{"zddm": {"orders": {"rate": 0.5, "killswitch": true, "stage": "live"}}}"#)
            #expect(try await eventuallyAsync { try await store.state(of: "orders").killswitch })
            let state = try await store.state(of: "orders")
            #expect(state.rate == 0.5 && state.stage == .live && state.behind == 3)
            try await member.refresh()
            #expect(gate.rate == 0.5 && gate.isKillswitchOn && gate.stage == .live)
        }
    }
}

/// A refused `rampdown` from the configuration: logged once, the rest published, retried at a steady pace until a
/// clean verify pass permits it.
@Suite("Publishing a refused rampdown to a fleet's shared state")
struct FleetControlServiceRefusalTests {
    /// An in-memory shared state that counts the changes asked of it.
    final class CountingStore: FleetStateStore {
        let base = InMemoryFleetStateStore()
        let updates = Atomic<Int>(0)
        func state(of migration: String) async throws -> FleetState { try await base.state(of: migration) }
        func update(_ migration: String, _ change: FleetControlChange) async throws -> FleetState {
            updates.add(1, ordering: .relaxed)
            return try await base.update(migration, change)
        }
        func markBehind(_ migration: String) async throws -> UInt64 { try await base.markBehind(migration) }
        func publishCaughtUp(_ migration: String, through behind: UInt64, token: UInt64) async throws -> Bool {
            try await base.publishCaughtUp(migration, through: behind, token: token)
        }
        func recordCleanVerify(_ migration: String, startedAt behind: UInt64) async throws -> FleetState {
            try await base.recordCleanVerify(migration, startedAt: behind)
        }
        func acquireLease(_ migration: String, holder: String, duration: Duration) async throws -> UInt64? {
            try await base.acquireLease(migration, holder: holder, duration: duration)
        }
        func releaseLease(_ migration: String, holder: String, token: UInt64) async throws {
            try await base.releaseLease(migration, holder: holder, token: token)
        }
    }

    /// The shared state at `live`, rate 0.5, the applier caught up.
    private func liveStore() async throws -> CountingStore {
        let store = CountingStore()
        let state = try await store.base.update("orders", FleetControlChange(stage: .live, rate: 0.5))
        try await catchUp(store, through: state.behind)
        return store
    }

    private func catchUp(_ store: CountingStore, through behind: UInt64) async throws {
        let token = try #require(try await store.acquireLease("orders", holder: "applier", duration: .seconds(600)))
        #expect(try await store.publishCaughtUp("orders", through: behind, token: token))
    }

    /// The `error` entries about a refusal.
    private func refusals(_ handler: InMemoryLogHandler) -> [InMemoryLogHandler.Entry] {
        handler.entries.filter { $0.level == .error && "\($0.message)".contains("refused") }
    }

    @Test("Refused: the rate is published without the stage, logged once; a retry publishes it once permitted")
    func refusedThenRetried() async throws {
        let store = try await liveStore()
        let (logger, handler) = memoryLogger()
        let environment = EnvironmentVariablesProvider(environmentVariables: [
            "ZDDM_ORDERS_RATE": "1",
            "ZDDM_ORDERS_STAGE": "rampdown",
        ])
        let service = try FleetControlService(
            config: ConfigReader(provider: environment),
            migration: "orders",
            store: store,
            logger: logger
        )
        let state = try #require(try await service.publishCurrentConfiguration())
        #expect(state.stage == .live && state.rate == 1, "the rate went out without the stage")
        #expect(service.refusedChange == FleetControlChange(stage: .rampdown))
        let logged = refusals(handler)
        #expect(logged.count == 1, "\(handler.entries)")
        let message = "\(logged.first?.message ?? "")"
        #expect(message.contains("rampdown needs") && message.contains("verify pass"), "\(message)")
        #expect(logged.first?.metadata["zddm.config.key"] == .string("zddm.orders.stage"))
        #expect(logged.first?.metadata["zddm.config.value"] == .string("rampdown"))

        // Nothing new in the configuration: nothing published, nothing logged.
        #expect(try await service.publishCurrentConfiguration() == nil)
        // Still refused: not logged again.
        #expect(try await service.retryRefusedChange() == nil)
        #expect(refusals(handler).count == 1)

        // The applier catches up past the rise of the high water, and a clean pass is recorded.
        let current = try await store.state(of: "orders")
        try await catchUp(store, through: current.behind)
        #expect(try await service.retryRefusedChange() == nil, "still no verify pass")
        _ = try await store.recordCleanVerify("orders", startedAt: current.behind)
        let published = try #require(try await service.retryRefusedChange())
        #expect(published.stage == .rampdown && service.refusedChange == nil)
        #expect(try await service.retryRefusedChange() == nil, "nothing waits any more")
        #expect(refusals(handler).count == 1)
        #expect(throws: ZDDMError.self) {
            try FleetControlService(
                config: ConfigReader(provider: environment),
                migration: "orders",
                store: store,
                retryInterval: .zero
            )
        }
    }

    @Test("Running: a refused rampdown is retried at the retry interval, not in a tight loop, and lands once permitted")
    func runningRetries() async throws {
        let file = try ControlFile()
        defer { file.remove() }
        try file.write(#"{"zddm": {"orders": {"rate": 1, "stage": "rampdown"}}}"#)
        let store = try await liveStore()
        let (logger, handler) = memoryLogger()
        let provider = try await ReloadingFileProvider<JSONSnapshot>(
            filePath: FilePath(file.url.path),
            pollInterval: .milliseconds(20)
        )
        let interval = Duration.milliseconds(50)
        let service = try FleetControlService(
            config: ConfigReader(provider: provider),
            migration: "orders",
            store: store,
            providerServices: [provider],
            retryInterval: interval,
            logger: logger
        )
        try await withRunningService(service) {
            #expect(try await eventually { refusals(handler).count == 1 })
            #expect(try await store.state(of: "orders").rate == 1)
            let clock = ContinuousClock()
            let start = clock.now
            let before = store.updates.load(ordering: .relaxed)
            #expect(try await eventually { store.updates.load(ordering: .relaxed) >= before + 4 }, "it retries")
            let retries = store.updates.load(ordering: .relaxed) - before
            let elapsed = clock.now - start
            #expect(Double(retries) <= elapsed / interval + 3, "\(retries) retries in \(elapsed): a tight loop")
            #expect(refusals(handler).count == 1, "a refusal is logged once, not at every retry")

            let current = try await store.state(of: "orders")
            try await catchUp(store, through: current.behind)
            _ = try await store.recordCleanVerify("orders", startedAt: current.behind)
            #expect(try await eventuallyAsync { try await store.state(of: "orders").stage == .rampdown })
            #expect(service.refusedChange == nil)
            #expect(refusals(handler).count == 1)
        }
    }
}

/// Polls `condition` every 10 ms until it holds, for at most 60 s; returns whether it held.
private func eventuallyAsync(_ condition: () async throws -> Bool) async throws -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + .seconds(60)
    while clock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}
