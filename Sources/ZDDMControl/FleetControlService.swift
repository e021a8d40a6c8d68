public import Configuration
public import Logging
public import ServiceLifecycle
import Synchronization
public import ZDDM

/// Publishes a migration's stage, rate and killswitch from a configuration (environment, a watched file, any
/// swift-configuration provider) into the fleet's shared state, which every instance's ``ZDDM/FleetMember``
/// follows.
///
/// It reads the same keys as ``MigrationControlService`` (`zddm.<migration>.rate`, `.killswitch`, `.stage`) and
/// publishes when what the configuration says changes (with ``ZDDM/FleetStateStore/update(_:_:)``, so the shared
/// state's rules apply: the high-water rate never goes down, and stopping New's writes moves the barrier on). An
/// invalid value is logged and left out, like ``MigrationControlService`` does; the other values are still
/// published. Run one per fleet (any instance, or a small operator process): several would publish the same values.
///
/// Changes made meanwhile with `zddm control set` stand until the configuration changes again: keep one source of
/// truth per migration.
public final class FleetControlService: Service, Sendable {
    private let config: ConfigReader
    private let keys: MigrationControlKeys
    private let store: any FleetStateStore
    private let providerServices: [any Service]
    private let logger: Logger
    private let published = Mutex<FleetControlChange?>(nil)

    /// Creates the service.
    /// - Parameters:
    ///   - config: Where the settings are read; watched while the service runs.
    ///   - migration: The migration's name.
    ///   - store: The fleet's shared state.
    ///   - providerServices: Providers that must run for their values to change (a `ReloadingFileProvider`).
    ///   - logger: Where publications (`info`), rejected values and failures (`error`) are logged.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for an empty name.
    public init(
        config: ConfigReader,
        migration: String,
        store: some FleetStateStore,
        providerServices: [any Service] = [],
        logger: Logger = Logger(label: "zddm", factory: { _ in SwiftLogNoOpLogHandler() })
    ) throws {
        guard !migration.isEmpty else {
            throw ZDDMError(.invalidArgument, message: "the migration name must not be empty")
        }
        self.config = config
        self.keys = MigrationControlKeys(migration: migration)
        self.store = store
        self.providerServices = providerServices
        self.logger = logger
    }

    /// Publishes what the configuration says now, if it differs from what this service last published.
    /// - Returns: The shared state after the publication, or `nil` when there was nothing new to publish.
    /// - Throws: The shared state's error (nothing is recorded as published then, so the next call tries again).
    @discardableResult
    public func publishCurrentConfiguration() async throws -> FleetState? {
        try await publish(config.snapshot())
    }

    /// Publishes the configuration, then every change to it, until graceful shutdown or cancellation. A failed
    /// publication is logged and retried with the next change.
    public func run() async throws {
        let config = self.config
        let providerServices = self.providerServices
        try await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for service in providerServices {
                    group.addTask { try await service.run() }
                }
                group.addTask {
                    try await config.watchSnapshot { updates in
                        for await snapshot in updates {
                            do {
                                _ = try await self.publish(snapshot)
                            } catch {
                                self.logger.error(
                                    "could not publish the migration's controls to the fleet's shared state",
                                    metadata: [
                                        "zddm.migration": .string(self.keys.migration),
                                        "zddm.error_type": .string("\(type(of: error))"),
                                    ]
                                )
                            }
                        }
                    }
                    try? await gracefulShutdown()
                }
                _ = try await group.next()
                group.cancelAll()
                while try await group.next() != nil {}
            }
        }
    }

    private func publish(_ snapshot: ConfigSnapshotReader) async throws -> FleetState? {
        let readings = ControlReadings(snapshot: snapshot, keys: keys)
        var change = FleetControlChange()
        if case .value(let rate) = readings.rate { change.rate = rate }
        if case .value(let killswitch) = readings.killswitch { change.killswitch = killswitch }
        if case .value(let stage) = readings.stage { change.stage = stage }
        for (setting, found, reason) in readings.invalid {
            logger.error(
                "\(keys.dotted(setting)): invalid value '\(found)' (\(reason)); not published",
                metadata: ["zddm.migration": .string(keys.migration), "zddm.config.key": .string(keys.dotted(setting))]
            )
        }
        guard change != FleetControlChange(), published.withLock({ $0 }) != change else { return nil }
        let state = try await store.update(keys.migration, change)
        published.withLock { $0 = change }
        logger.info(
            "published the migration's controls to the fleet",
            metadata: [
                "zddm.migration": .string(keys.migration), "zddm.stage": .string(state.stage.rawValue),
                "zddm.rate": .string("\(state.rate)"), "zddm.killswitch": .string("\(state.killswitch)"),
            ]
        )
        return state
    }
}

extension ControlReadings {
    /// The settings whose value was invalid, with what was found and why.
    var invalid: [(MigrationControlKeys.Setting, String, String)] {
        var found: [(MigrationControlKeys.Setting, String, String)] = []
        if case .invalid(let text, let reason) = rate { found.append((.rate, text, reason)) }
        if case .invalid(let text, let reason) = killswitch { found.append((.killswitch, text, reason)) }
        if case .invalid(let text, let reason) = stage { found.append((.stage, text, reason)) }
        return found
    }
}
