import GRDB
public import ZDDM
import ZDDMSQL

extension SQLiteStore {
    public func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>? {
        try requireVersions(.read)
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        let found = try await core.run(.read, on: database, writing: false) { [sql, capture] db -> Found? in
            if let row = try Row.fetchOne(db.cachedStatement(sql: sql.readVersioned), arguments: [bound]) {
                return Found.row(Array(row.databaseValues))
            }
            guard let capture, let version = try core.deletedVersion(db, bound, sql: capture) else { return nil }
            return Found.deleted(version)
        }
        return try found.map { try versioned($0, for: .read) }
    }

    public func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>] {
        try requireVersions(.readMany)
        guard !keys.isEmpty else { return [:] }
        let chunks = core.boundBatches(keys, size: Statements.batchSize)
        let (rows, deleted) = try await core.run(.readMany, on: database, writing: false) { [sql, capture] db in
            var rows: [[DatabaseValue]] = []
            for chunk in chunks {
                let statement = sql.readManyVersioned(chunk.count)
                for row in try Row.fetchAll(db.cachedStatement(sql: statement), arguments: StatementArguments(chunk)) {
                    rows.append(Array(row.databaseValues))
                }
            }
            let deleted = try capture.map { try core.deletedVersions(db, chunks, sql: $0) } ?? []
            return (rows, deleted)
        }
        var found: [Key: VersionedRecord<Value>] = [:]
        for entry in deleted {
            found[try core.key(entry.key, for: .readMany)] = .tombstone(
                version: try SQLiteBinding.version(entry.version)
            )
        }
        for row in rows {
            found[try core.key(row[0], for: .readMany)] = try versioned(.row(Array(row.dropFirst())), for: .readMany)
        }
        return found
    }

    /// One ordered statement over the table (and, with change capture, the deleted-versions table's keys that
    /// have no row); no values are read.
    public func keyVersions(after cursor: Key?, limit: Int) async throws -> [KeyVersion<Key>] {
        try requireVersions(.listKeys)
        guard let statements = keyVersionsSQL else { return [] }
        let rows = try await page(statements, after: cursor, limit: limit)
        return try rows.map { row in
            KeyVersion(
                key: try core.key(row[0], for: .listKeys),
                version: try SQLiteBinding.version(row[1]),
                isTombstone: row[2] == 1.databaseValue
            )
        }
    }

    /// One ordered statement over the table and, with change capture, the deleted-versions table's keys that
    /// have no row.
    public func versionedRecords(
        after cursor: Key?,
        limit: Int
    ) async throws -> [(key: Key, record: VersionedRecord<Value>)] {
        try requireVersions(.listKeys)
        guard let statements = versionedRecordsSQL else { return [] }
        let rows = try await page(statements, after: cursor, limit: limit)
        return try rows.map { row in
            (
                key: try core.key(row[0], for: .listKeys),
                record: try versioned(.row([row[3], row[2], row[1]]), for: .listKeys)
            )
        }
    }

    /// The rows of one page of a listing with versions, after a cursor.
    private func page(_ statements: KeyVersionsSQL, after cursor: Key?, limit: Int) async throws -> [[DatabaseValue]] {
        try core.checkListLimit(limit)
        var arguments: [DatabaseValue] = []
        if let cursor { arguments.append(SQLiteBinding.databaseValue(cursor.sqlKeyValue)) }
        arguments.append(Int64(limit).databaseValue)
        let statement = cursor == nil ? statements.first : statements.following
        let bound = StatementArguments(arguments)
        return try await core.run(.listKeys, on: database, writing: false) { db in
            try Row.fetchAll(db.cachedStatement(sql: statement), arguments: bound).map { Array($0.databaseValues) }
        }
    }

    public func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64 {
        guard let write = captured?.value else { throw noCapture(.write) }
        let arguments = try core.arguments(key, value, for: .write)
        let version = try await core.run(.write, on: database) { db in try write.run(db, arguments: arguments) }
        return try SQLiteBinding.version(version)
    }

    public func deleteVersioned(_ key: Key) async throws -> UInt64 {
        let capture = try requireCapture(.delete)
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        let version = try await core.run(.delete, on: database) { [sql] db in
            try db.cachedStatement(sql: sql.delete).execute(arguments: [bound])
            return try core.deletedVersion(db, bound, sql: capture)
        }
        return version ?? 0
    }

    public func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool {
        let arguments = try fenceArguments(key, record)
        return try await core.run(.writeIfNewer, on: database) { [sql] db in
            try db.cachedStatement(sql: sql.writeIfNewer).execute(arguments: arguments)
            return db.changesCount > 0
        }
    }

    public func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key> {
        guard !entries.isEmpty else {
            try requireFence()
            return []
        }
        let rows = try entries.map { try fenceArguments($0.key, $0.record) }
        let stored = try await core.run(.writeIfNewer, on: database) { [sql] db in
            let statement = try db.cachedStatement(sql: sql.writeIfNewer)
            var stored: [Int] = []
            for (index, arguments) in rows.enumerated() {
                try statement.execute(arguments: arguments)
                if db.changesCount > 0 { stored.append(index) }
            }
            return stored
        }
        return Set(stored.map { entries[$0].key })
    }

    public func capturedChanges(limit: Int) async throws -> [CapturedChange<Key>] {
        try await core.capturedChanges(limit: limit, on: database, sql: requireCapture(.changes))
    }

    public func removeCapturedChanges(_ changes: [CapturedChange<Key>]) async throws {
        try await core.removeCapturedChanges(changes, on: database, sql: requireCapture(.changes))
    }

    public func changeBacklog() async throws -> ChangeBacklog {
        try await core.changeBacklog(on: database, sql: requireCapture(.changes))
    }

    /// What a versioned read found: a row (value, tombstone flag, version), or a deleted key's version.
    enum Found: Sendable {
        case row([DatabaseValue])
        case deleted(UInt64)
    }

    private func versioned(_ found: Found, for operation: StoreOperation) throws -> VersionedRecord<Value> {
        switch found {
        case .deleted(let version):
            return .tombstone(version: version)
        case .row(let columns):
            let record = try core.record(value: columns[0], tombstone: columns[1], for: operation)
            return VersionedRecord(record, version: try SQLiteBinding.version(columns[2]))
        }
    }

    /// The fence's arguments: key, value (or `NULL`), tombstone flag, version.
    private func fenceArguments(_ key: Key, _ record: VersionedRecord<Value>) throws -> StatementArguments {
        try requireFence()
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        let version = try SQLiteBinding.databaseValue(version: record.version, for: .writeIfNewer)
        switch record.record {
        case .value(let value):
            let columns = try core.encode(value, for: .writeIfNewer).map(SQLiteBinding.databaseValue)
            return StatementArguments([bound] + columns + [0.databaseValue, version])
        case .tombstone:
            return StatementArguments([bound, .null, 1.databaseValue, version])
        }
    }

    private func requireVersions(_ operation: StoreOperation) throws {
        guard versionColumn != nil else {
            throw ZDDMError(.unsupported, operation: operation, message: "table \(schema.table) keeps no versions")
        }
    }

    @discardableResult
    private func requireCapture(_ operation: StoreOperation) throws -> SQLiteCaptureSQL {
        guard let capture else { throw noCapture(operation) }
        return capture
    }

    private func noCapture(_ operation: StoreOperation) -> ZDDMError {
        ZDDMError(
            .unsupported,
            operation: operation,
            message: "the store over table \(schema.table) has no change capture, so it does not assign versions"
        )
    }

    private func requireFence() throws {
        try requireVersions(.writeIfNewer)
        guard capture == nil else {
            throw ZDDMError(
                .unsupported,
                operation: .writeIfNewer,
                message:
                    "table \(schema.table) has change capture, whose triggers assign versions: it cannot keep given ones"
            )
        }
    }
}
