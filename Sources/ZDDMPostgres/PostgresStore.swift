import Foundation
import PostgresNIO
public import ZDDM
public import ZDDMSQL

/// A key-value store in a PostgreSQL table, with every capability a New store needs.
///
/// The table has three columns (names configurable):
///
/// | column | type | holds |
/// | --- | --- | --- |
/// | `key` | `text COLLATE "C"`, `bigint` or `bytea` (after the key type), primary key | the key |
/// | `value` | `bytea`, nullable | the codec's bytes; `NULL` in a tombstone |
/// | `tombstone` | `boolean` | `true` when the row records a deletion |
///
/// Tombstones are rows of the same table with `tombstone = true`, so insert-if-absent, a single
/// `INSERT … ON CONFLICT (key) DO NOTHING RETURNING`, respects them. Writes are upserts
/// (`ON CONFLICT … DO UPDATE`) that clear the flag; each operation is one statement. Keys are listed in byte
/// order for text (`COLLATE "C"`, as SQLite's `BINARY`), numerically for integers, by bytes for `bytea`. Values
/// are always bound as parameters; names are validated and quoted.
///
/// Values larger than ``maxValueSize`` once encoded are rejected with ``ZDDMError/Code/invalidArgument`` before
/// anything is sent.
public struct PostgresStore<Key: SQLKey, Value: Sendable>: KeyValueStore, CustomStringConvertible {
    /// The default largest encoded value: 16 MiB.
    public static var defaultMaxValueSize: Int { 16 << 20 }

    /// The database holding the table.
    public let database: PostgresDatabase
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
    ///   - table: The table's name (in the connection's search path).
    ///   - keyColumn: The key column; `key` by default.
    ///   - valueColumn: The value column; `value` by default.
    ///   - tombstoneColumn: The tombstone flag column; `tombstone` by default.
    ///   - codec: How values become bytes.
    ///   - maxValueSize: The largest encoded value accepted, in bytes; 16 MiB by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an invalid name or size.
    public init(
        database: PostgresDatabase,
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
    ///   or its key column cannot hold this store's keys, or ``ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func prepare() async throws {
        try await run(.prepare) {
            try await database.client.query(PostgresQuery(unsafeSQL: sql.create), logger: database.logger)
            try await check()
        }
    }

    /// Checks, without changing anything, that the table exists and its columns fit the key type.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` naming what does not fit.
    public func checkSchema() async throws {
        try await run(.prepare) { try await check() }
    }

    private func check() async throws {
        try await PostgresBinding.checkTable(
            database,
            table: schema.table,
            keyColumn: schema.keyColumn,
            keyKind: Key.sqlKeyKind,
            otherColumns: [schema.valueColumn, schema.tombstoneColumn]
        )
    }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        var binds = PostgresBindings()
        PostgresBinding.append(key.sqlKeyValue, to: &binds)
        return try await run(.read) {
            let rows = try await query(sql.read, binds)
            guard let row = rows.first else { return nil }
            let cells = row.makeRandomAccess()
            return try record(value: cells[0], tombstone: try cells[1].decode(Bool.self), operation: .read)
        }
    }

    public func write(_ key: Key, _ value: Value) async throws {
        var binds = PostgresBindings()
        PostgresBinding.append(key.sqlKeyValue, to: &binds)
        binds.append(try encode(value, operation: .write))
        try await run(.write) { _ = try await query(sql.upsert, binds) }
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        var binds = PostgresBindings()
        PostgresBinding.append(key.sqlKeyValue, to: &binds)
        binds.append(try encode(value, operation: .insertIfAbsent))
        return try await run(.insertIfAbsent) { !(try await query(sql.insertIfAbsent, binds)).isEmpty }
    }

    public func delete(_ key: Key) async throws {
        var binds = PostgresBindings()
        PostgresBinding.append(key.sqlKeyValue, to: &binds)
        try await run(.delete) { _ = try await query(sql.delete, binds) }
    }

    public func writeTombstone(_ key: Key) async throws {
        var binds = PostgresBindings()
        PostgresBinding.append(key.sqlKeyValue, to: &binds)
        try await run(.writeTombstone) { _ = try await query(sql.tombstone, binds) }
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .listKeys, message: "limit must be at least 1, got \(limit)")
        }
        var binds = PostgresBindings()
        if let cursor { PostgresBinding.append(cursor.sqlKeyValue, to: &binds) }
        binds.append(Int64(limit))
        let statement = cursor == nil ? sql.keysFirst : sql.keysAfter
        return try await run(.listKeys) {
            try await query(statement, binds).map { row in
                try Key(sqlKeyValue: PostgresBinding.key(row.makeRandomAccess()[0]))
            }
        }
    }

    public func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>] {
        guard !keys.isEmpty else { return [:] }
        return try await run(.readMany) {
            var found: [Key: StoreRecord<Value>] = [:]
            for start in stride(from: 0, to: keys.count, by: Statements.batchSize) {
                let chunk = keys[start..<min(keys.count, start + Statements.batchSize)]
                var binds = PostgresBindings(capacity: 1)
                PostgresBinding.appendArray(chunk.map(\.sqlKeyValue), kind: Key.sqlKeyKind, to: &binds)
                for row in try await query(sql.readMany, binds) {
                    let cells = row.makeRandomAccess()
                    let key = try Key(sqlKeyValue: PostgresBinding.key(cells[0]))
                    found[key] = try record(
                        value: cells[1],
                        tombstone: try cells[2].decode(Bool.self),
                        operation: .readMany
                    )
                }
            }
            return found
        }
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        guard !entries.isEmpty else { return [] }
        let encoded = try entries.map { (key: $0.key, bytes: try encode($0.value, operation: .insertManyIfAbsent)) }
        return try await run(.insertManyIfAbsent) {
            var inserted: Set<Key> = []
            for start in stride(from: 0, to: encoded.count, by: Statements.batchSize) {
                let chunk = encoded[start..<min(encoded.count, start + Statements.batchSize)]
                var binds = PostgresBindings(capacity: 2)
                PostgresBinding.appendArray(chunk.map(\.key.sqlKeyValue), kind: Key.sqlKeyKind, to: &binds)
                binds.append(chunk.map(\.bytes))
                for row in try await query(sql.insertMany, binds) {
                    inserted.insert(try Key(sqlKeyValue: PostgresBinding.key(row.makeRandomAccess()[0])))
                }
            }
            return inserted
        }
    }

    public var description: String { "PostgresStore(table \(schema.table) on \(database.url))" }

    // MARK: Helpers

    private func query(_ statement: String, _ binds: PostgresBindings) async throws -> [PostgresRow] {
        try await database.client.query(PostgresQuery(unsafeSQL: statement, binds: binds), logger: database.logger)
            .collect()
    }

    private func encode(_ value: Value, operation: StoreOperation) throws -> ByteBuffer {
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
        return ByteBuffer(bytes: bytes)
    }

    private func record(value: PostgresCell, tombstone: Bool, operation: StoreOperation) throws -> StoreRecord<Value> {
        if tombstone { return .tombstone }
        do {
            return .value(try codec.decode(try PostgresBinding.bytes(value)))
        } catch var error as ZDDMError {
            error.operation = error.operation ?? operation
            error.message = "table \(schema.table): " + error.message
            throw error
        }
    }

    private func run<T>(_ operation: StoreOperation, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw PostgresErrors.wrap(error, operation: operation, table: schema.table, server: database.server)
        }
    }
}

