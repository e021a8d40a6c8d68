import PostgresNIO
public import ZDDM
public import ZDDMSQL

/// A ``ZDDM/FleetStateStore`` in a PostgreSQL table that every instance of the fleet reaches: one row per migration.
///
/// | column | type | holds |
/// | --- | --- | --- |
/// | `migration` | `text` primary key | the migration's name |
/// | `stage`, `rate`, `high_water`, `killswitch` | `text`, `float8`, `float8`, `boolean` | the operator's settings |
/// | `behind`, `caught_up` | `bigint` | the fleet's barrier |
/// | `lease_holder`, `lease_token`, `lease_expires` | `text`, `bigint`, `timestamptz`, nullable | the change applier's lease |
/// | `last_token` | `bigint` | the last fencing token given out |
/// | `verified_behind` | `bigint`, nullable | the latest clean verify pass (``ZDDM/FleetState/verifiedBehind``) |
/// | `control_epoch` | `bigint` | ``ZDDM/FleetState/controlEpoch`` |
///
/// Every method is atomic: ``update(_:_:)`` reads the row `FOR UPDATE`, applies ``ZDDM/FleetState/applying(_:)``
/// and writes it back in one transaction, and so does ``recordCleanVerify(_:startedAt:)`` with
/// ``ZDDM/FleetState/recordingCleanVerify(startedAt:)``; the others are one statement each. Lease expiry is measured by the
/// server's `clock_timestamp()`, so instances on different machines agree whatever their own clocks say.
public struct PostgresFleetStateStore: FleetStateStore, CustomStringConvertible {
    /// The database holding the table.
    public let database: PostgresDatabase
    /// The table.
    public let table: SQLIdentifier
    private let sql: Statements

    /// Describes the store; nothing runs until a method is called.
    /// - Parameters:
    ///   - database: The database every instance reaches (Old's, usually).
    ///   - table: The table's name; `zddm_fleet` by default.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for an invalid table name.
    public init(database: PostgresDatabase, table: String = "zddm_fleet") throws {
        self.database = database
        self.table = try SQLIdentifier(table, role: "fleet state table name")
        self.sql = Statements(self.table)
    }

