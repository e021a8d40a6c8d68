import GRDB
import ZDDM
import ZDDMSQL

/// What both SQLite stores do with GRDB around their own statements.
extension SQLStoreCore {
    /// Runs `body` in a write transaction (or a read), turning failures into the store's errors.
    func run<T: Sendable>(
        _ operation: StoreOperation,
        on database: SQLiteDatabase,
        writing: Bool = true,
        _ body: @escaping @Sendable (Database) throws -> T
    ) async throws -> T {
        do {
            if writing {
                return try await database.writer.write(body)
            } else {
                return try await database.writer.read(body)
            }
        } catch {
            throw wrap(
                error,
                operation: operation,
                database: "in \(database.url)",
                hint: SQLiteErrors.hint(for: error),
                sanitized: SQLiteErrors.sanitized
            )
        }
    }

    /// Lists keys in the table's order: `first` lists from the start (`LIMIT ?`), `following` after a cursor
    /// (`> ? … LIMIT ?`).
    func keys(
        after cursor: Key?,
        limit: Int,
        on database: SQLiteDatabase,
        first: String,
        following: String
    ) async throws -> [Key] {
        try checkListLimit(limit)
        var arguments: [DatabaseValue] = []
        if let cursor { arguments.append(SQLiteBinding.databaseValue(cursor.sqlKeyValue)) }
        arguments.append(Int64(limit).databaseValue)
        let statement = cursor == nil ? first : following
        let bound = StatementArguments(arguments)
        let values = try await run(.listKeys, on: database, writing: false) { db in
            try DatabaseValue.fetchAll(db, sql: statement, arguments: bound)
        }
        return try values.map { try key($0, for: .listKeys) }
    }

    /// Keys as statement arguments, in batches of at most `size`.
    func boundBatches(_ keys: [Key], size: Int) -> [[DatabaseValue]] {
        Self.batches(keys.map { SQLiteBinding.databaseValue($0.sqlKeyValue) }, size: size).map(Array.init)
    }

    /// The statement arguments of a row: the key, then the value's columns.
    func arguments(_ key: Key, _ value: Value, for operation: StoreOperation) throws -> StatementArguments {
        let columns = try encode(value, for: operation)
        return StatementArguments(
            [SQLiteBinding.databaseValue(key.sqlKeyValue)] + columns.map(SQLiteBinding.databaseValue)
        )
    }

    /// A key read back from a key column.
    func key(_ value: DatabaseValue, for operation: StoreOperation) throws -> Key {
        try key(for: operation) { try SQLiteBinding.keyValue(value) }
    }

    /// A value read back from its columns.
    func value(_ columns: [DatabaseValue], for operation: StoreOperation) throws -> Value {
        try value(for: operation) { columns.map(SQLiteBinding.sqlValue) }
    }

    /// A record read back from a key-value table's value and tombstone columns.
    func record(
        value: DatabaseValue,
        tombstone: DatabaseValue,
        for operation: StoreOperation
    ) throws
        -> StoreRecord<Value>
    {
        try record(for: operation) {
            (tombstone: SQLiteBinding.sqlValue(tombstone), columns: [SQLiteBinding.sqlValue(value)])
        }
    }
}
