import PostgresNIO
public import ZDDM
import ZDDMSQL

extension PostgresTableStore {
    public func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>? {
        let sql = try readStatements(.read)
        var binds = PostgresBindings(capacity: 1)
        PostgresBinding.append(key.sqlKeyValue, to: &binds)
        return try await core.run(.read, on: database) {
            var found: [Key: VersionedRecord<Value>] = [:]
            var fromRows: Set<Key> = []
            try collect(try await database.rows(sql.read, binds), into: &found, fromRows: &fromRows, .read)
            return found.values.first
        }
    }

    public func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>] {
        let sql = try readStatements(.readMany)
        guard !keys.isEmpty else { return [:] }
        return try await core.run(.readMany, on: database) {
            var found: [Key: VersionedRecord<Value>] = [:]
            var fromRows: Set<Key> = []
            for chunk in SQLStoreCore<Key, Value>.batches(keys, size: Statements.batchSize) {
                var binds = PostgresBindings(capacity: 1)
                PostgresBinding.appendArray(chunk.map(\.sqlKeyValue), kind: Key.sqlKeyKind, to: &binds)
                try collect(try await database.rows(sql.readMany, binds), into: &found, fromRows: &fromRows, .readMany)
            }
            return found
        }
    }

    public func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64 {
        let sql = try captureStatements(.write)
        let binds = try core.bindings(key, value, for: .write)
        return try await core.run(.write, on: database) {
            let rows = try await PostgresBinding.retryingSerializationFailures {
                try await database.rows(sql.writeVersioned, binds)
            }
            guard let row = rows.first else {
                throw ZDDMError(.storeFailed, message: "the upsert returned no version")
            }
            return try PostgresBinding.version(row.makeRandomAccess()[0])
        }
    }

    public func deleteVersioned(_ key: Key) async throws -> UInt64 {
        let sql = try captureStatements(.delete)
        let binds = PostgresBinding.bindings(key.sqlKeyValue)
        return try await core.run(.delete, on: database) {
            guard let row = try await database.rows(sql.deleteVersioned, binds).first else { return 0 }
            return try PostgresBinding.version(row.makeRandomAccess()[0])
        }
    }

    public func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool {
        try await writeManyIfNewer([(key: key, record: record)]).contains(key)
    }

    public func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key> {
        let fence = try fenceStatements()
        guard !entries.isEmpty else { return [] }
        // A key given twice keeps its newest record.
        var newest: [Key: Int] = [:]
        for (index, entry) in entries.enumerated() {
            if let held = newest[entry.key], entries[held].record.version >= entry.record.version { continue }
            newest[entry.key] = index
        }
        let prepared = try newest.values.sorted().map { index in
            let entry = entries[index]
            var binds: PostgresBindings
            if let value = entry.record.value {
                binds = try core.bindings(entry.key, value, for: .writeIfNewer)
            } else {
                binds = PostgresBinding.bindings(entry.key.sqlKeyValue)
            }
            binds.append(try PostgresBinding.versionParameter(entry.record.version, for: .writeIfNewer))
            return (key: entry.key, binds: binds, isValue: entry.record.value != nil, version: entry.record.version)
        }
        let keys = prepared.map(\.key)
        let sql = self.sql
        return try await locked(.writeIfNewer, keys: keys) { connection in
            // Under the keys' locks: each key's version (its row's, else its tombstone's), then the newer records.
            var held: [Key: UInt64] = [:]
            for chunk in SQLStoreCore<Key, Value>.batches(keys, size: Statements.batchSize) {
                var binds = PostgresBindings(capacity: 1)
                PostgresBinding.appendArray(chunk.map(\.sqlKeyValue), kind: Key.sqlKeyKind, to: &binds)
                for row in try await connection.run(fence.versions, binds) {
                    let cells = row.makeRandomAccess()
                    let key = try core.key(cells[0], for: .writeIfNewer)
                    let version = try PostgresBinding.version(cells[1])
                    held[key] = held[key].map { max($0, version) } ?? version
                }
            }
            var stored: Set<Key> = []
            for entry in prepared {
                if let current = held[entry.key], current >= entry.version { continue }
                let key = PostgresBinding.bindings(entry.key.sqlKeyValue)
                if entry.isValue {
                    try await connection.run(sql.deleteTombstone, key)
                    try await connection.run(fence.upsertRow, entry.binds)
                } else {
                    try await connection.run(sql.deleteRow, key)
                    try await connection.run(fence.upsertTombstone, entry.binds)
                }
                stored.insert(entry.key)
            }
            return stored
        }
    }

    public func capturedChanges(limit: Int) async throws -> [CapturedChange<Key>] {
        try await core.capturedChanges(limit: limit, capture: changeCapture, on: database)
    }

    public func removeCapturedChanges(_ changes: [CapturedChange<Key>]) async throws {
        try await core.removeCapturedChanges(changes, capture: changeCapture, on: database)
    }

    public func changeBacklog() async throws -> ChangeBacklog {
        try await core.changeBacklog(capture: changeCapture, on: database)
    }

    // MARK: Helpers

    /// The versioned reads of the store's role: Old's (the row, the deleted-versions table, a tombstone) or New's
    /// (the row, else the tombstone, each with its version).
    private func readStatements(_ operation: StoreOperation) throws -> (read: String, readMany: String) {
        if let captureSQL { return (captureSQL.read, captureSQL.readMany) }
        if let fenceSQL { return (fenceSQL.read, fenceSQL.readMany) }
        throw ZDDMError(
            .unsupported,
            operation: operation,
            message: "table \(mapping.table): this store keeps no versions (pass changeCapture: or versionColumn:)"
        )
    }

    private func fenceStatements() throws -> FenceStatements {
        guard let fenceSQL else {
            throw ZDDMError(
                .unsupported,
                operation: .writeIfNewer,
                message: "table \(mapping.table): fenced writes need New's role (pass versionColumn:, without change "
                    + "capture)"
            )
        }
        return fenceSQL
    }

    private func captureStatements(_ operation: StoreOperation) throws -> CaptureStatements {
        guard let captureSQL else {
            throw ZDDMError(
                .unsupported,
                operation: operation,
                message: "table \(mapping.table): only a store with change capture assigns versions (Old's role: pass "
                    + "changeCapture:)"
            )
        }
        return captureSQL
    }

    /// Collects rows `fromRow, tombstone, version, key, columns…`: a key's row wins over its tombstones, and among
    /// tombstones the largest version.
    private func collect(
        _ rows: [PostgresRow],
        into found: inout [Key: VersionedRecord<Value>],
        fromRows: inout Set<Key>,
        _ operation: StoreOperation
    ) throws {
        for row in rows {
            let cells = row.makeRandomAccess()
            let isRow = try cells[0].decode(Bool.self)
            let version = try PostgresBinding.version(cells[2])
            let key = try core.key(cells[3], for: operation)
            guard !fromRows.contains(key) else { continue }
            if !isRow, let held = found[key], held.version >= version { continue }
            let columns = (4..<(4 + mapping.valueColumns.count)).map { cells[$0] }
            let record = try core.record(tombstone: cells[1], columns: columns, for: operation)
            found[key] = VersionedRecord(record, version: version)
            if isRow { fromRows.insert(key) }
        }
    }
}

