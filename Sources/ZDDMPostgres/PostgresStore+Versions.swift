import PostgresNIO
public import ZDDM
import ZDDMSQL

extension PostgresStore {
    public func readVersioned(_ key: Key) async throws -> VersionedRecord<Value>? {
        let sql = try versionStatements(.read)
        let binds = keyBinds(key)
        return try await core.run(.read, on: database) {
            var found: VersionedRecord<Value>?
            for row in try await query(sql.read, binds) {
                let (_, record, isRow) = try versionedRecord(row, withKey: false, operation: .read)
                if found == nil || isRow { found = record }
            }
            return found
        }
    }

    public func readManyVersioned(_ keys: [Key]) async throws -> [Key: VersionedRecord<Value>] {
        let sql = try versionStatements(.readMany)
        guard !keys.isEmpty else { return [:] }
        return try await core.run(.readMany, on: database) {
            var found: [Key: VersionedRecord<Value>] = [:]
            var fromRows: Set<Key> = []
            for chunk in SQLStoreCore<Key, Value>.batches(keys, size: Statements.batchSize) {
                var binds = PostgresBindings(capacity: 1)
                PostgresBinding.appendArray(chunk.map(\.sqlKeyValue), kind: Key.sqlKeyKind, to: &binds)
                for row in try await query(sql.readMany, binds) {
                    let (key, record, isRow) = try versionedRecord(row, withKey: true, operation: .readMany)
                    guard let key, !fromRows.contains(key) else { continue }
                    found[key] = record
                    if isRow { fromRows.insert(key) }
                }
            }
            return found
        }
    }

    public func writeVersioned(_ key: Key, _ value: Value) async throws -> UInt64 {
        let sql = try captureStatements(.write)
        let binds = try core.bindings(key, value, for: .write)
        return try await core.run(.write, on: database) {
            guard let row = try await change(sql.writeVersioned, binds).first else {
                throw ZDDMError(.storeFailed, message: "the upsert returned no version")
            }
            return try PostgresBinding.version(row.makeRandomAccess()[0])
        }
    }

    public func deleteVersioned(_ key: Key) async throws -> UInt64 {
        let sql = try captureStatements(.delete)
        let binds = keyBinds(key)
        return try await core.run(.delete, on: database) {
            guard let row = try await query(sql.deleteVersioned, binds).first else { return 0 }
            return try PostgresBinding.version(row.makeRandomAccess()[0])
        }
    }

    public func writeIfNewer(_ key: Key, _ record: VersionedRecord<Value>) async throws -> Bool {
        let sql = try fenceStatements()
        var binds = PostgresBindings(capacity: 4)
        PostgresBinding.append(key.sqlKeyValue, to: &binds)
        if let value = record.value {
            for column in try core.encode(value, for: .writeIfNewer) { PostgresBinding.append(column, to: &binds) }
        } else {
            binds.appendNull()
        }
        binds.append(record.record.isTombstone)
        binds.append(try PostgresBinding.versionParameter(record.version, for: .writeIfNewer))
        return try await core.run(.writeIfNewer, on: database) {
            !(try await query(sql.writeIfNewer, binds)).isEmpty
        }
    }

