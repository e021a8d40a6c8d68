public import Logging
import Synchronization
public import ZDDM
public import ZDDMSQL
public import ZDDMSQLite

/// The service's migration of users from the Old table `users_v1` to the New table `users_v2`: one shared proxy,
/// its gate, and the operator's actions (rate, killswitch, backfill, verify).
///
/// The gate's rate, high-water rate and killswitch are saved in the table `zddm_control` after every change and
/// restored at start, so a restart neither resets an operator's decision nor forgets which keys New may hold.
/// Backfill checkpoints are kept in `zddm_checkpoints`, beside New.
public final class UserMigration: Sendable {
    /// The stores' type: users by id, as JSON, in an SQLite table.
    public typealias Store = SQLiteStore<Int64, User>

    /// The proxy every request goes through.
    public let proxy: MigrationProxy<Store, Store>
    /// The database holding both tables.
    public let database: SQLiteDatabase

    private let control: SQLiteStore<String, MigrationControlState>
    private let checkpoints: SQLiteStore<String, BackfillCheckpoint<Int64>>
    private let saves = SerialSaves()
    private let backfillRunning = Mutex(false)
    private let logger: Logger

    /// The gate shared by the proxy, the backfill and the verify pass.
    public var gate: TrafficGate { proxy.gate }

    /// Opens the database, creates the tables that are missing and restores the saved gate state.
    /// - Parameters:
    ///   - configuration: Where the database is, the migration's name and an optional starting rate.
    ///   - logger: Passed to the proxy, which logs New's failures at `debug` and lifecycle events at `info`.
    /// - Returns: The migration, ready to serve.
    /// - Throws: ``ZDDMError`` when the database cannot be opened or prepared, or the starting rate is invalid.
    public static func open(configuration: UserServiceConfiguration, logger: Logger) async throws -> UserMigration {
        let database = try SQLiteDatabase.open(url: "sqlite:\(configuration.databasePath)")
        let old = try Store(database: database, table: "users_v1", codec: JSONValueCodec<User>())
        let new = try Store(database: database, table: "users_v2", codec: JSONValueCodec<User>())
        let control = try SQLiteStore<String, MigrationControlState>(
            database: database,
            table: "zddm_control",
            codec: JSONValueCodec<MigrationControlState>()
        )
        let checkpoints = try SQLiteStore<String, BackfillCheckpoint<Int64>>(
            database: database,
            table: "zddm_checkpoints",
            codec: JSONValueCodec<BackfillCheckpoint<Int64>>()
        )
        for store in [old, new] { try await store.prepare() }
        try await control.prepare()
        try await checkpoints.prepare()

        let saved = try await control.read(configuration.migrationName)?.value
        let gate = try TrafficGate(
            rate: configuration.initialRate ?? saved?.rate ?? 0,
            killswitch: saved?.killswitch ?? false
        )
        if let saved {
            try gate.raiseHighWaterRate(to: saved.highWaterRate)
        }
        let proxy = try MigrationProxy(
            name: configuration.migrationName,
            old: old,
            new: new,
            gate: gate,
            logger: logger
        )
        let migration = UserMigration(
            proxy: proxy,
            database: database,
            control: control,
            checkpoints: checkpoints,
            logger: logger
        )
        _ = await migration.save()
        return migration
    }

    private init(
        proxy: MigrationProxy<Store, Store>,
        database: SQLiteDatabase,
        control: SQLiteStore<String, MigrationControlState>,
        checkpoints: SQLiteStore<String, BackfillCheckpoint<Int64>>,
        logger: Logger
    ) {
        self.proxy = proxy
        self.database = database
        self.control = control
        self.checkpoints = checkpoints
        self.logger = logger
    }

    // MARK: Status and control

    /// The gate and the proxy's safety memory now.
    public func status() -> MigrationStatus {
        MigrationStatus(
            migration: proxy.name,
            rate: gate.rate,
            highWaterRate: gate.highWaterRate,
            killswitch: gate.isKillswitchOn,
            unsafeKeys: proxy.unsafeKeyCount,
            degraded: proxy.isDegraded
        )
    }

