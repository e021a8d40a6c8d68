import PostgresNIO
public import ZDDM
public import ZDDMSQL

/// Change capture on a PostgreSQL table, for the table's role as Old: installs, checks and removes the version
/// column, the two side tables and the two triggers that give every change of a row, by whichever writer, a larger
/// version and an entry in the change table, inside the change's own transaction.
///
/// ```swift
/// let capture = PostgresChangeCapture(
///     database: database,
///     schema: try ChangeCaptureSchema(table: "accounts", keyColumn: "id")
/// )
/// try await capture.install()
/// ```
///
/// What ``install(lockTimeout:)`` adds (names from ``ChangeCaptureSchema``):
///
/// | object | what it does |
/// | --- | --- |
/// | version column, `bigint NOT NULL DEFAULT 0` | rows that exist get version 0; their first change gives 1 |
/// | deleted-versions table `(key PRIMARY KEY, version)` | the version a deletion gave a key, so a key created again continues above it |
/// | change table `(seq, key, version, changed_at)` | one entry per change, ordered by `seq` |
/// | `BEFORE INSERT OR UPDATE` row trigger | sets the version column, whatever the statement put there: on `UPDATE` the old version + 1, on `INSERT` the deleted version (or 0) + 1 |
/// | `AFTER INSERT OR UPDATE OR DELETE` row trigger | appends `(key, version, now())` to the change table; on `DELETE` records the deletion's version (old version + 1) in the deleted-versions table |
///
/// Exactly one version bump and one entry per changed row: an `INSERT … ON CONFLICT DO UPDATE` that hits an existing
/// row fires the `BEFORE INSERT` trigger (whose result is thrown away with the proposed row) and then the
/// `BEFORE UPDATE` and `AFTER UPDATE` triggers only, so the row gets the old version + 1 and one entry. An `UPDATE`
/// that changes the key counts as a deletion of the old key and a creation of the new one.
///
/// A plain `INSERT` that waited for a concurrent `DELETE` of the same key to commit would otherwise continue from a
/// deleted version read before that deletion; the `AFTER` trigger finds this (reading the deleted-versions table
/// again) and fails the statement with SQLSTATE `40001` (serialization failure), so versions never go down. The
/// stores retry their own statements when this happens; other writers see the error in that rare race. Under
/// `REPEATABLE READ` or `SERIALIZABLE` the check reads the transaction's snapshot and cannot see that deletion:
/// use `READ COMMITTED` (PostgreSQL's default) for writers of a captured table. `TRUNCATE`, and writes with
/// `session_replication_role = replica`, fire no row triggers and are not captured.
///
/// Installing runs in one transaction with `lock_timeout` set, so it never waits long behind a running transaction
/// while blocking the traffic queued after it. It takes an `ACCESS EXCLUSIVE` lock on the table for the column (a
/// catalog change only since PostgreSQL 11: no table rewrite) and `SHARE ROW EXCLUSIVE` for the triggers, both
/// held until the transaction commits, a few milliseconds later. It is idempotent: a second install changes
/// nothing but replaces the functions and triggers with the same definitions.
public struct PostgresChangeCapture: Sendable, CustomStringConvertible {
    /// The database holding the captured table.
    public let database: PostgresDatabase
    /// The names change capture uses.
    public let schema: ChangeCaptureSchema

    /// Whether change capture is installed on a table, and how far the change table is ahead of its applier.
    public struct Status: Sendable, Hashable {
        /// What is missing for change capture to work (a column, a table, a trigger), described by name; empty when
        /// it is installed.
        public var missing: [String]
        /// The change table's entries and the age of its oldest, when the change table exists.
        public var backlog: ChangeBacklog?

        /// Whether every object change capture needs is in place.
        public var isInstalled: Bool { missing.isEmpty }

        /// Creates a status.
        /// - Parameters:
        ///   - missing: What is missing.
        ///   - backlog: The change table's backlog, when it exists.
        public init(missing: [String], backlog: ChangeBacklog?) {
            self.missing = missing
            self.backlog = backlog
        }
    }

