import GRDB
import ZDDM
public import ZDDMSQL

/// Installs, checks and removes change capture on an SQLite table, making it an Old store whose every writer gives
/// versions and change entries.
///
/// ``install()`` adds, in one transaction (SQLite runs write transactions one at a time, so it is safe while the
/// table is written):
///
/// - the version column (``ZDDMSQL/ChangeCaptureSchema/versionColumn``, `INTEGER NOT NULL DEFAULT 0`) if the table
///   lacks it: rows that exist keep version 0 until their first change gives them 1;
/// - the deleted-versions table `(key PRIMARY KEY, version)` and the change table
///   `(seq INTEGER PRIMARY KEY, key, version, changed_at)`, `changed_at` in Unix seconds by SQLite's clock (no
///   `AUTOINCREMENT`, whose `sqlite_sequence` update would cost every write a page: a removed entry's number may be
///   given again, so entries are removed by sequence number, key and version together; tables installed with
///   `AUTOINCREMENT` by an earlier version keep working);
/// - triggers on `INSERT`, `UPDATE` and `DELETE` of the table, so that every change, by any writer and plain SQL
///   too, makes the key's version larger than any it had (whatever the statement put in the version column), keeps
///   a deleted key's version in the deleted-versions table (a key inserted again continues above it), and appends
///   exactly one change-table entry.
///
/// With `PRAGMA recursive_triggers` off (SQLite's default), `INSERT OR REPLACE` over an existing row is one change;
/// with it on, SQLite also fires the delete triggers for the replaced row, so it is two changes (a deletion and an
/// insertion), each with its own larger version. The deleted-versions table may also keep a live key's version
/// (at most its row's version) after an `INSERT` that found the key present; readers look at the row first.
///
/// A statement that sets the version itself to the one the triggers would give (the row's version or the key's
/// deleted-versions entry, whichever is larger, plus one) is captured with one change entry, without the triggers'
/// own update of the row, as ``SQLiteStore`` and ``SQLiteTableStore`` do: one `UPDATE … RETURNING` of the row, or
/// one `INSERT` for a key without a row (which also drops the key's deleted-versions entry). Any other value in the
/// version column is replaced by the triggers' version.
///
/// ```swift
/// let capture = try SQLiteChangeCapture(
///     database: database,
///     schema: ChangeCaptureSchema(table: "accounts", keyColumn: "id")
/// )
/// try await capture.install()
/// ```
public struct SQLiteChangeCapture: Sendable, CustomStringConvertible {
    /// The database holding the table.
    public let database: SQLiteDatabase
    /// The names of the table and of what change capture adds to it.
    public let schema: ChangeCaptureSchema
    private let sql: SQLiteCaptureSQL

    /// Describes change capture on a table; nothing runs until a method is called.
    /// - Parameters:
    ///   - database: The database.
    ///   - schema: The table, its key column and the names change capture adds.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when a trigger name would be too long.
    public init(database: SQLiteDatabase, schema: ChangeCaptureSchema) throws {
        self.database = database
        self.schema = schema
        self.sql = try SQLiteCaptureSQL(schema, keyType: "")
    }

    /// Installs change capture, or brings it up to date; installing twice changes nothing the second time.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when the table or its key column does not
    ///   exist or the key column is neither the primary key nor unique, or ``ZDDMError/Code/storeFailed`` when
    ///   SQLite fails (nothing is installed then).
    public func install() async throws {
        try await run(.prepare, writing: true) { db in try Self.install(db, schema) }
    }

    /// Checks change capture without changing anything.
    /// - Returns: What is missing or outdated, and the change table's backlog.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/storeFailed`` when SQLite fails.
    public func status() async throws -> SQLiteChangeCaptureStatus {
        try await run(.changes, writing: false) { [sql] db in
            let missing = try Self.missing(db, sql)
            let hasChanges = try Self.tableExists(db, schema.changeTable)
            return SQLiteChangeCaptureStatus(
                missing: missing,
                backlog: hasChanges ? try Self.backlog(db, sql) : nil
            )
        }
    }

    /// Removes the triggers, the change table and the deleted-versions table, in one transaction. The version
    /// column stays (drop it with `ALTER TABLE … DROP COLUMN` once nothing reads it); removing what is not installed
    /// is not an error.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/storeFailed`` when SQLite fails (nothing is removed then).
    public func uninstall() async throws {
        try await run(.prepare, writing: true) { [sql] db in
            for trigger in sql.triggers {
                try db.execute(sql: "DROP TRIGGER IF EXISTS \(trigger.name.quoted)")
            }
            try db.execute(sql: "DROP TABLE IF EXISTS \(schema.changeTable.quoted)")
            try db.execute(sql: "DROP TABLE IF EXISTS \(schema.deletedTable.quoted)")
        }
    }

    public var description: String { "SQLiteChangeCapture(table \(schema.table) in \(database.url))" }

