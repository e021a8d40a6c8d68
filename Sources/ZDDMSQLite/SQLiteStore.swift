import Foundation
import GRDB
public import ZDDM
public import ZDDMSQL

/// A key-value store in an SQLite table, with every capability a New store needs.
///
/// The table has three columns (names configurable):
///
/// | column | type | holds |
/// | --- | --- | --- |
/// | `key` | `TEXT`, `INTEGER` or `BLOB` (after the key type), primary key | the key |
/// | `value` | `BLOB`, nullable | the codec's bytes; `NULL` in a tombstone |
/// | `tombstone` | `INTEGER` 0 or 1 (a boolean) | 1 when the row records a deletion |
///
/// Tombstones are rows of the same table with `tombstone = 1`, so insert-if-absent, a single
/// `INSERT … ON CONFLICT (key) DO NOTHING`, respects them. Writes are upserts (`ON CONFLICT … DO UPDATE`) that
/// clear the flag. Keys are listed in SQLite's order: integers numerically, text and bytes by their bytes
/// (`BINARY` collation). Values are always bound as parameters; names are validated and quoted.
///
/// Values larger than ``maxValueSize`` once encoded are rejected with ``ZDDMError/Code/invalidArgument`` before
/// anything is written.
public struct SQLiteStore<Key: SQLKey, Value: Sendable>: KeyValueStore, CustomStringConvertible {
    /// The default largest encoded value: 16 MiB.
    public static var defaultMaxValueSize: Int { 16 << 20 }

    /// The database holding the table.
    public let database: SQLiteDatabase
    /// The table's names.
    public let schema: KeyValueTableSchema
    /// The largest encoded value accepted, in bytes.
    public let maxValueSize: Int
    private let codec: any ValueCodec<Value>
    private let sql: Statements

    public var capabilities: StoreCapabilities { [.atomicInsertIfAbsent, .tombstones, .orderedKeys, .batches] }

    /// Creates a store over a table, validating every name before any SQL runs.
    /// - Parameters:
    ///   - database: The database.
    ///   - table: The table's name.
    ///   - keyColumn: The key column; `key` by default.
    ///   - valueColumn: The value column; `value` by default.
    ///   - tombstoneColumn: The tombstone flag column; `tombstone` by default.
    ///   - codec: How values become bytes.
    ///   - maxValueSize: The largest encoded value accepted, in bytes; 16 MiB by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an invalid name or size.
    public init(
        database: SQLiteDatabase,
        table: String,
        keyColumn: String = "key",
        valueColumn: String = "value",
        tombstoneColumn: String = "tombstone",
        codec: some ValueCodec<Value>,
        maxValueSize: Int = Self.defaultMaxValueSize
    ) throws {
        guard maxValueSize >= 1 else {
            throw ZDDMError(.invalidArgument, message: "maxValueSize must be at least 1, got \(maxValueSize)")
        }
        self.database = database
        self.schema = try KeyValueTableSchema(
            table: table,
            keyColumn: keyColumn,
            valueColumn: valueColumn,
            tombstoneColumn: tombstoneColumn
        )
        self.maxValueSize = maxValueSize
        self.codec = codec
        self.sql = Statements(schema, keyKind: Key.sqlKeyKind)
    }

    /// Creates the table if it does not exist, then checks that its columns fit the key type.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when an existing table lacks a column
    ///   or its key column cannot hold this store's keys, or ``ZDDMError/Code/storeFailed`` when SQLite fails.
    public func prepare() async throws {
        try await run(.prepare) { db in
            try db.execute(sql: sql.create)
            try check(db)
        }
    }

    /// Checks, without changing anything, that the table exists and its columns fit the key type.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` naming what does not fit.
    public func checkSchema() async throws {
        try await run(.prepare) { db in try check(db) }
    }