    /// Describes change capture on a table; nothing runs until a method is called.
    /// - Parameters:
    ///   - database: The database holding the table.
    ///   - schema: The table, its key column and the names change capture adds.
    public init(database: PostgresDatabase, schema: ChangeCaptureSchema) {
        self.database = database
        self.schema = schema
    }

    /// Installs change capture on the table, or makes sure it is installed: adds the version column if missing,
    /// creates the side tables if missing, and (re)creates the functions and triggers, in one transaction.
    /// - Parameter lockTimeout: The longest to wait for the table's locks before giving up (nothing is changed
    ///   then); 5 seconds by default.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` when the table or its key
    ///   column does not exist, or ``ZDDM/ZDDMError/Code/storeFailed`` when PostgreSQL fails (a lock not granted in
    ///   time included).
    public func install(lockTimeout: Duration = .seconds(5)) async throws {
        guard lockTimeout > .zero else {
            throw ZDDMError(.invalidArgument, operation: .prepare, message: "lockTimeout must be positive")
        }
        let milliseconds = Self.milliseconds(lockTimeout)
        try await run(.prepare, "installing change capture") {
            let place = try await tablePlace()
            let sql = try Statements(schema, namespace: place.namespace, keyType: place.keyType)
            let logger = database.logger
            try await database.withTransaction { connection in
                for statement in ["SET LOCAL lock_timeout = \(milliseconds)"] + sql.install {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
            }
        }
    }

    /// Checks whether change capture is installed, without changing anything.
    /// - Returns: What is missing (nothing when installed) and the change table's backlog.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func status() async throws -> Status {
        try await run(.prepare, "checking change capture") {
            let missing = try await missingObjects()
            let hasChangeTable = !missing.contains { $0.hasPrefix("change table") || $0.hasPrefix("table ") }
            return Status(missing: missing, backlog: hasChangeTable ? try await changeBacklog() : nil)
        }
    }

    /// Removes change capture's triggers and functions from the table, in one transaction; with `removingData`
    /// also the change table, the deleted-versions table and the version column. Nothing missing is an error.
    /// - Parameters:
    ///   - removingData: Whether to drop the side tables and the version column too; `false` by default.
    ///   - lockTimeout: The longest to wait for the table's locks; 5 seconds by default.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func uninstall(removingData: Bool = false, lockTimeout: Duration = .seconds(5)) async throws {
        guard lockTimeout > .zero else {
            throw ZDDMError(.invalidArgument, operation: .prepare, message: "lockTimeout must be positive")
        }
        let milliseconds = Self.milliseconds(lockTimeout)
        try await run(.prepare, "removing change capture") {
            let sql = try Statements.uninstall(schema, removingData: removingData)
            let logger = database.logger
            try await database.withTransaction { connection in
                for statement in ["SET LOCAL lock_timeout = \(milliseconds)"] + sql {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
            }
        }
    }

    public var description: String { "PostgresChangeCapture(table \(schema.table) on \(database.location))" }

    // MARK: Used by the stores

    /// What is missing for change capture to work, each described by kind and name.
    func missingObjects() async throws -> [String] {
        var binds = PostgresBindings(capacity: 7)
        binds.append(schema.table.quoted)
        binds.append(schema.versionColumn.name)
        binds.append(schema.deletedTable.quoted)
        binds.append(schema.changeTable.quoted)
        binds.append(try schema.object("before_write").name)
        binds.append(try schema.object("after_write").name)
        let rows = try await database.rows(
            """
            SELECT to_regclass($1) IS NOT NULL, \
            EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 \
            AND attnum > 0 AND NOT attisdropped), \
            to_regclass($3) IS NOT NULL, to_regclass($4) IS NOT NULL, \
            EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $5 AND tgenabled <> 'D'), \
            EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $6 AND tgenabled <> 'D')
            """,
            binds
        )
        guard let row = rows.first else { return ["table \(schema.table)"] }
        let (table, column, deleted, changes, before, after) = try row.decode((Bool, Bool, Bool, Bool, Bool, Bool).self)
        guard table else { return ["table \(schema.table)"] }
        var missing: [String] = []
        if !column { missing.append("version column \(schema.versionColumn)") }
        if !deleted { missing.append("deleted-versions table \(schema.deletedTable)") }
        if !changes { missing.append("change table \(schema.changeTable)") }
        if !before { missing.append("trigger \(try schema.object("before_write")) (enabled)") }
        if !after { missing.append("trigger \(try schema.object("after_write")) (enabled)") }
        return missing
    }