    private func run<T: Sendable>(
        _ operation: StoreOperation,
        writing: Bool,
        _ body: @escaping @Sendable (Database) throws -> T
    ) async throws -> T {
        do {
            return writing ? try await database.writer.write(body) : try await database.writer.read(body)
        } catch {
            throw SQLiteErrors.wrap(error, operation: operation, table: schema.table, database: database.url)
        }
    }
}

extension SQLiteChangeCapture {
    /// Installs change capture inside the caller's write transaction.
    static func install(_ db: Database, _ schema: ChangeCaptureSchema) throws {
        let columns = try tableColumns(db, schema.table)
        guard !columns.isEmpty else {
            throw ZDDMError(.invalidArgument, operation: .prepare, message: "table \(schema.table) does not exist")
        }
        guard let keyType = columns[schema.keyColumn.name.lowercased()] else {
            throw ZDDMError(
                .invalidArgument,
                operation: .prepare,
                message: "table \(schema.table) has no key column \(schema.keyColumn)"
            )
        }
        guard try isUnique(db, schema.table, schema.keyColumn) else {
            throw ZDDMError(
                .invalidArgument,
                operation: .prepare,
                message: "column \(schema.keyColumn) of table \(schema.table) is neither its primary key nor unique; "
                    + "change capture needs one row per key"
            )
        }
        let sql = try SQLiteCaptureSQL(schema, keyType: keyType)
        if columns[schema.versionColumn.name.lowercased()] == nil {
            try db.execute(sql: sql.addVersionColumn)
        }
        try db.execute(sql: sql.createDeleted)
        try db.execute(sql: sql.createChanges)
        for trigger in sql.triggers {
            try db.execute(sql: "DROP TRIGGER IF EXISTS \(trigger.name.quoted)")
            try db.execute(sql: trigger.sql)
        }
    }

    /// What change capture lacks on the table, by name: the table, the version column, a side table, a trigger
    /// (missing, or not the current definition).
    static func missing(_ db: Database, _ sql: SQLiteCaptureSQL) throws -> [String] {
        let schema = sql.schema
        let columns = try tableColumns(db, schema.table)
        guard !columns.isEmpty else { return ["table \(schema.table)"] }
        var missing: [String] = []
        if columns[schema.versionColumn.name.lowercased()] == nil {
            missing.append("version column \(schema.versionColumn)")
        }
        if try !tableExists(db, schema.deletedTable) { missing.append("deleted-versions table \(schema.deletedTable)") }
        if try !tableExists(db, schema.changeTable) { missing.append("change table \(schema.changeTable)") }
        for trigger in sql.triggers {
            let stored = try String.fetchOne(
                db,
                sql: "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ? AND tbl_name = ?",
                arguments: [trigger.name.name, schema.table.name]
            )
            switch stored {
            case nil: missing.append("trigger \(trigger.name)")
            case trigger.sql?: break
            default: missing.append("trigger \(trigger.name) (out of date: install again)")
            }
        }
        return missing
    }

    /// The change table's backlog.
    static func backlog(_ db: Database, _ sql: SQLiteCaptureSQL) throws -> ChangeBacklog {
        guard let row = try Row.fetchOne(db, sql: sql.backlog) else { return ChangeBacklog(entries: 0, oldestAge: nil) }
        let entries: Int = row[0] ?? 0
        let age: Double? = row[1]
        return ChangeBacklog(entries: entries, oldestAge: age.map { .seconds(max(0, $0)) })
    }

    /// The table's columns, lowercased name to declared type; empty when the table does not exist.
    static func tableColumns(_ db: Database, _ table: SQLIdentifier) throws -> [String: String] {
        var columns: [String: String] = [:]
        for row in try Row.fetchAll(db, sql: "PRAGMA table_info(\(table.quoted))") {
            let name: String = row["name"]
            columns[name.lowercased()] = row["type"] ?? ""
        }
        return columns
    }

    static func tableExists(_ db: Database, _ table: SQLIdentifier) throws -> Bool {
        try Bool.fetchOne(
            db,
            sql: "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
            arguments: [table.name]
        ) != nil
    }

    /// Whether a column is the table's whole primary key or has a unique index of its own.
    private static func isUnique(_ db: Database, _ table: SQLIdentifier, _ column: SQLIdentifier) throws -> Bool {
        let info = try Row.fetchAll(db, sql: "PRAGMA table_info(\(table.quoted))")
        let primary = info.filter { ($0["pk"] as Int? ?? 0) > 0 }.map { ($0["name"] as String? ?? "").lowercased() }
        if primary == [column.name.lowercased()] { return true }
        for index in try Row.fetchAll(db, sql: "PRAGMA index_list(\(table.quoted))") {
            guard (index["unique"] as Int? ?? 0) != 0, let name = index["name"] as String? else { continue }
            guard (index["partial"] as Int? ?? 0) == 0 else { continue }
            let columns = try Optional<String>.fetchAll(
                db,
                sql: "SELECT name FROM pragma_index_info(?)",
                arguments: [name]
            ).map { $0?.lowercased() ?? "" }
            if columns == [column.name.lowercased()] { return true }
        }
        return false
    }
}
