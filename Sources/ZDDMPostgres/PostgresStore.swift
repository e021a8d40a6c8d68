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
    public static var defaultMaxValueSize: Int { SQLStoreCore<Key, Value>.defaultMaxValueSize }

    /// The database holding the table.
    public let database: PostgresDatabase
    /// The table's names.
    public let schema: KeyValueTableSchema
    /// The largest encoded value accepted, in bytes.
    public var maxValueSize: Int { core.maxValueSize }
    private let core: SQLStoreCore<Key, Value>
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
        self.database = database
        self.schema = try KeyValueTableSchema(
            table: table,
            keyColumn: keyColumn,
            valueColumn: valueColumn,
            tombstoneColumn: tombstoneColumn
        )
        self.core = try SQLStoreCore(schema: schema, codec: codec, maxValueSize: maxValueSize)
        self.sql = Statements(schema, keyKind: Key.sqlKeyKind)
    }

    /// Creates the table if it does not exist, then checks that its columns fit the key type.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when an existing table lacks a column
    ///   or its key column cannot hold this store's keys, or ``ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func prepare() async throws {
        try await core.run(.prepare, on: database) {
            _ = try await query(sql.create, PostgresBindings())
            try await check()
        }
    }

    /// Checks, without changing anything, that the table exists and its columns fit the key type.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` naming what does not fit.
    public func checkSchema() async throws {
        try await core.run(.prepare, on: database) { try await check() }
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
        let binds = keyBinds(key)
        return try await core.run(.read, on: database) {
            guard let row = try await query(sql.read, binds).first else { return nil }
            let cells = row.makeRandomAccess()
            return try core.record(tombstone: cells[1], columns: [cells[0]], for: .read)
        }
    }

    public func write(_ key: Key, _ value: Value) async throws {
        let binds = try core.bindings(key, value, for: .write)
        try await core.run(.write, on: database) { _ = try await query(sql.upsert, binds) }
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        let binds = try core.bindings(key, value, for: .insertIfAbsent)
        return try await core.run(.insertIfAbsent, on: database) {
            !(try await query(sql.insertIfAbsent, binds)).isEmpty
        }
    }

    public func delete(_ key: Key) async throws {
        let binds = keyBinds(key)
        try await core.run(.delete, on: database) { _ = try await query(sql.delete, binds) }
    }

    public func writeTombstone(_ key: Key) async throws {
        let binds = keyBinds(key)
        try await core.run(.writeTombstone, on: database) { _ = try await query(sql.tombstone, binds) }
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        try await core.keys(after: cursor, limit: limit, on: database, first: sql.keysFirst, following: sql.keysAfter)
    }

    public func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>] {
        guard !keys.isEmpty else { return [:] }
        return try await core.run(.readMany, on: database) {
            var found: [Key: StoreRecord<Value>] = [:]
            for chunk in SQLStoreCore<Key, Value>.batches(keys, size: Statements.batchSize) {
                var binds = PostgresBindings(capacity: 1)
                PostgresBinding.appendArray(chunk.map(\.sqlKeyValue), kind: Key.sqlKeyKind, to: &binds)
                for row in try await query(sql.readMany, binds) {
                    let cells = row.makeRandomAccess()
                    found[try core.key(cells[0], for: .readMany)] = try core.record(
                        tombstone: cells[2],
                        columns: [cells[1]],
                        for: .readMany
                    )
                }
            }
            return found
        }
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        guard !entries.isEmpty else { return [] }
        // A codec's value is one bytes column.
        let encoded = try entries.map { entry in
            (key: entry.key, bytes: try core.encode(entry.value, for: .insertManyIfAbsent).first?.bytes ?? [])
        }
        return try await core.run(.insertManyIfAbsent, on: database) {
            var inserted: Set<Key> = []
            for chunk in SQLStoreCore<Key, Value>.batches(encoded, size: Statements.batchSize) {
                var binds = PostgresBindings(capacity: 2)
                PostgresBinding.appendArray(chunk.map(\.key.sqlKeyValue), kind: Key.sqlKeyKind, to: &binds)
                binds.append(chunk.map { ByteBuffer(bytes: $0.bytes) })
                for row in try await query(sql.insertMany, binds) {
                    inserted.insert(try core.key(row.makeRandomAccess()[0], for: .insertManyIfAbsent))
                }
            }
            return inserted
        }
    }

    public var description: String { "PostgresStore(table \(schema.table) on \(database.location))" }

    private func query(_ statement: String, _ binds: PostgresBindings) async throws -> [PostgresRow] {
        try await database.rows(statement, binds)
    }

    private func keyBinds(_ key: Key) -> PostgresBindings {
        PostgresBinding.bindings(key.sqlKeyValue)
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