    private func check(_ db: Database) throws {
        try SQLiteBinding.checkTable(
            db,
            table: schema.table,
            keyColumn: schema.keyColumn,
            keyKind: Key.sqlKeyKind,
            otherColumns: [schema.valueColumn, schema.tombstoneColumn]
        )
    }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        let row = try await run(.read, writing: false) { db in
            try Row.fetchOne(db, sql: sql.read, arguments: [bound]).map { row in
                (value: row[0] as DatabaseValue, tombstone: row[1] as Bool? ?? false)
            }
        }
        guard let row else { return nil }
        return try record(value: row.value, tombstone: row.tombstone, operation: .read)
    }

    public func write(_ key: Key, _ value: Value) async throws {
        let bytes = try encode(value, operation: .write)
        let arguments: StatementArguments = [SQLiteBinding.databaseValue(key.sqlKeyValue), bytes]
        try await run(.write) { db in try db.execute(sql: sql.upsert, arguments: arguments) }
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        let bytes = try encode(value, operation: .insertIfAbsent)
        let arguments: StatementArguments = [SQLiteBinding.databaseValue(key.sqlKeyValue), bytes]
        return try await run(.insertIfAbsent) { db in
            try db.execute(sql: sql.insertIfAbsent, arguments: arguments)
            return db.changesCount > 0
        }
    }

    public func delete(_ key: Key) async throws {
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        try await run(.delete) { db in try db.execute(sql: sql.delete, arguments: [bound]) }
    }

    public func writeTombstone(_ key: Key) async throws {
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        try await run(.writeTombstone) { db in try db.execute(sql: sql.tombstone, arguments: [bound]) }
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .listKeys, message: "limit must be at least 1, got \(limit)")
        }
        let statement: String
        let arguments: StatementArguments
        if let cursor {
            statement = sql.keysAfter
            arguments = [SQLiteBinding.databaseValue(cursor.sqlKeyValue), Int64(limit)]
        } else {
            statement = sql.keysFirst
            arguments = [Int64(limit)]
        }
        let values = try await run(.listKeys, writing: false) { db in
            try DatabaseValue.fetchAll(db, sql: statement, arguments: arguments)
        }
        return try values.map { try Key(sqlKeyValue: SQLiteBinding.keyValue($0)) }
    }

    public func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>] {
        guard !keys.isEmpty else { return [:] }
        let chunks = stride(from: 0, to: keys.count, by: Statements.batchSize).map {
            keys[$0..<min(keys.count, $0 + Statements.batchSize)].map { SQLiteBinding.databaseValue($0.sqlKeyValue) }
        }
        let rows = try await run(.readMany, writing: false) { db in
            var rows: [(key: DatabaseValue, value: DatabaseValue, tombstone: Bool)] = []
            for chunk in chunks {
                let fetched = try Row.fetchAll(db, sql: sql.readMany(chunk.count), arguments: StatementArguments(chunk))
                for row in fetched {
                    rows.append((row[0] as DatabaseValue, row[1] as DatabaseValue, row[2] as Bool? ?? false))
                }
            }
            return rows
        }
        var found: [Key: StoreRecord<Value>] = [:]
        for row in rows {
            let key = try Key(sqlKeyValue: SQLiteBinding.keyValue(row.key))
            found[key] = try record(value: row.value, tombstone: row.tombstone, operation: .readMany)
        }
        return found
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        guard !entries.isEmpty else { return [] }
        let encoded = try entries.map { entry in
            (
                key: entry.key, bound: SQLiteBinding.databaseValue(entry.key.sqlKeyValue),
                bytes: try encode(entry.value, operation: .insertManyIfAbsent)
            )
        }
        let pairs = encoded.map { (bound: $0.bound, bytes: $0.bytes) }
        let insertedIndexes = try await run(.insertManyIfAbsent) { db in
            let statement = try db.cachedStatement(sql: sql.insertIfAbsent)
            var inserted: [Int] = []
            for (index, pair) in pairs.enumerated() {
                try statement.execute(arguments: [pair.bound, pair.bytes])
                if db.changesCount > 0 { inserted.append(index) }
            }
            return inserted
        }
        return Set(insertedIndexes.map { encoded[$0].key })
    }

    public var description: String { "SQLiteStore(table \(schema.table) in \(database.url))" }

    // MARK: Helpers

    private func encode(_ value: Value, operation: StoreOperation) throws -> Data {
        let bytes: [UInt8]
        do {
            bytes = try codec.encode(value)
        } catch var error as ZDDMError {
            error.operation = error.operation ?? operation
            throw error
        }
        guard bytes.count <= maxValueSize else {
            throw ZDDMError(
                .invalidArgument,
                operation: operation,
                message: "the encoded value is \(bytes.count) bytes, more than the \(maxValueSize) bytes "
                    + "table \(schema.table) accepts; nothing was written"
            )
        }
        return Data(bytes)
    }

    private func record(value: DatabaseValue, tombstone: Bool, operation: StoreOperation) throws -> StoreRecord<Value> {
        if tombstone { return .tombstone }
        do {
            return .value(try codec.decode(try SQLiteBinding.bytes(value)))
        } catch var error as ZDDMError {
            error.operation = error.operation ?? operation
            error.message = "table \(schema.table): " + error.message
            throw error
        }
    }

    private func run<T: Sendable>(
        _ operation: StoreOperation,
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
            throw SQLiteErrors.wrap(error, operation: operation, table: schema.table, database: database.url)
        }
    }
}