extension PostgresTableStore {
    /// The SQL of the versioned operations on a table with change capture, built once from validated, quoted names.
    struct CaptureStatements: Sendable {
        /// `fromRow, tombstone, version, key, columns…` of one key: its row, its deletion, its tombstone.
        let read: String
        /// The same for an array of keys.
        let readMany: String
        /// Removes the key's tombstone and upserts the row, returning the version the trigger gave it.
        let writeVersioned: String
        /// Deletes the row and the tombstone, returning the deletion's version, or the deleted version when
        /// nothing was deleted.
        let deleteVersioned: String

        init(_ mapping: RowMapping<Value>, keyKind: SQLKeyKind, capture: ChangeCaptureSchema) {
            let t = mapping.table.quoted
            let k = mapping.keyColumn.quoted
            let s = mapping.tombstoneTable.quoted
            let sk = mapping.tombstoneKeyColumn.quoted
            let ver = capture.versionColumn.quoted
            let deleted = capture.deletedTable.quoted
            let columns = mapping.valueColumns.map(\.quoted)
            let list = columns.joined(separator: ", ")
            (read, readMany) = versionedReads(
                mapping,
                keyKind: keyKind,
                version: ver,
                tombstones: [(deleted, "\"key\"", "version"), (s, sk, "0")]
            )
            let values = PostgresBinding.placeholders(from: 1, count: columns.count + 1)
            let updates = columns.map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", ")
            writeVersioned = """
                WITH tombstone AS (DELETE FROM \(s) WHERE \(sk) = $1) \
                INSERT INTO \(t) (\(k), \(list)) VALUES (\(values)) ON CONFLICT (\(k)) DO UPDATE SET \(updates) \
                RETURNING \(ver)
                """
            deleteVersioned = """
                WITH tombstone AS (DELETE FROM \(s) WHERE \(sk) = $1), \
                gone AS (DELETE FROM \(t) WHERE \(k) = $1 RETURNING \(ver) + 1 AS version) \
                SELECT version FROM gone \
                UNION ALL SELECT version FROM \(deleted) WHERE "key" = $1 AND NOT EXISTS (SELECT 1 FROM gone)
                """
        }
    }
}

