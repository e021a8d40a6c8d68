import GRDB
public import ZDDM
import ZDDMSQL

extension SQLiteTableStore {
    public func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>? {
        try requireVersions(.read)
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        let found = try await core.run(.read, on: database, writing: false) { db -> Found? in
            if let row = try Row.fetchOne(db.cachedStatement(sql: sql.readVersioned), arguments: [bound]) {
                return .row(Array(row.databaseValues))
            }
            return try tombstoneVersion(db, bound).map(Found.tombstone)
        }
        return try found.map { try versioned($0, for: .read) }
    }

    public func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>] {
        try requireVersions(.readMany)
        guard !keys.isEmpty else { return [:] }
        let chunks = core.boundBatches(keys, size: Statements.batchSize)
        let (rows, tombstones) = try await core.run(.readMany, on: database, writing: false) { db in
            var rows: [[DatabaseValue]] = []
            var tombstones: [(key: DatabaseValue, version: DatabaseValue)] = []
            for chunk in chunks {
                let arguments = StatementArguments(chunk)
                for row in try Row.fetchAll(
                    db.cachedStatement(sql: sql.readManyVersioned(chunk.count)),
                    arguments: arguments
                ) {
                    rows.append(Array(row.databaseValues))
                }
                if capture == nil {
                    let statement = sql.readManyTombstoneVersions(chunk.count)
                    for row in try Row.fetchAll(db.cachedStatement(sql: statement), arguments: arguments) {
                        tombstones.append((row[0], row[1]))
                    }
                }
            }
            if let capture { tombstones = try core.deletedVersions(db, chunks, sql: capture) }
            return (rows, tombstones)
        }
        var found: [Key: VersionedRecord<Value>] = [:]
        for entry in tombstones {
            found[try core.key(entry.key, for: .readMany)] = .tombstone(
                version: try SQLiteBinding.version(entry.version)
            )
        }
        for row in rows {
            found[try core.key(row[0], for: .readMany)] = try versioned(.row(Array(row.dropFirst())), for: .readMany)
        }
        return found
    }

    public func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64 {
        guard let write = capturedWrite else { throw noCapture(.write) }
        let arguments = try core.arguments(key, value, for: .write)
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        let version = try await core.run(.write, on: database) { db in
            try db.cachedStatement(sql: sql.deleteTombstone).execute(arguments: [bound])
            return try write.run(db, arguments: arguments)
        }
        return try SQLiteBinding.version(version)
    }

    public func deleteVersioned(_ key: Key) async throws -> UInt64 {
        let capture = try requireCapture(.delete)
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        return try await core.run(.delete, on: database) { db in
            try db.cachedStatement(sql: sql.deleteRow).execute(arguments: [bound])
            try db.cachedStatement(sql: sql.deleteTombstone).execute(arguments: [bound])
            return try core.deletedVersion(db, bound, sql: capture) ?? 0
        }
    }

    public func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool {
        let entry = try fenced(key, record)
        return try await core.run(.writeIfNewer, on: database) { db in try storeIfNewer(db, entry) }
    }

    public func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key> {
        let prepared = try entries.map { try fenced($0.key, $0.record) }
        guard !prepared.isEmpty else { return [] }
        let stored = try await core.run(.writeIfNewer, on: database) { db in
            var stored: [Int] = []
            for (index, entry) in prepared.enumerated() where try storeIfNewer(db, entry) { stored.append(index) }
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

    /// What a versioned read found: a row (the value's columns, then the version), or a tombstone's version.
    enum Found: Sendable {
        case row([DatabaseValue])
        case tombstone(UInt64)
    }

    /// A fenced write, ready to run: the key, the value's arguments (`nil` for a tombstone), the version.
    struct Fenced: Sendable {
        var key: DatabaseValue
        var arguments: StatementArguments?
        var version: UInt64
    }

    /// The key's version: its row's, else its tombstone's (New's side table, or Old's deleted-versions table).
    func currentVersion(_ db: Database, _ bound: DatabaseValue) throws -> UInt64? {
        if let version = try DatabaseValue.fetchOne(db.cachedStatement(sql: sql.readVersion), arguments: [bound]) {
            return try SQLiteBinding.version(version)
        }
        return try tombstoneVersion(db, bound)
    }

    /// Stores a value at a version (New's role): removes the tombstone, upserts the row with the version.
    func storeValue(_ db: Database, bound: DatabaseValue, arguments: StatementArguments, version: DatabaseValue) throws
    {
        try db.cachedStatement(sql: sql.deleteTombstone).execute(arguments: [bound])
        try db.cachedStatement(sql: sql.upsertVersioned).execute(arguments: arguments + [version])
    }

    /// Stores a tombstone at a version (New's role): removes the row, upserts the tombstone with the version.
    func storeTombstone(_ db: Database, bound: DatabaseValue, version: DatabaseValue) throws {
        try db.cachedStatement(sql: sql.deleteRow).execute(arguments: [bound])
        try db.cachedStatement(sql: sql.insertTombstoneVersioned).execute(arguments: [bound, version])
    }

    private func tombstoneVersion(_ db: Database, _ bound: DatabaseValue) throws -> UInt64? {
        if let capture { return try core.deletedVersion(db, bound, sql: capture) }
        return try DatabaseValue.fetchOne(db.cachedStatement(sql: sql.readTombstoneVersion), arguments: [bound])
            .map(SQLiteBinding.version)
    }

    private func storeIfNewer(_ db: Database, _ entry: Fenced) throws -> Bool {
        if let held = try currentVersion(db, entry.key), held >= entry.version { return false }
        let version = try SQLiteBinding.databaseValue(version: entry.version, for: .writeIfNewer)
        if let arguments = entry.arguments {
            try storeValue(db, bound: entry.key, arguments: arguments, version: version)
        } else {
            try storeTombstone(db, bound: entry.key, version: version)
        }
        return true
    }

    private func fenced(_ key: Key, _ record: VersionedRecord<Value>) throws -> Fenced {
        try requireVersions(.writeIfNewer)
        guard capture == nil else {
            throw ZDDMError(
                .unsupported,
                operation: .writeIfNewer,
                message: "table \(mapping.table) has change capture, whose triggers assign versions: "
                    + "it cannot keep given ones"
            )
        }
        _ = try SQLiteBinding.databaseValue(version: record.version, for: .writeIfNewer)
        let arguments = try record.value.map { try core.arguments(key, $0, for: .writeIfNewer) }
        return Fenced(key: SQLiteBinding.databaseValue(key.sqlKeyValue), arguments: arguments, version: record.version)
    }

    private func versioned(_ found: Found, for operation: StoreOperation) throws -> VersionedRecord<Value> {
        switch found {
        case .tombstone(let version):
            return .tombstone(version: version)
        case .row(let columns):
            let value = try core.value(Array(columns.dropLast()), for: operation)
            return .value(value, version: try SQLiteBinding.version(columns.last ?? .null))
        }
    }

    private func requireVersions(_ operation: StoreOperation) throws {
        guard versionColumn != nil else {
            throw ZDDMError(.unsupported, operation: operation, message: "table \(mapping.table) keeps no versions")
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
            message: "the store over table \(mapping.table) has no change capture, so it does not assign versions"
        )
    }
}
