import GRDB
public import ZDDM
public import ZDDMSQL

/// A ``ZDDM/FleetStateStore`` in an SQLite table: one row per migration, shared by every process that opens the
/// database file.
///
/// The table (`zddm_fleet` by default) has the columns `migration` (primary key), `stage`, `rate`, `high_water`,
/// `killswitch`, `behind`, `caught_up`, `lease_holder`, `lease_token`, `lease_expires`, `last_token`,
/// `verified_behind` (nullable: the latest clean verify pass) and `control_epoch`; ``prepare()`` creates it, and adds
/// `verified_behind` and `control_epoch` to a table an earlier version created. Every method is one SQLite write transaction (`BEGIN IMMEDIATE`), so concurrent
/// callers, in this process or others, see each other's changes whole. Lease expiry is measured by SQLite's clock
/// (`julianday('now')`, the machine's clock read by SQLite), so processes on one machine sharing the file agree.
/// Migration names and lease holders are bound parameters: any string is accepted.
public struct SQLiteFleetStateStore: FleetStateStore, CustomStringConvertible {
    /// The database holding the table.
    public let database: SQLiteDatabase
    /// The table.
    public let table: SQLIdentifier
    private let sql: Statements

    /// Creates a store over a table, validating its name before any SQL runs.
    /// - Parameters:
    ///   - database: The database.
    ///   - table: The table's name; `zddm_fleet` by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an invalid table name.
    public init(database: SQLiteDatabase, table: String = "zddm_fleet") throws {
        self.database = database
        self.table = try SQLIdentifier(table, role: "fleet state table name")
        self.sql = Statements(self.table)
    }

    /// Creates the table if it does not exist, adds the `verified_behind` (empty: no verify pass recorded) and
    /// `control_epoch` (0) columns to a table an earlier version created, then checks that it has every column.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when an existing table lacks another
    ///   column, or ``ZDDMError/Code/storeFailed`` when SQLite fails.
    public func prepare() async throws {
        try await run(.prepare) { [sql, table] db in
            try db.execute(sql: sql.create)
            var columns = try SQLiteChangeCapture.tableColumns(db, table)
            for (column, statement) in sql.addedColumns where columns[column] == nil {
                try db.execute(sql: statement)
                columns = try SQLiteChangeCapture.tableColumns(db, table)
            }
            for column in Statements.columns where columns[column] == nil {
                throw ZDDMError(
                    .invalidArgument,
                    operation: .prepare,
                    message: "table \(table) has no column \"\(column)\""
                )
            }
        }
    }

    public func state(of migration: String) async throws -> FleetState {
        try await run(.fleetState, writing: false) { [sql] db in try sql.row(db, migration).state }
    }

    public func update(_ migration: String, _ change: FleetControlChange) async throws -> FleetState {
        try await run(.fleetState) { [sql] db in
            var row = try sql.row(db, migration)
            row.state = try row.state.applying(change)
            try sql.save(db, migration, row)
            return row.state
        }
    }

    public func markBehind(_ migration: String) async throws -> UInt64 {
        try await run(.fleetState) { [sql] db in
            var row = try sql.row(db, migration)
            row.state.behind &+= 1
            try sql.save(db, migration, row)
            return row.state.behind
        }
    }

    public func publishCaughtUp(_ migration: String, through behind: UInt64, token: UInt64) async throws -> Bool {
        try await run(.fleetState) { [sql] db in
            var row = try sql.row(db, migration)
            guard row.leaseToken == token, row.leaseHolder != nil else { return false }
            row.state.caughtUp = max(row.state.caughtUp, behind)
            try sql.save(db, migration, row)
            return true
        }
    }

    public func recordCleanVerify(_ migration: String, startedAt behind: UInt64) async throws -> FleetState {
        try await run(.fleetState) { [sql] db in
            var row = try sql.row(db, migration)
            row.state = try row.state.recordingCleanVerify(startedAt: behind)
            try sql.save(db, migration, row)
            return row.state
        }
    }

    public func acquireLease(_ migration: String, holder: String, duration: Duration) async throws -> UInt64? {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return try await run(.fleetState) { [sql] db in
            let now = try Double.fetchOne(db, sql: "SELECT \(SQLiteCaptureSQL.now)") ?? 0
            var row = try sql.row(db, migration)
            let current = row.leaseHolder.flatMap { holder in
                row.leaseExpires.flatMap { now < $0 ? (holder, row.leaseToken ?? 0) : nil }
            }
            if let current, current.0 != holder { return nil }
            let token: UInt64
            if let current {
                token = current.1
            } else {
                row.lastToken &+= 1
                token = row.lastToken
            }
            row.leaseHolder = holder
            row.leaseToken = token
            row.leaseExpires = now + max(0, seconds)
            try sql.save(db, migration, row)
            return token
        }
    }

    public func releaseLease(_ migration: String, holder: String, token: UInt64) async throws {
        try await run(.fleetState) { [sql] db in
            var row = try sql.row(db, migration)
            guard row.leaseHolder == holder, row.leaseToken == token else { return }
            row.leaseHolder = nil
            row.leaseToken = nil
            row.leaseExpires = nil
            try sql.save(db, migration, row)
        }
    }

    public var description: String { "SQLiteFleetStateStore(table \(table) in \(database.url))" }

