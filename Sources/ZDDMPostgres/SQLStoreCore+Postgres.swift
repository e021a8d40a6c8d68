import PostgresNIO
import ZDDM
import ZDDMSQL

/// What both PostgreSQL stores do with PostgresNIO around their own statements.
extension SQLStoreCore {
    /// Runs `body`, turning failures into the store's errors.
    func run<T>(
        _ operation: StoreOperation,
        on database: PostgresDatabase,
        _ body: () async throws -> T
    )
        async throws -> T
    {
        do {
            return try await body()
        } catch {
            throw wrap(
                error,
                operation: operation,
                database: "on \(database.server)",
                hint: PostgresErrors.hint(for: error),
                sanitized: PostgresErrors.sanitized
            )
        }
    }

    /// Lists keys in the table's order: `first` lists from the start (`LIMIT $1`), `following` after a cursor
    /// (`> $1 … LIMIT $2`).
    func keys(
        after cursor: Key?,
        limit: Int,
        on database: PostgresDatabase,
        first: String,
        following: String
    ) async throws -> [Key] {
        try checkListLimit(limit)
        var binds = PostgresBindings()
        if let cursor { PostgresBinding.append(cursor.sqlKeyValue, to: &binds) }
        binds.append(Int64(limit))
        let statement = cursor == nil ? first : following
        return try await run(.listKeys, on: database) {
            try await database.rows(statement, binds).map { try key($0.makeRandomAccess()[0], for: .listKeys) }
        }
    }

    /// The bindings of a row: the key, then the value's columns.
    func bindings(_ key: Key, _ value: Value, for operation: StoreOperation) throws -> PostgresBindings {
        let columns = try encode(value, for: operation)
        var binds = PostgresBindings(capacity: columns.count + 1)
        PostgresBinding.append(key.sqlKeyValue, to: &binds)
        for column in columns { PostgresBinding.append(column, to: &binds) }
        return binds
    }

    /// A key read back from a key column.
    func key(_ cell: PostgresCell, for operation: StoreOperation) throws -> Key {
        try key(for: operation) { try PostgresBinding.key(cell) }
    }

    /// A record read back from a row's tombstone flag and value columns.
    func record(
        tombstone: PostgresCell,
        columns: [PostgresCell],
        for operation: StoreOperation
    ) throws
        -> StoreRecord<Value>
    {
        try record(for: operation) {
            (tombstone: try PostgresBinding.value(tombstone), columns: try columns.map(PostgresBinding.value))
        }
    }
}

extension SQLStoreCore {
    /// Keys of the captured table and of its deleted-versions table after a cursor, in key order, each once; without
    /// change capture, the keys `first` and `following` list.
    func keysIncludingDeleted(
        after cursor: Key?,
        limit: Int,
        on database: PostgresDatabase,
        capture: ChangeCaptureSchema?,
        first: String,
        following: String
    ) async throws -> [Key] {
        let statements =
            capture?.keysIncludingDeletedStatements(
                collation: Key.sqlKeyKind == .text ? " COLLATE \"C\"" : "",
                placeholders: ("$1", "$2")
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

/// What both PostgreSQL stores do with their table's change capture.
extension SQLStoreCore {
    /// The change table's oldest entries.
    func capturedChanges(
        limit: Int,
        capture: PostgresChangeCapture?,
        on database: PostgresDatabase
    ) async throws
        -> [CapturedChange<Key>]
    {
        let capture = try requireCapture(capture)
        return try await run(.changes, on: database) {
            try await capture.changes(limit: limit) { try key($0, for: .changes) }
        }
    }

    /// Removes applied entries from the change table, each only while its sequence number, key and version match,
    /// in one statement.
    func removeCapturedChanges(
        _ changes: [CapturedChange<Key>],
        capture: PostgresChangeCapture?,
        on database: PostgresDatabase
    ) async throws {
        let table = try requireCapture(capture).schema.changeTable.quoted
        guard !changes.isEmpty else { return }
        var binds = PostgresBindings(capacity: 3)
        binds.append(changes.map(\.sequence))
        PostgresBinding.appendArray(changes.map(\.key.sqlKeyValue), kind: Key.sqlKeyKind, to: &binds)
        binds.append(try changes.map { try PostgresBinding.versionParameter($0.version, for: .changes) })
        let keyType = PostgresBinding.arrayElementType(Key.sqlKeyKind)
        let statement = """
            DELETE FROM \(table) WHERE (seq, "key", version) IN \
            (SELECT * FROM unnest($1::int8[], $2::\(keyType)[], $3::int8[]))
            """
        try await run(.changes, on: database) { _ = try await database.rows(statement, binds) }
    }

    /// The change table's size and the age of its oldest entry.
    func changeBacklog(capture: PostgresChangeCapture?, on database: PostgresDatabase) async throws -> ChangeBacklog {
        let capture = try requireCapture(capture)
        return try await run(.changes, on: database) { try await capture.changeBacklog() }
    }

    private func requireCapture(_ capture: PostgresChangeCapture?) throws -> PostgresChangeCapture {
        guard let capture else {
            throw ZDDMError(
                .unsupported,
                operation: .changes,
                message: "table \(table): this store captures no changes (pass changeCapture:)"
            )
        }
        return capture
    }
}
