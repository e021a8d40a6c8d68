import GRDB
import ZDDM
import ZDDMSQL

/// What both SQLite stores do with a captured table's side tables.
extension SQLStoreCore {
    /// The change table's oldest entries.
    func capturedChanges(
        limit: Int,
        on database: SQLiteDatabase,
        sql: SQLiteCaptureSQL
    ) async throws
        -> [CapturedChange<Key>]
    {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .changes, message: "limit must be at least 1, got \(limit)")
        }
        let rows = try await run(.changes, on: database, writing: false) { db in
            try Row.fetchAll(db.cachedStatement(sql: sql.listChanges), arguments: [Int64(limit)]).map {
                Array($0.databaseValues)
            }
        }
        return try rows.map { row in
            guard case .int64(let sequence) = row[0].storage else {
                throw ZDDMError(
                    .mappingFailed,
                    operation: .changes,
                    message: "change table \(sql.schema.changeTable): a sequence is not an integer"
                )
            }
            let version = try SQLiteBinding.version(row[2])
            return CapturedChange(sequence: sequence, key: try key(row[1], for: .changes), version: version)
        }
    }

    /// Removes change-table entries whose sequence number, key and version all match, in one transaction.
    func removeCapturedChanges(
        _ changes: [CapturedChange<Key>],
        on database: SQLiteDatabase,
        sql: SQLiteCaptureSQL
    ) async throws {
        guard !changes.isEmpty else { return }
        let rows = try changes.map { change -> StatementArguments in
            let version = try SQLiteBinding.databaseValue(version: change.version, for: .changes)
            return [change.sequence, SQLiteBinding.databaseValue(change.key.sqlKeyValue), version]
        }
        try await run(.changes, on: database) { db in
            let statement = try db.cachedStatement(sql: sql.removeChange)
            for arguments in rows { try statement.execute(arguments: arguments) }
        }
    }

    /// The change table's size and the age of its oldest entry.
    func changeBacklog(on database: SQLiteDatabase, sql: SQLiteCaptureSQL) async throws -> ChangeBacklog {
        try await run(.changes, on: database, writing: false) { db in try SQLiteChangeCapture.backlog(db, sql) }
    }

    /// The version a deleted key keeps, or `nil` when the deleted-versions table has none.
    func deletedVersion(_ db: Database, _ bound: DatabaseValue, sql: SQLiteCaptureSQL) throws -> UInt64? {
        try DatabaseValue.fetchOne(db.cachedStatement(sql: sql.readDeleted), arguments: [bound]).map(
            SQLiteBinding.version
        )
    }

    /// The versions deleted keys keep, for keys in `chunks`.
    func deletedVersions(
        _ db: Database,
        _ chunks: [[DatabaseValue]],
        sql: SQLiteCaptureSQL
    ) throws
        -> [(key: DatabaseValue, version: DatabaseValue)]
    {
        var found: [(key: DatabaseValue, version: DatabaseValue)] = []
        for chunk in chunks {
            for row in try Row.fetchAll(
                db.cachedStatement(sql: sql.readManyDeleted(chunk.count)),
                arguments: StatementArguments(chunk)
            ) {
                found.append((row[0], row[1]))
            }
        }
        return found
    }

    /// Refuses a table on which change capture is not installed, naming what is missing.
    func checkCapture(_ db: Database, sql: SQLiteCaptureSQL) throws {
        let missing = try SQLiteChangeCapture.missing(db, sql)
        guard missing.isEmpty else {
            throw ZDDMError(
                .invalidArgument,
                operation: .prepare,
                message: "the store captures changes, but change capture on table \(sql.schema.table) lacks "
                    + missing.joined(separator: ", ") + " (install it with SQLiteChangeCapture.install())"
            )
        }
    }
}

extension SQLStoreCore {
    /// Keys of the captured table and of its deleted-versions table after a cursor, in key order, each once; without
    /// change capture, the keys `first` and `following` list.
    func keysIncludingDeleted(
        after cursor: Key?,
        limit: Int,
        on database: SQLiteDatabase,
        capture: SQLiteCaptureSQL?,
        first: String,
        following: String
    ) async throws -> [Key] {
        let statements =
            capture?.schema.keysIncludingDeletedStatements(
                collation: Key.sqlKeyKind == .text ? " COLLATE BINARY" : "",
                placeholders: ("?1", "?2")
            ) ?? (first: first, following: following)
        return try await keys(
            after: cursor,
            limit: limit,
            on: database,
            first: statements.first,
            following: statements.following
        )
    }
}

extension SQLiteCaptureSQL.VersionedWrite {
    /// Runs the write inside the caller's write transaction: the update, else the insert.
    /// - Parameter arguments: The key, then the values the statements bind (`?2`…).
    /// - Returns: The version the key got, as stored.
    func run(_ db: Database, arguments: StatementArguments) throws -> DatabaseValue {
        if let version = try DatabaseValue.fetchOne(db.cachedStatement(sql: update), arguments: arguments) {
            return version
        }
        return try DatabaseValue.fetchOne(db.cachedStatement(sql: insert), arguments: arguments) ?? .null
    }
}