    /// Changes the rate at once, then saves it for the next run.
    /// - Parameter rate: The new rate, in `[0, 1]`.
    /// - Returns: The status after the change.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidRate`` when `rate` is outside `[0, 1]` or NaN; the
    ///   rate is then unchanged.
    public func setRate(_ rate: Double) async throws -> MigrationStatus {
        try gate.setRate(rate)
        return await saves.run { await self.save() }
    }

    /// Turns the killswitch on or off at once, then saves it for the next run.
    /// - Parameter on: `true` to stop all New traffic.
    /// - Returns: The status after the change.
    public func setKillswitch(_ on: Bool) async -> MigrationStatus {
        gate.setKillswitch(on)
        return await saves.run { await self.save() }
    }

    /// Saves the gate's state as it is when the save runs; a failure is logged and reported in the status, never
    /// thrown: a change is in force in this process at once, whether or not it could be saved.
    private func save() async -> MigrationStatus {
        var status = status()
        let state = MigrationControlState(
            rate: status.rate,
            highWaterRate: status.highWaterRate,
            killswitch: status.killswitch
        )
        do {
            try await control.write(proxy.name, state)
            status.saved = true
        } catch {
            logger.error("could not save the migration's gate state", metadata: ["error": "\(error)"])
            status.saved = false
        }
        return status
    }

    // MARK: Backfill and verify

    /// Runs a backfill pass: resumes an unfinished pass from its checkpoint, or starts a new one when the last one
    /// finished. Turning the killswitch on stops it after the batches in hand; the checkpoint is kept.
    /// - Parameter options: Batch size, throttling and retries.
    /// - Returns: The pass's progress.
    /// - Throws: ``OperatorConflict`` when a pass is already running or the killswitch is on; ``ZDDMError`` when a
    ///   store keeps failing.
    func backfill(options: BackfillOptions = BackfillOptions()) async throws -> BackfillResult {
        guard !gate.isKillswitchOn else {
            throw OperatorConflict(description: "the killswitch is on: the backfill would not touch New")
        }
        let claimed = backfillRunning.withLock { running in
            if running { return false }
            running = true
            return true
        }
        guard claimed else { throw OperatorConflict(description: "a backfill pass is already running") }
        defer { backfillRunning.withLock { $0 = false } }

        if let last = try await checkpoints.read(proxy.name)?.value, last.finished {
            try await checkpoints.delete(proxy.name)
        }
        let backfill = try Backfill(
            proxy: proxy,
            checkpoints: KeyValueCheckpointStore<_, Int64>(checkpoints),
            options: options
        )
        let gate = self.gate
        let progress = try await withThrowingTaskGroup(of: BackfillProgress?.self) { group in
            group.addTask { try await backfill.runPass() }
            group.addTask {
                // The killswitch stops the pass: cancelled, it saves its checkpoint and returns.
                while !Task.isCancelled, !gate.isKillswitchOn {
                    try? await Task.sleep(for: .milliseconds(50))
                }
                return nil
            }
            var progress: BackfillProgress?
            for try await result in group {
                if let result { progress = result }
                group.cancelAll()
            }
            return progress
        }
        guard let progress else { throw CancellationError() }
        return BackfillResult(progress)
    }

    /// Compares Old and New user by user.
    /// - Parameter repair: Whether to repair mismatches from Old and invalidate the keys the proxy keeps out of New.
    /// - Returns: The counts.
    /// - Throws: ``ZDDMError`` when a store fails.
    func verify(repair: Bool) async throws -> VerifyResult {
        var options = VerifyOptions()
        options.repair = repair
        let report = try await Verify(proxy: proxy, options: options).verify()
        let unsafeRepaired = repair ? await proxy.repairUnsafeKeys() : 0
        return VerifyResult(report, unsafeKeysRepaired: unsafeRepaired)
    }
}

/// Runs saves one after another. Each save reads the gate when it runs, so the one that runs last, queued after
/// the last change, saves the state in force.
private actor SerialSaves {
    private var tail: Task<Void, Never>?

    func run<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
        let previous = tail
        let task = Task {
            await previous?.value
            return await body()
        }
        tail = Task { _ = await task.value }
        return await task.value
    }
}
