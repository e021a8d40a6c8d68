import Configuration
import Foundation
import InMemoryLogging
import Logging
import ServiceLifecycle
import SystemPackage
import Testing
import ZDDM
import ZDDMControl
import ZDDMTesting

@Suite("MigrationControlService")
struct MigrationControlServiceTests {
    @Test(
        "Keys: zddm.<migration>.<setting>, and the environment variable swift-configuration derives from it",
        arguments: [
            ("orders", "ZDDM_ORDERS_RATE"),
            ("user-profiles", "ZDDM_USER_PROFILES_RATE"),
            ("userProfiles", "ZDDM_USER_PROFILES_RATE"),
            ("v2_accounts", "ZDDM_V2_ACCOUNTS_RATE"),
        ]
    )
    func keys(migration: String, variable: String) throws {
        let keys = MigrationControlKeys(migration: migration)
        #expect(keys.dotted(.rate) == "zddm.\(migration).rate")
        #expect(keys.key(.stage).components == ["zddm", migration, "stage"])
        #expect(keys.environmentVariable(.rate) == variable)
        #expect(
            keys.environmentVariable(.killswitch) == variable.replacingOccurrences(of: "_RATE", with: "_KILLSWITCH")
        )
        // The provider itself reads that variable for that key.
        let provider = EnvironmentVariablesProvider(environmentVariables: [variable: "0.5"])
        #expect(ConfigReader(provider: provider).double(forKey: keys.key(.rate)) == 0.5)
    }

    @Test("Environment variables: rate, killswitch and stage applied")
    func environment() async throws {
        let gate = try TrafficGate(rate: 0)
        let environment = EnvironmentVariablesProvider(environmentVariables: [
            "ZDDM_ORDERS_RATE": "0.25",
            "ZDDM_ORDERS_KILLSWITCH": "true",
            "ZDDM_ORDERS_STAGE": "shadow",
            "ZDDM_OTHER_RATE": "0.75",
        ])
        let other = try TrafficGate(rate: 0)
        let service = try MigrationControlService(
            config: ConfigReader(provider: environment),
            gates: ["orders": gate, "other": other]
        )
        try await withRunningService(service) {
            let applied = try await eventually { gate.rate == 0.25 && gate.isKillswitchOn && gate.stage == .shadow }
            #expect(applied)
            let otherApplied = try await eventually { other.rate == 0.75 }
            #expect(otherApplied)
            #expect(!other.isKillswitchOn && other.stage == .live)
        }
    }

    @Test("A watched JSON file: changes are applied while the service runs; graceful shutdown stops it")
    func jsonFile() async throws {
        let file = try ControlFile()
        defer { file.remove() }
        try file.write(#"{"zddm": {"orders": {"rate": 0.1, "killswitch": false, "stage": "dualwrite"}}}"#)
        let gate = try TrafficGate(rate: 0)
        let (logger, handler) = memoryLogger()
        let service = try await MigrationControlService.watchingJSONFile(
            FilePath(file.url.path),
            environment: false,
            pollInterval: .milliseconds(20),
            gates: ["orders": gate],
            logger: logger
        )
        let shutdown = try await withRunningService(service) {
            #expect(try await eventually { gate.rate == 0.1 && gate.stage == .dualwrite })
            #expect(!gate.isKillswitchOn)
            // Dotted keys work as well as nested objects.
            try file.write(#"{"zddm.orders.rate": 0.5, "zddm.orders.killswitch": true, "zddm.orders.stage": "live"}"#)
            #expect(try await eventually { gate.rate == 0.5 && gate.isKillswitchOn && gate.stage == .live })
            try file.write(#"{"zddm": {"orders": {"rate": 1, "killswitch": false, "stage": "shadow"}}}"#)
            #expect(try await eventually { gate.rate == 1 && !gate.isKillswitchOn && gate.stage == .shadow })
        }
        #expect(shutdown < .seconds(30))  // prompt, not a wait for the next poll or a long sleep
        let changes = handler.entries.filter { $0.level == .info && "\($0.message)".contains("zddm.orders.rate") }
        #expect(changes.count == 3, "\(handler.entries)")
        // Stopped: later changes are not applied.
        try file.write(#"{"zddm": {"orders": {"rate": 0.2}}}"#)
        try await Task.sleep(for: .milliseconds(200))
        #expect(gate.rate == 1)
    }

    @Test("Invalid values are rejected with an error naming the key and the value; the last good value is kept")
    func invalidValues() async throws {
        let file = try ControlFile()
        defer { file.remove() }
        try file.write(#"{"zddm": {"orders": {"rate": 0.3, "killswitch": false, "stage": "shadow"}}}"#)
        let gate = try TrafficGate(rate: 0)
        let (logger, handler) = memoryLogger()
        let service = try await MigrationControlService.watchingJSONFile(
            FilePath(file.url.path),
            environment: false,
            pollInterval: .milliseconds(20),
            gates: ["orders": gate],
            logger: logger
        )
        try await withRunningService(service) {
            #expect(try await eventually { gate.rate == 0.3 && gate.stage == .shadow })
            let cases: [(json: String, key: String, value: String)] = [
                (#"{"zddm": {"orders": {"rate": "abc"}}}"#, "zddm.orders.rate", "abc"),
                (#"{"zddm": {"orders": {"rate": 1.5}}}"#, "zddm.orders.rate", "1.5"),
                (#"{"zddm": {"orders": {"rate": -0.1}}}"#, "zddm.orders.rate", "-0.1"),
                (#"{"zddm": {"orders": {"stage": "bogus"}}}"#, "zddm.orders.stage", "bogus"),
                (#"{"zddm": {"orders": {"killswitch": "maybe"}}}"#, "zddm.orders.killswitch", "maybe"),
                // A transition the gate refuses: complete needs rampdown first.
                (#"{"zddm": {"orders": {"stage": "complete"}}}"#, "zddm.orders.stage", "complete"),
            ]
            for (json, key, value) in cases {
                try file.write(json)
                #expect(try await eventually { !errors(handler, key: key, value: value).isEmpty }, "\(json)")
                #expect(errors(handler, key: key, value: value).count == 1)
                #expect(gate.rate == 0.3 && gate.stage == .shadow && !gate.isKillswitchOn)
            }
            // A good value again is applied; an unrelated change does not repeat the error.
            try file.write(#"{"zddm": {"orders": {"rate": 0.6, "stage": "complete"}}}"#)
            #expect(try await eventually { gate.rate == 0.6 })
            #expect(gate.stage == .shadow)
            #expect(errors(handler, key: "zddm.orders.stage", value: "complete").count == 1)
            // Numbers and Booleans given as strings are accepted.
            try file.write(#"{"zddm": {"orders": {"rate": "0.7", "killswitch": "true", "stage": "live"}}}"#)
            #expect(try await eventually { gate.rate == 0.7 && gate.isKillswitchOn && gate.stage == .live })
        }
        let stray = handler.entries.filter { $0.level == .error && !"\($0.message)".contains("zddm.orders.") }
        #expect(stray.isEmpty, "\(stray)")
    }

    @Test("Apply order: the killswitch on first, then the stage, then the rate; the killswitch off last")
    func applyOrder() async throws {
        // A gate that a clean verify pass at rate 1 has cleared for rampdown.
        let gate = try TrafficGate(rate: 1)
        let proxy = try MigrationProxy(
            name: "orders",
            old: InMemoryStore<Int64, String>(),
            new: InMemoryStore<Int64, String>(),
            gate: gate
        )
        _ = try await Verify(proxy: proxy).verify()
        #expect(gate.isRampdownPermitted)

        let file = try ControlFile()
        defer { file.remove() }
        try file.write(#"{"zddm": {"orders": {"stage": "rampdown", "rate": 1}}}"#)
        let (logger, handler) = memoryLogger()
        let service = try await MigrationControlService.watchingJSONFile(
            FilePath(file.url.path),
            environment: false,
            pollInterval: .milliseconds(20),
            gates: ["orders": gate],
            logger: logger
        )
        try await withRunningService(service) {
            #expect(try await eventually { gate.stage == .rampdown })
            // Rolling back with a lower rate in one change: the stage moves first (rampdown keeps the rate at 1).
            try file.write(#"{"zddm": {"orders": {"stage": "live", "rate": 0.25}}}"#)
            #expect(try await eventually { gate.stage == .live && gate.rate == 0.25 })
            #expect(handler.entries.allSatisfy { $0.level != .error }, "\(handler.entries)")
            // The killswitch on and rampdown in one change: the killswitch goes first, so rampdown is refused.
            try file.write(#"{"zddm": {"orders": {"stage": "rampdown", "rate": 1, "killswitch": true}}}"#)
            #expect(try await eventually { !errors(handler, key: "zddm.orders.stage", value: "rampdown").isEmpty })
            #expect(gate.isKillswitchOn && gate.stage == .live && gate.rate == 1)
            // The killswitch off and a stage in one change: the stage is set while New traffic is still off.
            try file.write(#"{"zddm": {"orders": {"stage": "shadow", "rate": 1, "killswitch": false}}}"#)
            #expect(try await eventually { !gate.isKillswitchOn && gate.stage == .shadow })
            let order = handler.entries.filter { $0.level == .info }.map { "\($0.message)" }
            let stage = try #require(order.lastIndex { $0.contains("zddm.orders.stage changed from live to shadow") })
            let killswitch = try #require(order.lastIndex { $0.contains("zddm.orders.killswitch changed") })
            #expect(stage < killswitch)
        }
    }

    @Test("A missing file is an error unless allowed; an empty name or no gate is refused")
    func setupErrors() async throws {
        let missing = FilePath("/nonexistent/zddm-control.json")
        let gate = try TrafficGate()
        await #expect(throws: (any Error).self) {
            _ = try await MigrationControlService.watchingJSONFile(missing, gates: ["orders": gate])
        }
        _ = try await MigrationControlService.watchingJSONFile(missing, allowMissing: true, gates: ["orders": gate])
        let reader = ConfigReader(provider: InMemoryProvider(values: [:]))
        #expect(throws: ZDDMError.self) { try MigrationControlService(config: reader, gates: [:]) }
        #expect(throws: ZDDMError.self) { try MigrationControlService(config: reader, migration: "", gate: gate) }
    }
}