    /// Throws, naming what is missing, unless change capture is installed.
    func requireInstalled() async throws {
        let missing = try await missingObjects()
        guard missing.isEmpty else {
            throw ZDDMError(
                .invalidArgument,
                operation: .prepare,
                message: "change capture is not installed on table \(schema.table): missing "
                    + missing.joined(separator: ", ") + " (PostgresChangeCapture.install() installs it)"
            )
        }
    }

    /// The change table's oldest entries, in `seq` order.
    /// - Parameters:
    ///   - limit: The most entries; at least 1.
    ///   - key: Reads a key back from the key column.
    func changes<Key: Sendable>(
        limit: Int,
        key: (PostgresCell) throws -> Key
    ) async throws -> [CapturedChange<Key>] {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .changes, message: "limit must be at least 1, got \(limit)")
        }
        var binds = PostgresBindings(capacity: 1)
        binds.append(Int64(limit))
        let rows = try await database.rows(
            "SELECT seq, \"key\", version FROM \(schema.changeTable.quoted) ORDER BY seq LIMIT $1",
            binds
        )
        return try rows.map { row in
            let cells = row.makeRandomAccess()
            return CapturedChange(
                sequence: try cells[0].decode(Int64.self),
                key: try key(cells[1]),
                version: try PostgresBinding.version(cells[2])
            )
        }
    }

    /// The change table's size and the age of its oldest entry by the server's clock.
    func changeBacklog() async throws -> ChangeBacklog {
        let rows = try await database.rows(
            """
            SELECT count(*)::int8, \
            (extract(epoch FROM (clock_timestamp() - min(changed_at))) * 1000000)::int8 \
            FROM \(schema.changeTable.quoted)
            """,
            PostgresBindings()
        )
        guard let row = rows.first else { return ChangeBacklog(entries: 0, oldestAge: nil) }
        let (count, micros) = try row.decode((Int64, Int64?).self)
        return ChangeBacklog(entries: Int(count), oldestAge: micros.map { .microseconds(max(0, $0)) })
    }

    // MARK: Helpers

    /// A duration in whole milliseconds, at least 1.
    private static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return max(1, min(seconds, 86_400_000) * 1000 + attoseconds / 1_000_000_000_000_000)
    }

    /// The table's schema (quoted by the server) and its key column's type, or an error naming what is missing.
    private func tablePlace() async throws -> (namespace: String, keyType: String) {
        var binds = PostgresBindings(capacity: 2)
        binds.append(schema.table.quoted)
        binds.append(schema.keyColumn.name)
        let rows = try await database.rows(
            """
            SELECT quote_ident(n.nspname), \
            (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = c.oid \
            AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped) \
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)
            """,
            binds
        )
        guard let row = rows.first else {
            throw ZDDMError(.invalidArgument, operation: .prepare, message: "table \(schema.table) does not exist")
        }
        let (namespace, keyType) = try row.decode((String, String?).self)
        guard let keyType else {
            throw ZDDMError(
                .invalidArgument,
                operation: .prepare,
                message: "table \(schema.table) has no column \(schema.keyColumn)"
            )
        }
        return (namespace, keyType)
    }

    private func run<T>(_ operation: StoreOperation, _ what: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            if error is CancellationError { throw error }
            if var known = error as? ZDDMError {
                known.operation = known.operation ?? operation
                throw known
            }
            var message = "\(what) on table \(schema.table) on \(database.server)"
            if PostgresErrors.sqlState(error) == "55P03" { message += ": a lock was not granted in time" }
            throw ZDDMError(
                .storeFailed,
                operation: operation,
                message: message,
                underlying: PostgresErrors.sanitized(error)
            )
        }
    }
}