    public func writeManyIfNewer(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> Set<Key> {
        let sql = try fenceStatements()
        guard !entries.isEmpty else { return [] }
        if entries.count >= VersionStatements.copyThreshold { return try await copyManyIfNewer(entries, sql) }
        // A key given twice keeps its newest record (one statement cannot update a row twice).
        var newest: [Key: Int] = [:]
        for (index, entry) in entries.enumerated() {
            if let held = newest[entry.key], entries[held].record.version >= entry.record.version { continue }
            newest[entry.key] = index
        }
        let rows = try newest.values.sorted().map { index in
            let entry = entries[index]
            return (
                key: entry.key,
                bytes: try entry.record.value.map { try core.encode($0, for: .writeIfNewer).first?.bytes ?? [] } ?? [],
                tombstone: entry.record.record.isTombstone,
                version: try PostgresBinding.versionParameter(entry.record.version, for: .writeIfNewer)
            )
        }
        return try await core.run(.writeIfNewer, on: database) {
            var stored: Set<Key> = []
            for chunk in SQLStoreCore<Key, Value>.batches(rows, size: Statements.batchSize) {
                var binds = PostgresBindings(capacity: 4)
                PostgresBinding.appendArray(chunk.map(\.key.sqlKeyValue), kind: Key.sqlKeyKind, to: &binds)
                binds.append(chunk.map { ByteBuffer(bytes: $0.bytes) })
                binds.append(chunk.map(\.tombstone))
                binds.append(chunk.map(\.version))
                for row in try await query(sql.writeManyIfNewer, binds) {
                    stored.insert(try core.key(row.makeRandomAccess()[0], for: .writeIfNewer))
                }
            }
            return stored
        }
    }

    /// The fenced writes of a large batch: the records are copied (`COPY … FROM STDIN`, text format) into the
    /// connection's temporary staging table, then upserted from there by one statement, in one transaction; the
    /// staging table is emptied at commit. A key given twice keeps its newest record (the first of equal ones).
    private func copyManyIfNewer(
        _ entries: [(key: Key, record: VersionedRecord<Value>)],
        _ sql: VersionStatements
    ) async throws -> Set<Key> {
        let core = core
        return try await copyStaged(entries, sql, then: sql.copyManyIfNewer) { result in
            var stored: Set<Key> = []
            for try await row in result {
                stored.insert(try core.key(row.makeRandomAccess()[0], for: .writeIfNewer))
            }
            return stored
        }
    }

    /// A large batch is first tried as one `COPY` straight into the table, in a transaction: where New holds none
    /// of the keys (a backfill into a fresh New, mostly), inserting is what the fence would do, at the cost of
    /// PostgreSQL's own `COPY`. If any key is present (a unique violation, the whole `COPY` rolled back), the batch
    /// goes through the staging table and the fenced insert, and so do the next 32 large batches.
    public func writeManyIfNewerCounting(
        _ entries: [(key: Key, record: VersionedRecord<Value>)]
    ) async throws -> FencedWriteCount {
        let sql = try fenceStatements()
        guard entries.count >= VersionStatements.copyThreshold else {
            let stored = try await writeManyIfNewer(entries)
            let tombstones = Set(entries.lazy.filter { stored.contains($0.key) && $0.record.value == nil }.map(\.key))
            return FencedWriteCount(values: stored.count - tombstones.count, tombstones: tombstones.count)
        }
        if directCopy.mayTry() {
            if let count = try await copyDirect(entries) { return count }
            directCopy.conflicted()
        }
        return try await copyStaged(entries, sql, then: sql.copyManyIfNewerCounting) { result in
            var count = FencedWriteCount(values: 0, tombstones: 0)
            for try await (values, tombstones) in result.decode((Int64, Int64).self) {
                count = FencedWriteCount(values: Int(values), tombstones: Int(tombstones))
            }
            return count
        }
    }

    /// One `COPY` (a buffer at a time) of the records straight into the table, in one transaction.
    /// - Returns: What was stored, or `nil` (nothing written) when the table holds one of the keys.
    private func copyDirect(_ entries: [(key: Key, record: VersionedRecord<Value>)]) async throws -> FencedWriteCount? {
        let (chunks, tombstones) = try copyText(entries, ordinals: false)
        let logger = database.logger
        let table = schema.table.name
        let columns =
            [schema.keyColumn, schema.valueColumn, schema.tombstoneColumn].map(\.name)
            + [versionColumn?.name ?? "version"]
        return try await core.run(.writeIfNewer, on: database) {
            do {
                return try await database.withTransaction { connection in
                    for chunk in chunks {
                        try await connection.copyFrom(
                            table: table,
                            columns: columns,
                            format: .text(.init()),
                            logger: logger
                        ) { writer in try await writer.write(chunk) }
                    }
                    return FencedWriteCount(values: entries.count - tombstones, tombstones: tombstones)
                }
            } catch  where PostgresErrors.sqlState(error) == "23505" {
                return nil
            }
        }
    }

    /// The records in `COPY`'s text format: key, value, tombstone flag, version, and (for the staging table) the
    /// record's position in the batch; and how many of them have no value (tombstones).
    private func copyText(
        _ entries: [(key: Key, record: VersionedRecord<Value>)],
        ordinals: Bool
    ) throws -> (chunks: [ByteBuffer], withoutValue: Int) {
        // Everything is encoded (and checked) before a connection is taken, so bad input writes nothing.
        var rows = PostgresCopyText(expectedBytes: entries.count * 64)
        var withoutValue = 0
        for ordinal in entries.indices {
            let entry = entries[ordinal]
            rows.appendKey(entry.key.sqlKeyValue)
            if let value = entry.record.value {
                // A codec's value is one bytes column.
                rows.appendBytes(try core.encode(value, for: .writeIfNewer).first?.bytes ?? [])
            } else {
                rows.appendNull()
                withoutValue += 1
            }
            rows.appendBool(entry.record.record.isTombstone)
            rows.appendInteger(try PostgresBinding.versionParameter(entry.record.version, for: .writeIfNewer))
            if ordinals { rows.appendInteger(Int64(ordinal)) }
            rows.endRow()
        }
        guard !rows.containsNul else {
            throw ZDDMError(
                .invalidArgument,
                operation: .writeIfNewer,
                message: "a text key holds a NUL character, which PostgreSQL's text cannot store; nothing was written"
            )
        }
        return (rows.finish(), withoutValue)
    }

    /// Sends the records through `COPY` into the staging table and runs `statement` (the fenced insert from it) in
    /// the same transaction, handing its rows to `collect`.
    private func copyStaged<R: Sendable>(
        _ entries: [(key: Key, record: VersionedRecord<Value>)],
        _ sql: VersionStatements,
        then statement: String,
        collect: @escaping @Sendable (PostgresRowSequence) async throws -> R
    ) async throws -> R {
        // Everything is encoded (and checked) before a connection is taken, so bad input writes nothing.
        let chunks = try copyText(entries, ordinals: true).chunks
        let logger = database.logger
        let core = core
        return try await core.run(.writeIfNewer, on: database) {
            try await database.withTransaction { connection in
                try await connection.query(PostgresQuery(unsafeSQL: sql.createStaging), logger: logger)
                // One `COPY` a buffer, each sent by one write: a second write waits for the socket to drain, and an
                // error from the server during that wait would never end it. `copyFrom` quotes the names it is
                // given: they are fixed identifiers, never input.
                for chunk in chunks {
                    try await connection.copyFrom(
                        table: sql.stagingTable,
                        columns: VersionStatements.stagingColumns,
                        format: .text(.init()),
                        logger: logger
                    ) { writer in try await writer.write(chunk) }
                }
                return try await collect(
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                )
            }
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

    private func versionStatements(_ operation: StoreOperation) throws -> VersionStatements {
        guard let versionSQL else {
            throw ZDDMError(
                .unsupported,
                operation: operation,
                message: "table \(schema.table): this store keeps no versions (pass versionColumn:)"
            )
        }
        return versionSQL
    }

    private func captureStatements(_ operation: StoreOperation) throws -> VersionStatements {
        let sql = try versionStatements(operation)
        guard changeCapture != nil else {
            throw ZDDMError(
                .unsupported,
                operation: operation,
                message: "table \(schema.table): only a store with change capture assigns versions (Old's role)"
            )
        }
        return sql
    }

    private func fenceStatements() throws -> VersionStatements {
        let sql = try versionStatements(.writeIfNewer)
        guard changeCapture == nil else {
            throw ZDDMError(
                .unsupported,
                operation: .writeIfNewer,
                message: "table \(schema.table) has change capture, whose triggers assign the versions; "
                    + "fenced writes need a table without it (New's role)"
            )
        }
        return sql
    }

    /// Decodes a row of the versioned reads: `[key,] value, tombstone, version, fromRow`.
    private func versionedRecord(
        _ row: PostgresRow,
        withKey: Bool,
        operation: StoreOperation
    ) throws -> (Key?, VersionedRecord<Value>, Bool) {
        let cells = row.makeRandomAccess()
        let key = withKey ? try core.key(cells[0], for: operation) : nil
        let first = withKey ? 1 : 0
        let record = try core.record(tombstone: cells[first + 1], columns: [cells[first]], for: operation)
        let version = try PostgresBinding.version(cells[first + 2])
        let isRow = try cells[first + 3].decode(Bool.self)
        return (key, VersionedRecord(record, version: version), isRow)
    }
}

extension PostgresStore {
    /// The SQL of the versioned operations, built once from validated, quoted names.
    struct VersionStatements: Sendable {
        /// `value, tombstone, version, fromRow` of one key: its row, and (with change capture) its deletion.
        let read: String
        /// `key, value, tombstone, version, fromRow` of many keys.
        let readMany: String
        /// The upsert returning the version the trigger gave the row.
        let writeVersioned: String
        /// The delete returning the deletion's version, or the deleted version when nothing was deleted.
        let deleteVersioned: String
        /// The fenced upsert of one record: `key, value, tombstone, version`.
        let writeIfNewer: String
        /// The fenced upsert of arrays of keys, values, tombstone flags and versions.
        let writeManyIfNewer: String
        /// The unqualified name of the temporary staging table of ``copyManyIfNewer``, one per key kind (its
        /// columns depend on nothing else): a fixed, valid identifier.
        let stagingTable: String
        /// Creates the staging table in the connection's temporary schema unless it exists; rows vanish at commit.
        let createStaging: String
        /// The fenced upsert of the staging table's rows, each key's newest (then first) record, returning the keys
        /// stored.
        let copyManyIfNewer: String
        /// The same upsert, returning only how many values and tombstones it stored.
        let copyManyIfNewerCounting: String

        /// The smallest batch that takes the `COPY` path; smaller ones are one `unnest` statement.
        static var copyThreshold: Int { 64 }

        /// The staging table's columns, in the order the rows give them.
        static var stagingColumns: [String] { ["key", "value", "tombstone", "version", "ordinal"] }

        init(
            _ schema: KeyValueTableSchema,
            keyKind: SQLKeyKind,
            versionColumn: SQLIdentifier,
            capture: ChangeCaptureSchema?
        ) {
            let t = schema.table.quoted
            let k = schema.keyColumn.quoted
            let v = schema.valueColumn.quoted
            let d = schema.tombstoneColumn.quoted
            let ver = versionColumn.quoted
            let keyType = PostgresBinding.arrayElementType(keyKind)
            if let capture {
                let deleted = capture.deletedTable.quoted
                read = """
                    SELECT \(v), \(d), \(ver), true FROM \(t) WHERE \(k) = $1 \
                    UNION ALL SELECT NULL, true, version, false FROM \(deleted) WHERE "key" = $1
                    """
                readMany = """
                    SELECT \(k), \(v), \(d), \(ver), true FROM \(t) WHERE \(k) = ANY($1::\(keyType)[]) \
                    UNION ALL SELECT "key", NULL, true, version, false FROM \(deleted) \
                    WHERE "key" = ANY($1::\(keyType)[])
                    """
                deleteVersioned = """
                    WITH gone AS (DELETE FROM \(t) WHERE \(k) = $1 RETURNING \(ver) + 1 AS version) \
                    SELECT version FROM gone \
                    UNION ALL SELECT version FROM \(deleted) WHERE "key" = $1 AND NOT EXISTS (SELECT 1 FROM gone)
                    """
            } else {
                read = "SELECT \(v), \(d), \(ver), true FROM \(t) WHERE \(k) = $1"
                readMany = "SELECT \(k), \(v), \(d), \(ver), true FROM \(t) WHERE \(k) = ANY($1::\(keyType)[])"
                deleteVersioned = ""
            }
            writeVersioned = """
                INSERT INTO \(t) (\(k), \(v), \(d)) VALUES ($1, $2, false) \
                ON CONFLICT (\(k)) DO UPDATE SET \(v) = EXCLUDED.\(v), \(d) = false RETURNING \(ver)
                """
            let fence = """
                ON CONFLICT (\(k)) DO UPDATE SET \(v) = EXCLUDED.\(v), \(d) = EXCLUDED.\(d), \(ver) = EXCLUDED.\(ver) \
                WHERE stored.\(ver) < EXCLUDED.\(ver)
                """
            writeIfNewer = """
                INSERT INTO \(t) AS stored (\(k), \(v), \(d), \(ver)) VALUES ($1, $2, $3, $4) \(fence) RETURNING true
                """
            writeManyIfNewer = """
                INSERT INTO \(t) AS stored (\(k), \(v), \(d), \(ver)) \
                SELECT batch.key, CASE WHEN batch.tombstone THEN NULL ELSE batch.value END, batch.tombstone, \
                batch.version \
                FROM unnest($1::\(keyType)[], $2::bytea[], $3::bool[], $4::int8[]) \
                AS batch(key, value, tombstone, version) \(fence) RETURNING stored.\(k)
                """
            stagingTable =
                switch keyKind {
                case .text: "zddm_stage_text"
                case .integer: "zddm_stage_bigint"
                case .bytes: "zddm_stage_bytea"
                }
            createStaging = """
                CREATE TEMPORARY TABLE IF NOT EXISTS "\(stagingTable)" (key \(PostgresBinding.columnType(keyKind)), \
                value bytea, tombstone boolean, version bigint, ordinal bigint) ON COMMIT DELETE ROWS
                """
            copyManyIfNewer = """
                INSERT INTO \(t) AS stored (\(k), \(v), \(d), \(ver)) \
                SELECT DISTINCT ON (batch.key) batch.key, batch.value, batch.tombstone, batch.version \
                FROM pg_temp."\(stagingTable)" AS batch ORDER BY batch.key, batch.version DESC, batch.ordinal \
                \(fence) RETURNING stored.\(k)
                """
            copyManyIfNewerCounting = """
                WITH zddm_stored AS (INSERT INTO \(t) AS stored (\(k), \(v), \(d), \(ver)) \
                SELECT DISTINCT ON (batch.key) batch.key, batch.value, batch.tombstone, batch.version \
                FROM pg_temp."\(stagingTable)" AS batch ORDER BY batch.key, batch.version DESC, batch.ordinal \
                \(fence) RETURNING stored.\(d) AS tombstone) \
                SELECT count(*) FILTER (WHERE NOT tombstone), count(*) FILTER (WHERE tombstone) FROM zddm_stored
                """
        }
    }
}
