import Configuration
import Foundation
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

    private func eventuallyAsync(_ condition: () async throws -> Bool) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(60)
        while clock.now < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return try await condition()
    }
}