extension PostgresTableStore {
    /// The SQL of New's role: versions kept in a column of the table and of the tombstone side table.
    struct FenceStatements: Sendable {
        /// Adds the version column to the table and to the tombstone side table where it is missing.
        let addVersionColumns: [String]
        /// `fromRow, tombstone, version, key, columns…` of one key: its row and its tombstone.
        let read: String
        /// The same for an array of keys.
        let readMany: String
        /// `key, version` of an array of keys, from both tables.
        let versions: String
        /// Upserts the row with its version.
        let upsertRow: String
        /// Upserts the tombstone with its version.
        let upsertTombstone: String

        init(_ mapping: RowMapping<Value>, keyKind: SQLKeyKind, versionColumn: SQLIdentifier) {
            let t = mapping.table.quoted
            let k = mapping.keyColumn.quoted
            let s = mapping.tombstoneTable.quoted
            let sk = mapping.tombstoneKeyColumn.quoted
            let ver = versionColumn.quoted
            let columns = mapping.valueColumns.map(\.quoted)
            let list = columns.joined(separator: ", ")
            let keyType = PostgresBinding.arrayElementType(keyKind)
            addVersionColumns = [t, s].map {
                "ALTER TABLE \($0) ADD COLUMN IF NOT EXISTS \(ver) bigint NOT NULL DEFAULT 0"
            }
            (read, readMany) = versionedReads(mapping, keyKind: keyKind, version: ver, tombstones: [(s, sk, ver)])
            versions = """
                SELECT \(k), \(ver) FROM \(t) WHERE \(k) = ANY($1::\(keyType)[]) \
                UNION ALL SELECT \(sk), \(ver) FROM \(s) WHERE \(sk) = ANY($1::\(keyType)[])
                """
            let values = PostgresBinding.placeholders(from: 1, count: columns.count + 2)
            let updates = (columns + [ver]).map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", ")
            upsertRow =
                "INSERT INTO \(t) (\(k), \(list), \(ver)) VALUES (\(values)) ON CONFLICT (\(k)) DO UPDATE SET \(updates)"
            upsertTombstone = """
                INSERT INTO \(s) (\(sk), \(ver)) VALUES ($1, $2) ON CONFLICT (\(sk)) DO UPDATE SET \(ver) = EXCLUDED.\(ver)
                """
        }
    }
}

/// The versioned reads of a table store, for one key and for an array of keys: rows `fromRow, tombstone, version,
/// key, columns…`, the table's row first, then each tombstone source (a table, its key column, the expression of
/// its version), all names already quoted.
private func versionedReads<Value>(
    _ mapping: RowMapping<Value>,
    keyKind: SQLKeyKind,
    version: String,
    tombstones: [(table: String, key: String, version: String)]
) -> (read: String, readMany: String) {
    let k = mapping.keyColumn.quoted
    let list = mapping.valueColumns.map(\.quoted).joined(separator: ", ")
    let nulls = mapping.valueColumns.map { _ in "NULL" }.joined(separator: ", ")
    func select(_ condition: (String) -> String) -> String {
        ([
            "SELECT true, false, \(version), \(k), \(list) FROM \(mapping.table.quoted) WHERE \(condition(k))"
        ]
            + tombstones.map {
                "SELECT false, true, \($0.version), \($0.key), \(nulls) FROM \($0.table) WHERE \(condition($0.key))"
            })
            .joined(separator: " UNION ALL ")
    }
    let keyType = PostgresBinding.arrayElementType(keyKind)
    return (select { "\($0) = $1" }, select { "\($0) = ANY($1::\(keyType)[])" })
}