extension PostgresStore where Value: Codable {
    /// Creates a store over a table that keeps `Codable` values as JSON, validating every name before any SQL runs.
    /// - Parameters:
    ///   - database: The database.
    ///   - table: The table's name (in the connection's search path).
    ///   - keyColumn: The key column; `key` by default.
    ///   - valueColumn: The value column; `value` by default.
    ///   - tombstoneColumn: The tombstone flag column; `tombstone` by default.
    ///   - maxValueSize: The largest encoded value accepted, in bytes; 16 MiB by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an invalid name or size.
    public init(
        database: PostgresDatabase,
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

extension PostgresStore {
    /// The SQL text of a store, built once from validated, quoted names.
    struct Statements: Sendable {
        /// Rows per batch statement (keys and values travel as two array parameters).
        static var batchSize: Int { 5_000 }

        let create: String
        let read: String
        let upsert: String
        let insertIfAbsent: String
        let delete: String
        let tombstone: String
        let keysFirst: String
        let keysAfter: String
        let readMany: String
        let insertMany: String

        init(_ schema: KeyValueTableSchema, keyKind: SQLKeyKind) {
            let t = schema.table.quoted
            let k = schema.keyColumn.quoted
            let v = schema.valueColumn.quoted
            let d = schema.tombstoneColumn.quoted
            let ordered = keyKind == .text ? "\(k) COLLATE \"C\"" : k
            create = """
                CREATE TABLE IF NOT EXISTS \(t) (\(k) \(PostgresBinding.columnType(keyKind)) PRIMARY KEY, \
                \(v) bytea, \(d) boolean NOT NULL DEFAULT false)
                """
            read = "SELECT \(v), \(d) FROM \(t) WHERE \(k) = $1"
            upsert = """
                INSERT INTO \(t) (\(k), \(v), \(d)) VALUES ($1, $2, false) \
                ON CONFLICT (\(k)) DO UPDATE SET \(v) = EXCLUDED.\(v), \(d) = false
                """
            insertIfAbsent = """
                INSERT INTO \(t) (\(k), \(v), \(d)) VALUES ($1, $2, false) ON CONFLICT (\(k)) DO NOTHING RETURNING true
                """
            delete = "DELETE FROM \(t) WHERE \(k) = $1"
            tombstone = """
                INSERT INTO \(t) (\(k), \(v), \(d)) VALUES ($1, NULL, true) \
                ON CONFLICT (\(k)) DO UPDATE SET \(v) = NULL, \(d) = true
                """
            keysFirst = "SELECT \(k) FROM \(t) WHERE NOT \(d) ORDER BY \(ordered) LIMIT $1"
            keysAfter = "SELECT \(k) FROM \(t) WHERE NOT \(d) AND \(ordered) > $1 ORDER BY \(ordered) LIMIT $2"
            let keyType =
                switch keyKind {
                case .text: "text"
                case .integer: "bigint"
                case .bytes: "bytea"
                }
            readMany = "SELECT \(k), \(v), \(d) FROM \(t) WHERE \(k) = ANY($1::\(keyType)[])"
            insertMany = """
                INSERT INTO \(t) (\(k), \(v), \(d)) SELECT batch.key, batch.value, false \
                FROM unnest($1::\(keyType)[], $2::bytea[]) AS batch(key, value) \
                ON CONFLICT (\(k)) DO NOTHING RETURNING \(k)
                """
        }

    }
}
