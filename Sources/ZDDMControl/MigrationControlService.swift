public import Configuration
public import Logging
public import ServiceLifecycle
import Synchronization
public import SystemPackage
public import ZDDM

/// Applies each migration's rate, killswitch and stage from a configuration source to its ``ZDDM/TrafficGate``,
/// and keeps applying them as the configuration changes, without a restart.
///
/// The keys are described by ``MigrationControlKeys`` (for a migration `orders`: `zddm.orders.rate`,
/// `zddm.orders.killswitch`, `zddm.orders.stage`; in the environment `ZDDM_ORDERS_RATE` and so on). A setting that
/// no provider has is left alone. A configured value is applied when it differs from the last one applied for that
/// setting, so a change made in the process by other means stays until the configured value changes.
///
/// When several settings change at once, the killswitch is turned on first, then the stage is set, then the rate,
/// and the killswitch is turned off last: turning traffic off never waits for the rest, and turning it back on
/// happens only once the rest is in place.
///
/// An invalid value (a rate that is not a number or is outside `[0, 1]`, a killswitch that is not a Boolean, an
/// unknown stage) and a value the gate refuses (a stage transition it does not allow, a rate below 1 in `rampdown`)
/// are logged at `error` level, naming the key and the value, once per offending value; the gate keeps its last
/// good value. A refused value is tried again with each later configuration change.
///
/// Run it in a `ServiceGroup`; graceful shutdown stops the watching (and the providers it runs, see
/// ``init(config:gates:providerServices:logger:)``).
public final class MigrationControlService: Service, Sendable {
    private let config: ConfigReader
    private let gates: [(keys: MigrationControlKeys, gate: TrafficGate)]
    private let providerServices: [any Service]
    private let logger: Logger
    private let states: Mutex<[String: ControlState]>

    /// Creates a service controlling several migrations.
    /// - Parameters:
    ///   - config: Where the settings are read; watched while the service runs.
    ///   - gates: Each migration's gate, by the migration's name.
    ///   - providerServices: Providers that must run for their values to change, such as a
    ///     `ReloadingFileProvider` used by `config`; the service runs them while it runs. Leave empty when they run
    ///     elsewhere in the service group.
    ///   - logger: Where changes (`info`) and rejected values (`error`) are logged; by default nowhere.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` when there is no gate or a
    ///   migration name is empty.
    public init(
        config: ConfigReader,
        gates: [String: TrafficGate],
        providerServices: [any Service] = [],
        logger: Logger = Logger(label: "zddm", factory: { _ in SwiftLogNoOpLogHandler() })
    ) throws {
        guard !gates.isEmpty else {
            throw ZDDMError(.invalidArgument, message: "give at least one migration to control")
        }
        guard !gates.keys.contains(where: \.isEmpty) else {
            throw ZDDMError(.invalidArgument, message: "the migration name must not be empty")
        }
        self.config = config
        self.gates = gates.sorted { $0.key < $1.key }.map { (MigrationControlKeys(migration: $0.key), $0.value) }
        self.providerServices = providerServices
        self.logger = logger
        self.states = Mutex([:])
    }

    /// Creates a service controlling one migration.
    /// - Parameters:
    ///   - config: Where the settings are read; watched while the service runs.
    ///   - migration: The migration's name, as given to its proxy.
    ///   - gate: The migration's gate.
    ///   - providerServices: Providers the service runs while it runs (see
    ///     ``init(config:gates:providerServices:logger:)``).
    ///   - logger: Where changes and rejected values are logged; by default nowhere.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` when the name is empty.
    public convenience init(
        config: ConfigReader,
        migration: String,
        gate: TrafficGate,
        providerServices: [any Service] = [],
        logger: Logger = Logger(label: "zddm", factory: { _ in SwiftLogNoOpLogHandler() })
    ) throws {
        try self.init(config: config, gates: [migration: gate], providerServices: providerServices, logger: logger)
    }

