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
/// state's rules apply: the high-water rate never goes down, stopping New's writes moves the barrier on, and stage
/// transitions are checked). An invalid value is logged and left out, like ``MigrationControlService`` does; the
/// other values are still published. Run one per fleet (any instance, or a small operator process): several would
/// publish the same values.
///
/// A change the shared state refuses (``ZDDM/ZDDMError/Code/refusedTransition``: `rampdown` before a clean verify
/// pass, say) is logged once at `error` level, naming the stage and what is missing. When the refusal is the
/// stage's, the other settings are published without it. The refused part is then tried again every
/// `retryInterval` while the configuration still asks for it (and with each configuration change), so a configured
/// `rampdown` takes effect once a clean verify pass is recorded, without touching the configuration again.
///
/// Changes made meanwhile with `zddm control set` stand until the configuration changes again (or, for a refused
/// part being retried, until it is published): keep one source of truth per migration.
public final class FleetControlService: Service, Sendable {
    private let config: ConfigReader
    private let keys: MigrationControlKeys
    private let store: any FleetStateStore
    private let providerServices: [any Service]
    private let logger: Logger
    private let retryInterval: Duration
    private let progress = Mutex(Progress())

    /// What has been published, and what is waiting.
    private struct Progress {
        /// The last change the configuration asked for and this service has handled (published, or refused).
        var published: FleetControlChange?
        /// The part of `published` the shared state refused, retried until it is published.
        var refused: FleetControlChange?
    }

    /// Creates the service.
    /// - Parameters:
    ///   - config: Where the settings are read; watched while the service runs.
    ///   - migration: The migration's name.
    ///   - store: The fleet's shared state.
    ///   - providerServices: Providers that must run for their values to change (a `ReloadingFileProvider`).
    ///   - retryInterval: How often a change the shared state refused is tried again while the service runs; 5
    ///     seconds by default.
    ///   - logger: Where publications (`info`), rejected values, refusals and failures (`error`) are logged.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for an empty name or a retry
    ///   interval that is not positive.
    public init(
        config: ConfigReader,
        migration: String,
        store: some FleetStateStore,
        providerServices: [any Service] = [],
        retryInterval: Duration = .seconds(5),
        logger: Logger = Logger(label: "zddm", factory: { _ in SwiftLogNoOpLogHandler() })
    ) throws {
        guard !migration.isEmpty else {
            throw ZDDMError(.invalidArgument, message: "the migration name must not be empty")
        }
        guard retryInterval > .zero else {
            throw ZDDMError(.invalidArgument, message: "the retry interval must be positive, got \(retryInterval)")
        }
        self.config = config
        self.keys = MigrationControlKeys(migration: migration)
        self.store = store
        self.providerServices = providerServices
        self.retryInterval = retryInterval
        self.logger = logger
    }

    /// The part of the configured change the shared state refused and that is waiting to be tried again, if any.
    public var refusedChange: FleetControlChange? { progress.withLock { $0.refused } }

    /// Publishes what the configuration says now, if it differs from what this service last published.
    /// - Returns: The shared state after the publication, or `nil` when there was nothing new to publish (or the
    ///   shared state refused all of it: see ``refusedChange``).
    /// - Throws: The shared state's error, other than a refusal (nothing is recorded as published then, so the next
    ///   call tries again).
    @discardableResult
    public func publishCurrentConfiguration() async throws -> FleetState? {
        try await publish(config.snapshot())
    }

    /// Tries the refused part of the configured change (``refusedChange``) once more; ``run()`` does this every
    /// `retryInterval`. A refusal again is not logged again.
    /// - Returns: The shared state after the publication, or `nil` when nothing was waiting or it is still refused.
    /// - Throws: The shared state's error, other than a refusal.
    @discardableResult
    public func retryRefusedChange() async throws -> FleetState? {
        guard let refused = refusedChange else { return nil }
        do {
            let state = try await store.update(keys.migration, refused)
            progress.withLock { progress in
                if progress.refused == refused { progress.refused = nil }
            }
            logPublished(state, note: "a change refused before is now permitted")
            return state
        } catch let error as ZDDMError where error.code == .refusedTransition {
            return nil
        }
    }

    /// Publishes the configuration, then every change to it, until graceful shutdown or cancellation; a change
    /// the shared state refused is tried again every `retryInterval`. A failed publication is logged and retried
    /// with the next change (or retry).
    public func run() async throws {
        let config = self.config
        let providerServices = self.providerServices
        let retryInterval = self.retryInterval
        let (work, queue) = AsyncStream.makeStream(of: Work.self)
        try await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for service in providerServices {
                    group.addTask { try await service.run() }
                }
                group.addTask {
                    try await config.watchSnapshot { updates in
                        for await snapshot in updates { queue.yield(.snapshot(snapshot)) }
                    }
                    try? await gracefulShutdown()
                }
                group.addTask {
                    while !Task.isCancelled {
                        do { try await Task.sleep(for: retryInterval) } catch { return }
                        queue.yield(.retry)
                    }
                }
                // One publication at a time, in order: a retry never overtakes a newer configuration.
                group.addTask {
                    for await item in work {
                        do {
                            switch item {
                            case .snapshot(let snapshot): _ = try await self.publish(snapshot)
                            case .retry: _ = try await self.retryRefusedChange()
                            }
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
                _ = try await group.next()
                group.cancelAll()
                queue.finish()
                while try await group.next() != nil {}
            }
        }
    }

    /// What the publishing task does next.
    private enum Work: Sendable {
        case snapshot(ConfigSnapshotReader)
        case retry
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
        guard change != FleetControlChange(), progress.withLock({ $0.published }) != change else { return nil }
        do {
            let state = try await store.update(keys.migration, change)
            progress.withLock { $0 = Progress(published: change, refused: nil) }
            logPublished(state, note: nil)
            return state
        } catch let error as ZDDMError where error.code == .refusedTransition {
            return try await publishRefused(change, error)
        }
    }

    /// A configured change the shared state refused: publishes what it can without the stage, logs the refusal
    /// once and keeps the refused part for retries.
    private func publishRefused(_ change: FleetControlChange, _ refusal: ZDDMError) async throws -> FleetState? {
        var rest = change
        rest.stage = nil
        var refused = change
        var state: FleetState?
        if change.stage != nil, rest != FleetControlChange() {
            do {
                state = try await store.update(keys.migration, rest)
                refused = FleetControlChange(stage: change.stage)
            } catch let error as ZDDMError where error.code == .refusedTransition {
                state = nil
            }
        }
        progress.withLock { $0 = Progress(published: change, refused: refused) }
        var metadata: Logger.Metadata = ["zddm.migration": .string(keys.migration)]
        if let stage = refused.stage {
            metadata["zddm.config.key"] = .string(keys.dotted(.stage))
            metadata["zddm.config.value"] = .string(stage.rawValue)
        }
        let outcome = state == nil ? "nothing published" : "published the rest without the stage"
        logger.error(
            """
            the fleet's shared state refused the configured controls (\(refusal.message)); \(outcome); trying again \
            every \(retryInterval) while the configuration asks for it
            """,
            metadata: metadata
        )
        if let state { logPublished(state, note: nil) }
        return state
    }

    private func logPublished(_ state: FleetState, note: String?) {
        logger.info(
            "published the migration's controls to the fleet\(note.map { ": " + $0 } ?? "")",
            metadata: [
                "zddm.migration": .string(keys.migration), "zddm.stage": .string(state.stage.rawValue),
                "zddm.rate": .string("\(state.rate)"), "zddm.killswitch": .string("\(state.killswitch)"),
            ]
        )
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