    /// Creates the table if it does not exist, and adds the `verified_behind` column (empty: no verify pass
    /// recorded) and the `control_epoch` column (0) to a table an earlier version created.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func prepare() async throws {
        try await run {
            _ = try await database.rows(sql.create, PostgresBindings())
            _ = try await database.rows(sql.addVerifiedBehind, PostgresBindings())
            _ = try await database.rows(sql.addControlEpoch, PostgresBindings())
        }
    }

    public func state(of migration: String) async throws -> FleetState {
        try await run {
            guard let row = try await database.rows(sql.select, Self.name(migration)).first else { return FleetState() }
            return try Self.state(row)
        }
    }

    public func update(_ migration: String, _ change: FleetControlChange) async throws -> FleetState {
        // Checked before any SQL runs; `applying` checks it again.
        _ = try FleetState().applying(FleetControlChange(rate: change.rate))
        return try await changeState(migration) { try $0.applying(change) }
    }

    public func markBehind(_ migration: String) async throws -> UInt64 {
        try await run {
            guard let row = try await database.rows(sql.markBehind, Self.name(migration)).first else {
                throw ZDDMError(.storeFailed, operation: .fleetState, message: "marking behind returned nothing")
            }
            return UInt64(bitPattern: try row.decode(Int64.self))
        }
    }

    public func publishCaughtUp(_ migration: String, through behind: UInt64, token: UInt64) async throws -> Bool {
        var binds = Self.name(migration)
        binds.append(Int64(bitPattern: behind))
        binds.append(Int64(bitPattern: token))
        return try await run { !(try await database.rows(sql.publishCaughtUp, binds)).isEmpty }
    }

    public func recordCleanVerify(_ migration: String, startedAt behind: UInt64) async throws -> FleetState {
        try await changeState(migration) { try $0.recordingCleanVerify(startedAt: behind) }
    }

    /// Reads a migration's row `FOR UPDATE` (creating it first), applies `transform` and writes the state back, in one
    /// transaction.
    private func changeState(
        _ migration: String,
        _ transform: @escaping @Sendable (FleetState) throws -> FleetState
    ) async throws -> FleetState {
        let sql = sql
        let logger = database.logger
        return try await run {
            try await database.withTransaction { connection in
                let name = Self.name(migration)
                try await connection.query(PostgresQuery(unsafeSQL: sql.ensure, binds: name), logger: logger)
                let rows = try await connection.query(
                    PostgresQuery(unsafeSQL: sql.selectForUpdate, binds: name),
                    logger: logger
                ).collect()
                guard let row = rows.first else {
                    throw ZDDMError(.storeFailed, operation: .fleetState, message: "the migration's row vanished")
                }
                let next = try transform(try Self.state(row))
                var binds = Self.name(migration)
                binds.append(next.stage.rawValue)
                binds.append(next.rate)
                binds.append(next.highWaterRate)
                binds.append(next.killswitch)
                binds.append(Int64(bitPattern: next.behind))
                binds.append(Int64(bitPattern: next.caughtUp))
                binds.append(Int64(bitPattern: next.controlEpoch))
                binds.append(next.verifiedBehind.map { Int64(bitPattern: $0) })
                try await connection.query(PostgresQuery(unsafeSQL: sql.write, binds: binds), logger: logger)
                return next
            }
        }
    }

    public func acquireLease(_ migration: String, holder: String, duration: Duration) async throws -> UInt64? {
        guard duration > .zero else {
            throw ZDDMError(.invalidArgument, operation: .fleetState, message: "a lease's duration must be positive")
        }
        let (seconds, attoseconds) = duration.components
        var binds = Self.name(migration)
        binds.append(holder)
        binds.append(min(seconds, 1 << 40) * 1_000_000 + attoseconds / 1_000_000_000_000)
        return try await run {
            guard let row = try await database.rows(sql.acquire, binds).first else { return nil }
            return UInt64(bitPattern: try row.decode(Int64.self))
        }
    }

    public func releaseLease(_ migration: String, holder: String, token: UInt64) async throws {
        var binds = Self.name(migration)
        binds.append(holder)
        binds.append(Int64(bitPattern: token))
        try await run { _ = try await database.rows(sql.release, binds) }
    }

    public var description: String { "PostgresFleetStateStore(table \(table) on \(database.location))" }

    // MARK: Helpers

    private static func name(_ migration: String) -> PostgresBindings {
        var binds = PostgresBindings(capacity: 8)
        binds.append(migration)
        return binds
    }

    /// A state from `stage, rate, high_water, killswitch, behind, caught_up, verified_behind, control_epoch`.
    private static func state(_ row: PostgresRow) throws -> FleetState {
        let (stage, rate, highWater, killswitch, behind, caughtUp, verified, epoch) = try row.decode(
            (String, Double, Double, Bool, Int64, Int64, Int64?, Int64).self
        )
        guard let stage = MigrationStage(rawValue: stage) else {
            throw ZDDMError(
                .mappingFailed,
                operation: .fleetState,
                message: "the stage column holds no stage this version knows"
            )
        }
        return FleetState(
            stage: stage,
            rate: rate,
            highWaterRate: highWater,
            killswitch: killswitch,
            behind: UInt64(bitPattern: behind),
            caughtUp: UInt64(bitPattern: caughtUp),
            verifiedBehind: verified.map { UInt64(bitPattern: $0) },
            controlEpoch: UInt64(bitPattern: epoch)
        )
    }

    private func run<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            if let passed = PostgresErrors.passedThrough(error) { throw passed }
            var message = "fleet state table \(table) on \(database.server)"
            if PostgresErrors.sqlState(error) == "42703" {
                message += ": a column is missing (an earlier version created the table): prepare() adds it, as does "
                message += "zddm control set"
            } else if let hint = PostgresErrors.hint(for: error) {
                message += ": " + hint
            }
            throw ZDDMError(
                .storeFailed,
                operation: .fleetState,
                message: message,
                underlying: PostgresErrors.sanitized(error)
            )
        }
    }
}