extension SQLiteStore where Value: Codable {
    /// Creates a store over a table that keeps `Codable` values as JSON, validating every name before any SQL runs.
    /// - Parameters:
    ///   - database: The database.
    ///   - table: The table's name.
    ///   - keyColumn: The key column; `key` by default.
    ///   - valueColumn: The value column; `value` by default.
    ///   - tombstoneColumn: The tombstone flag column; `tombstone` by default.
    ///   - maxValueSize: The largest encoded value accepted, in bytes; 16 MiB by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an invalid name or size.
    public init(
        database: SQLiteDatabase,
        table: String,
        keyColumn: String = "key",
        valueColumn: String = "value",
        tombstoneColumn: String = "tombstone",
        maxValueSize: Int = Self.defaultMaxValueSize
    ) throws {
        try self.init(
            database: database,
            table: table,
            keyColumn: keyColumn,
            valueColumn: valueColumn,
            tombstoneColumn: tombstoneColumn,
            codec: JSONValueCodec<Value>(),
            maxValueSize: maxValueSize
        )
    }
}

extension SQLiteStore {
    /// The SQL text of a store, built once from validated, quoted names.
    struct Statements: Sendable {
        static var batchSize: Int { 500 }

        let create: String
        let read: String
        let upsert: String
        let insertIfAbsent: String
        let delete: String
        let tombstone: String
        let keysFirst: String
        let keysAfter: String
        private let readManyPrefix: String

        init(_ schema: KeyValueTableSchema, keyKind: SQLKeyKind) {
            let t = schema.table.quoted
            let k = schema.keyColumn.quoted
            let v = schema.valueColumn.quoted
            let d = schema.tombstoneColumn.quoted
            let ordered = keyKind == .text ? "\(k) COLLATE BINARY" : k
            create = """
                CREATE TABLE IF NOT EXISTS \(t) (\(k) \(SQLiteBinding.columnType(keyKind)) NOT NULL PRIMARY KEY, \
                \(v) BLOB, \(d) INTEGER NOT NULL DEFAULT 0 CHECK (\(d) IN (0, 1)))
                """
            read = "SELECT \(v), \(d) FROM \(t) WHERE \(k) = ?"
            upsert = """
                INSERT INTO \(t) (\(k), \(v), \(d)) VALUES (?, ?, 0) \
                ON CONFLICT (\(k)) DO UPDATE SET \(v) = excluded.\(v), \(d) = 0
                """
            insertIfAbsent = "INSERT INTO \(t) (\(k), \(v), \(d)) VALUES (?, ?, 0) ON CONFLICT (\(k)) DO NOTHING"
            delete = "DELETE FROM \(t) WHERE \(k) = ?"
            tombstone = """
                INSERT INTO \(t) (\(k), \(v), \(d)) VALUES (?, NULL, 1) \
                ON CONFLICT (\(k)) DO UPDATE SET \(v) = NULL, \(d) = 1
                """
            keysFirst = "SELECT \(k) FROM \(t) WHERE NOT \(d) ORDER BY \(ordered) LIMIT ?"
            keysAfter = "SELECT \(k) FROM \(t) WHERE NOT \(d) AND \(ordered) > ? ORDER BY \(ordered) LIMIT ?"
            readManyPrefix = "SELECT \(k), \(v), \(d) FROM \(t) WHERE \(k) IN ("
        }

        func readMany(_ count: Int) -> String {
            readManyPrefix + SQLiteBinding.placeholders(count) + ")"
        }
    }
}