    private func run<T: Sendable>(
        _ operation: StoreOperation,
        writing: Bool = true,
        _ body: @escaping @Sendable (Database) throws -> T
    ) async throws -> T {
        do {
            return writing ? try await database.writer.write(body) : try await database.writer.read(body)
        } catch let error as DatabaseError where error.message?.hasPrefix("no such column") == true {
            throw ZDDMError(
                .storeFailed,
                operation: operation,
                message: "table \(table) in \(database.url) lacks a column (an earlier version created it): "
                    + "prepare() adds it, as does zddm control set",
                underlying: SQLiteErrors.sanitized(error)
            )
        } catch {
            throw SQLiteErrors.wrap(error, operation: operation, table: table, database: database.url)
        }
    }
}

extension SQLiteFleetStateStore {
    /// A migration's row: its state and the lease.
    struct Stored: Sendable {
        var state = FleetState()
        var leaseHolder: String?
        var leaseToken: UInt64?
        var leaseExpires: Double?
        var lastToken: UInt64 = 0
    }

    /// The SQL text, built once from the validated, quoted table name.
    struct Statements: Sendable {
        static let columns = [
            "migration", "stage", "rate", "high_water", "killswitch", "behind", "caught_up", "lease_holder",
            "lease_token", "lease_expires", "last_token", "verified_behind", "control_epoch",
        ]

        let table: SQLIdentifier
        let create: String
        let read: String
        let upsert: String
        /// The columns added after the first version of the table, and the statements that add them.
        let addedColumns: [(column: String, statement: String)]

        init(_ table: SQLIdentifier) {
            self.table = table
            let t = table.quoted
            create = """
                CREATE TABLE IF NOT EXISTS \(t) ("migration" TEXT NOT NULL PRIMARY KEY, "stage" TEXT NOT NULL, \
                "rate" REAL NOT NULL, "high_water" REAL NOT NULL, "killswitch" INTEGER NOT NULL, \
                "behind" INTEGER NOT NULL, "caught_up" INTEGER NOT NULL, "lease_holder" TEXT, "lease_token" INTEGER, \
                "lease_expires" REAL, "last_token" INTEGER NOT NULL DEFAULT 0, "verified_behind" INTEGER, \
                "control_epoch" INTEGER NOT NULL DEFAULT 0)
                """
            addedColumns = [
                ("verified_behind", "ALTER TABLE \(t) ADD COLUMN \"verified_behind\" INTEGER"),
                ("control_epoch", "ALTER TABLE \(t) ADD COLUMN \"control_epoch\" INTEGER NOT NULL DEFAULT 0"),
            ]
            let list = Self.columns.dropFirst().map { "\"\($0)\"" }
            read = "SELECT \(list.joined(separator: ", ")) FROM \(t) WHERE \"migration\" = ?"
            upsert = """
                INSERT INTO \(t) ("migration", \(list.joined(separator: ", "))) \
                VALUES (\(SQLiteBinding.placeholders(Self.columns.count))) \
                ON CONFLICT ("migration") DO UPDATE SET \
                \(list.map { "\($0) = excluded.\($0)" }.joined(separator: ", "))
                """
        }

        /// A migration's row, or the defaults when there is none.
        func row(_ db: Database, _ migration: String) throws -> Stored {
            guard let row = try Row.fetchOne(db.cachedStatement(sql: read), arguments: [migration]) else {
                return Stored()
            }
            let stageName: String = row[0] ?? ""
            guard let stage = MigrationStage(rawValue: stageName) else {
                throw ZDDMError(
                    .mappingFailed,
                    operation: .fleetState,
                    message: "table \(table): a migration's stage is not a known stage"
                )
            }
            var stored = Stored()
            stored.state = FleetState(
                stage: stage,
                rate: row[1] ?? 0,
                highWaterRate: row[2] ?? 0,
                killswitch: (row[3] as Int64? ?? 0) != 0,
                behind: UInt64(bitPattern: row[4] ?? 0),
                caughtUp: UInt64(bitPattern: row[5] ?? 0),
                verifiedBehind: (row[10] as Int64?).map { UInt64(bitPattern: $0) },
                controlEpoch: UInt64(bitPattern: row[11] ?? 0)
            )
            stored.leaseHolder = row[6]
            stored.leaseToken = (row[7] as Int64?).map { UInt64(bitPattern: $0) }
            stored.leaseExpires = row[8]
            stored.lastToken = UInt64(bitPattern: row[9] ?? 0)
            return stored
        }

        /// Writes a migration's row.
        func save(_ db: Database, _ migration: String, _ stored: Stored) throws {
            let state = stored.state
            let arguments: [(any DatabaseValueConvertible)?] = [
                migration, state.stage.rawValue, state.rate, state.highWaterRate, state.killswitch ? 1 : 0,
                Int64(bitPattern: state.behind), Int64(bitPattern: state.caughtUp), stored.leaseHolder,
                stored.leaseToken.map { Int64(bitPattern: $0) }, stored.leaseExpires,
                Int64(bitPattern: stored.lastToken), state.verifiedBehind.map { Int64(bitPattern: $0) },
                Int64(bitPattern: state.controlEpoch),
            ]
            try db.cachedStatement(sql: upsert).execute(arguments: StatementArguments(arguments))
        }
    }
}