extension PostgresFleetStateStore {
    /// The SQL of the store, built once from the validated, quoted table name.
    struct Statements: Sendable {
        let create: String
        let select: String
        let ensure: String
        let selectForUpdate: String
        let write: String
        let addVerifiedBehind: String
        let addControlEpoch: String
        let markBehind: String
        let publishCaughtUp: String
        let acquire: String
        let release: String

        init(_ table: SQLIdentifier) {
            let f = table.quoted
            let columns = "stage, rate, high_water, killswitch, behind, caught_up, verified_behind, control_epoch"
            create = """
                CREATE TABLE IF NOT EXISTS \(f) (migration text PRIMARY KEY, \
                stage text NOT NULL DEFAULT 'off', rate float8 NOT NULL DEFAULT 0, \
                high_water float8 NOT NULL DEFAULT 0, killswitch boolean NOT NULL DEFAULT false, \
                behind bigint NOT NULL DEFAULT 0, caught_up bigint NOT NULL DEFAULT 0, \
                lease_holder text, lease_token bigint, lease_expires timestamptz, \
                last_token bigint NOT NULL DEFAULT 0, verified_behind bigint, control_epoch bigint NOT NULL DEFAULT 0)
                """
            addVerifiedBehind = "ALTER TABLE \(f) ADD COLUMN IF NOT EXISTS verified_behind bigint"
            addControlEpoch = "ALTER TABLE \(f) ADD COLUMN IF NOT EXISTS control_epoch bigint NOT NULL DEFAULT 0"
            select = "SELECT \(columns) FROM \(f) WHERE migration = $1"
            ensure = "INSERT INTO \(f) (migration) VALUES ($1) ON CONFLICT (migration) DO NOTHING"
            selectForUpdate = "SELECT \(columns) FROM \(f) WHERE migration = $1 FOR UPDATE"
            write = """
                UPDATE \(f) SET stage = $2, rate = $3, high_water = $4, killswitch = $5, behind = $6, \
                caught_up = $7, control_epoch = $8, verified_behind = $9 WHERE migration = $1
                """
            markBehind = """
                INSERT INTO \(f) AS s (migration, behind) VALUES ($1, 1) \
                ON CONFLICT (migration) DO UPDATE SET behind = s.behind + 1 RETURNING behind
                """
            publishCaughtUp = """
                UPDATE \(f) SET caught_up = GREATEST(caught_up, $2) \
                WHERE migration = $1 AND lease_holder IS NOT NULL AND lease_token = $3 RETURNING true
                """
            let held = "s.lease_holder = $2 AND s.lease_expires > clock_timestamp()"
            acquire = """
                INSERT INTO \(f) AS s (migration, lease_holder, lease_token, lease_expires, last_token) \
                VALUES ($1, $2, 1, clock_timestamp() + $3::int8 * interval '1 microsecond', 1) \
                ON CONFLICT (migration) DO UPDATE SET \
                lease_token = CASE WHEN \(held) THEN s.lease_token ELSE s.last_token + 1 END, \
                last_token = CASE WHEN \(held) THEN s.last_token ELSE s.last_token + 1 END, \
                lease_holder = $2, lease_expires = clock_timestamp() + $3::int8 * interval '1 microsecond' \
                WHERE s.lease_holder IS NULL OR s.lease_holder = $2 OR s.lease_expires <= clock_timestamp() \
                RETURNING lease_token
                """
            release = """
                UPDATE \(f) SET lease_holder = NULL, lease_token = NULL, lease_expires = NULL \
                WHERE migration = $1 AND lease_holder = $2 AND lease_token = $3
                """
        }
    }
}