    /// Creates a service reading the environment and a JSON file that it watches for changes.
    ///
    /// Environment variables take precedence over the file, so a value set in a deployment's environment cannot be
    /// changed from the file; leave them unset to control the fleet from the file.
    /// - Parameters:
    ///   - path: The JSON file, for example `{"zddm": {"orders": {"rate": 0.1, "killswitch": false}}}`.
    ///   - environment: Whether environment variables are read too (first); `true` by default.
    ///   - allowMissing: Whether a missing file counts as empty (and is picked up once it appears) instead of an
    ///     error; `false` by default.
    ///   - pollInterval: How often the file is checked for changes; 5 seconds by default. `SIGHUP` also triggers a
    ///     check.
    ///   - gates: Each migration's gate, by the migration's name.
    ///   - logger: Where changes and rejected values are logged; by default nowhere.
    /// - Returns: The service; it runs the file's watcher itself.
    /// - Throws: When the file is missing (unless `allowMissing`) or is not a JSON object, or as
    ///   ``init(config:gates:providerServices:logger:)`` does.
    public static func watchingJSONFile(
        _ path: FilePath,
        environment: Bool = true,
        allowMissing: Bool = false,
        pollInterval: Duration = .seconds(5),
        gates: [String: TrafficGate],
        logger: Logger = Logger(label: "zddm", factory: { _ in SwiftLogNoOpLogHandler() })
    ) async throws -> MigrationControlService {
        let file = try await ReloadingFileProvider<JSONSnapshot>(
            filePath: path,
            allowMissing: allowMissing,
            pollInterval: pollInterval,
            logger: logger
        )
        var providers: [any ConfigProvider] = []
        if environment { providers.append(EnvironmentVariablesProvider()) }
        providers.append(file)
        return try MigrationControlService(
            config: ConfigReader(providers: providers),
            gates: gates,
            providerServices: [file],
            logger: logger
        )
    }

    /// Applies the configuration as it is now, once; useful before traffic starts. ``run()`` also does it first.
    public func applyCurrentConfiguration() {
        apply(config.snapshot())
    }

    /// Applies the configuration, then every change to it, until graceful shutdown or cancellation.
    /// - Throws: When a provider service it runs fails.
    public func run() async throws {
        logger.info(
            "applying migration controls from configuration",
            metadata: ["zddm.migrations": .array(gates.map { .string($0.keys.migration) })]
        )
        let config = self.config
        let providerServices = self.providerServices
        try await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for service in providerServices {
                    group.addTask { try await service.run() }
                }
                group.addTask {
                    try await config.watchSnapshot { updates in
                        for await snapshot in updates { self.apply(snapshot) }
                    }
                    // Static providers only: nothing more will change, but a service runs until it is stopped.
                    try? await gracefulShutdown()
                }
                // The watch ends on cancellation; a provider ends on graceful shutdown or failure. Either way, stop
                // the rest.
                _ = try await group.next()
                group.cancelAll()
                while try await group.next() != nil {}
            }
        }
        logger.info("stopped applying migration controls")
    }

    private func apply(_ snapshot: ConfigSnapshotReader) {
        for (keys, gate) in gates {
            let readings = ControlReadings(snapshot: snapshot, keys: keys)
            let events = states.withLock { states in
                states[keys.migration, default: ControlState()].apply(readings, to: gate)
            }
            for event in events { log(event, keys: keys) }
        }
    }

    private func log(_ event: ControlEvent, keys: MigrationControlKeys) {
        switch event {
        case .applied(let setting, let from, let to):
            logger.info(
                "\(keys.dotted(setting)) changed from \(from) to \(to)",
                metadata: metadata(keys, setting, to)
            )
        case .rejected(let setting, let found, let reason):
            logger.error(
                "\(keys.dotted(setting)): invalid value '\(found)' (\(reason)); keeping the last good value",
                metadata: metadata(keys, setting, found)
            )
        case .refused(let setting, let value, let reason):
            logger.error(
                "\(keys.dotted(setting)): value '\(value)' refused (\(reason)); keeping the last good value",
                metadata: metadata(keys, setting, value)
            )
        }
    }

    private func metadata(
        _ keys: MigrationControlKeys,
        _ setting: MigrationControlKeys.Setting,
        _ value: String
    ) -> Logger.Metadata {
        [
            "zddm.migration": .string(keys.migration),
            "zddm.config.key": .string(keys.dotted(setting)),
            "zddm.config.value": .string(value),
        ]
    }
}
