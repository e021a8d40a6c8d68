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
///
/// ## Versions
///
/// With a version column (`versionColumn:`, for example `zddm_version`; `INTEGER NOT NULL DEFAULT 0`) the store declares
/// ``ZDDM/StoreCapabilities/versions`` and plays one of two roles:
///
/// - **New** (without change capture): ``readVersioned(_:)`` returns the row's record and version, and
///   ``writeIfNewer(_:_:)`` is the fence, one statement
///   `INSERT … ON CONFLICT (key) DO UPDATE … WHERE stored.version < excluded.version`, tombstones included. Plain
///   writes (``write(_:_:)``, ``insertIfAbsent(_:_:)``, ``writeTombstone(_:)``) leave a row's version as it is, and a
///   row they create has version 0, below every version Old gives. Old's operations (``writeVersioned(_:_:)``,
///   ``deleteVersioned(_:)``, the change table) throw ``ZDDMError/Code/unsupported``.
/// - **Old** (with `changeCapture: true`): ``prepare()`` installs ``SQLiteChangeCapture`` on the table, whose
///   triggers give every change, by any writer, a larger version and a change-table entry; the store declares
///   ``ZDDM/StoreCapabilities/changeCapture`` and implements ``writeVersioned(_:_:)``, ``deleteVersioned(_:)``,
///   ``capturedChanges(limit:)`` and the rest. Plain writes get versions too: ``write(_:_:)``,
///   ``writeTombstone(_:)`` and ``writeVersioned(_:_:)`` are one `UPDATE` of the row, or one `INSERT` for a key
///   without one, that sets the next version itself, so the triggers only append the change entry. The fence throws
///   ``ZDDMError/Code/unsupported`` (the triggers assign versions, so the table cannot keep given ones).
public struct SQLiteStore<Key: SQLKey, Value: Sendable>: KeyValueStore, CustomStringConvertible {
    /// The default largest encoded value: 16 MiB.
    public static var defaultMaxValueSize: Int { SQLStoreCore<Key, Value>.defaultMaxValueSize }

    /// The database holding the table.
    public let database: SQLiteDatabase
    /// The table's names.
    public let schema: KeyValueTableSchema
    /// The largest encoded value accepted, in bytes.
    public var maxValueSize: Int { core.maxValueSize }
    /// The version column, when the store keeps versions.
    public let versionColumn: SQLIdentifier?
    /// The names of change capture on the table, when the store is Old with change capture.
    public var changeCapture: ChangeCaptureSchema? { capture?.schema }
    let core: SQLStoreCore<Key, Value>
    let sql: Statements
    let capture: SQLiteCaptureSQL?
    /// With change capture, the store's own writes of a value and of a tombstone, which set the version themselves.
    let captured: CapturedWrites?
    let keyVersionsSQL: KeyVersionsSQL?
    let versionedRecordsSQL: KeyVersionsSQL?

    public var capabilities: StoreCapabilities {
        var capabilities: StoreCapabilities = [.atomicInsertIfAbsent, .tombstones, .orderedKeys, .batches]
        if versionColumn != nil { capabilities.insert(.versions) }
        if capture != nil { capabilities.insert(.changeCapture) }
        return capabilities
    }

    /// Creates a store over a table, validating every name before any SQL runs.
    /// - Parameters:
    ///   - database: The database.
    ///   - table: The table's name.
    ///   - keyColumn: The key column; `key` by default.
    ///   - valueColumn: The value column; `value` by default.
    ///   - tombstoneColumn: The tombstone flag column; `tombstone` by default.
    ///   - versionColumn: The version column, for a store with versions; `nil` (the default) for a store without,
    ///     unless `changeCapture` is set, which takes `zddm_version`.
    ///   - changeCapture: Whether the store is Old with change capture (see ``SQLiteChangeCapture``); needs a table
    ///     name of at most 50 characters.
    ///   - codec: How values become bytes.
    ///   - maxValueSize: The largest encoded value accepted, in bytes; 16 MiB by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an invalid name or size.
    public init(
        database: SQLiteDatabase,
        table: String,
        keyColumn: String = "key",
        valueColumn: String = "value",
        tombstoneColumn: String = "tombstone",
        versionColumn: String? = nil,
        changeCapture: Bool = false,
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
        let versionName = versionColumn ?? (changeCapture ? "zddm_version" : nil)
        let version = try versionName.map { try SQLIdentifier($0, role: "version column name") }
        if let version {
            let others = [schema.keyColumn, schema.valueColumn, schema.tombstoneColumn].map { $0.name.lowercased() }
            guard !others.contains(version.name.lowercased()) else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "the version column needs a name distinct from the key, value and tombstone columns"
                )
            }
        }
        self.versionColumn = version
        if changeCapture {
            let captureSchema = try ChangeCaptureSchema(
                table: table,
                keyColumn: keyColumn,
                versionColumn: versionName ?? "zddm_version"
            )
            let capture = try SQLiteCaptureSQL(captureSchema, keyType: "")
            self.capture = capture
            self.captured = CapturedWrites(capture, schema)
        } else {
            self.capture = nil
            self.captured = nil
        }
        self.core = try SQLStoreCore(schema: schema, codec: codec, maxValueSize: maxValueSize)
        self.sql = Statements(schema, version: version, keyKind: Key.sqlKeyKind)
        if let version {
            self.keyVersionsSQL = KeyVersionsSQL(
                schema: self.schema,
                versionColumn: version,
                capture: self.capture?.schema,
                collation: Key.sqlKeyKind == .text ? " COLLATE BINARY" : "",
                placeholders: (cursor: "?1", limit: "?2", firstLimit: "?1"),
                trueLiteral: "1"
            )
            self.versionedRecordsSQL = KeyVersionsSQL(
                schema: self.schema,
                versionColumn: version,
                capture: self.capture?.schema,
                collation: Key.sqlKeyKind == .text ? " COLLATE BINARY" : "",
                placeholders: (cursor: "?1", limit: "?2", firstLimit: "?1"),
                trueLiteral: "1",
                withValues: true
            )
        } else {
            self.keyVersionsSQL = nil
            self.versionedRecordsSQL = nil
        }
    }

    /// Creates the table if it does not exist, adds the version column to a table without it
    /// (`NOT NULL DEFAULT 0`), installs change capture when the store has it (``SQLiteChangeCapture/install()``), all
    /// in one transaction, then checks that the columns fit the key type.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when an existing table lacks a column
    ///   or its key column cannot hold this store's keys, or ``ZDDMError/Code/storeFailed`` when SQLite fails.
    public func prepare() async throws {
        try await core.run(.prepare, on: database) { db in
            try db.execute(sql: sql.create)
            if let addVersion = sql.addVersionColumn, let versionColumn {
                let columns = try SQLiteChangeCapture.tableColumns(db, schema.table)
                if columns[versionColumn.name.lowercased()] == nil { try db.execute(sql: addVersion) }
            }
            if let capture { try SQLiteChangeCapture.install(db, capture.schema) }
            try check(db)
        }
    }

    /// Checks, without changing anything, that the table exists, its columns fit the key type, and change capture
    /// is installed when the store has it.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` naming what does not fit or is missing.
    public func checkSchema() async throws {
        try await core.run(.prepare, on: database) { db in try check(db) }
    }

    private func check(_ db: Database) throws {
        try SQLiteBinding.checkTable(
            db,
            table: schema.table,
            keyColumn: schema.keyColumn,
            keyKind: Key.sqlKeyKind,
            otherColumns: [schema.valueColumn, schema.tombstoneColumn]
        )
        if let versionColumn {
            try SQLiteBinding.checkTable(
                db,
                table: schema.table,
                keyColumn: schema.keyColumn,
                keyKind: Key.sqlKeyKind,
                otherColumns: [versionColumn]
            )
        }
        if let capture { try core.checkCapture(db, sql: capture) }
    }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        let row = try await core.run(.read, on: database, writing: false) { db in
            try Row.fetchOne(db.cachedStatement(sql: sql.read), arguments: [bound]).map { Array($0.databaseValues) }
        }
        guard let row else { return nil }
        return try core.record(value: row[0], tombstone: row[1], for: .read)
    }

    public func write(_ key: Key, _ value: Value) async throws {
        let arguments = try core.arguments(key, value, for: .write)
        try await core.run(.write, on: database) { [captured] db in
            if let captured {
                _ = try captured.value.run(db, arguments: arguments)
            } else {
                try db.cachedStatement(sql: sql.upsert).execute(arguments: arguments)
            }
        }
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        let arguments = try core.arguments(key, value, for: .insertIfAbsent)
        return try await core.run(.insertIfAbsent, on: database) { db in
            try db.cachedStatement(sql: sql.insertIfAbsent).execute(arguments: arguments)
            return db.changesCount > 0
        }
    }

    public func delete(_ key: Key) async throws {
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        try await core.run(.delete, on: database) { db in
            try db.cachedStatement(sql: sql.delete).execute(arguments: [bound])
        }
    }

    public func writeTombstone(_ key: Key) async throws {
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        try await core.run(.writeTombstone, on: database) { [captured] db in
            if let captured {
                _ = try captured.tombstone.run(db, arguments: [bound])
            } else {
                try db.cachedStatement(sql: sql.tombstone).execute(arguments: [bound])
            }
        }
    }

    /// Integers by value, text by its UTF-8 bytes, byte strings by their bytes: the order of ``keys(after:limit:)``.
    public func listsKey(_ first: Key, before second: Key) -> Bool? {
        first.sqlKeyValue.sortsBefore(second.sqlKeyValue)
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        try await core.keys(after: cursor, limit: limit, on: database, first: sql.keysFirst, following: sql.keysAfter)
    }

    /// With change capture, also the keys whose deletion the deleted-versions table keeps.
    public func keysIncludingDeleted(after cursor: Key?, limit: Int) async throws -> [Key] {
        try await core.keysIncludingDeleted(
            after: cursor,
            limit: limit,
            on: database,
            capture: capture,
            first: sql.keysFirst,
            following: sql.keysAfter
        )
    }

    public func readMany(_ keys: [Key]) async throws -> [Key: StoreRecord<Value>] {
        guard !keys.isEmpty else { return [:] }
        let chunks = core.boundBatches(keys, size: Statements.batchSize)
        let rows = try await core.run(.readMany, on: database, writing: false) { db in
            var rows: [[DatabaseValue]] = []
            for chunk in chunks {
                for row in try Row.fetchAll(
                    db.cachedStatement(sql: sql.readMany(chunk.count)),
                    arguments: StatementArguments(chunk)
                ) {
                    rows.append(Array(row.databaseValues))
                }
            }
            return rows
        }
        var found: [Key: StoreRecord<Value>] = [:]
        for row in rows {
            found[try core.key(row[0], for: .readMany)] = try core.record(
                value: row[1],
                tombstone: row[2],
                for: .readMany
            )
        }
        return found
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        guard !entries.isEmpty else { return [] }
        let rows = try entries.map { try core.arguments($0.key, $0.value, for: .insertManyIfAbsent) }
        let insertedIndexes = try await core.run(.insertManyIfAbsent, on: database) { db in
            let statement = try db.cachedStatement(sql: sql.insertIfAbsent)
            var inserted: [Int] = []
            for (index, arguments) in rows.enumerated() {
                try statement.execute(arguments: arguments)
                if db.changesCount > 0 { inserted.append(index) }
            }
            return inserted
        }
        return Set(insertedIndexes.map { entries[$0].key })
    }

    public var description: String { "SQLiteStore(table \(schema.table) in \(database.url))" }
}

extension SQLiteStore where Value: Codable {
    /// Creates a store over a table that keeps `Codable` values as JSON, validating every name before any SQL runs.
    /// - Parameters:
    ///   - database: The database.
    ///   - table: The table's name.
    ///   - keyColumn: The key column; `key` by default.
    ///   - valueColumn: The value column; `value` by default.
    ///   - tombstoneColumn: The tombstone flag column; `tombstone` by default.
    ///   - versionColumn: The version column, for a store with versions; `nil` (the default) for a store without,
    ///     unless `changeCapture` is set, which takes `zddm_version`.
    ///   - changeCapture: Whether the store is Old with change capture (see ``SQLiteChangeCapture``).
    ///   - maxValueSize: The largest encoded value accepted, in bytes; 16 MiB by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an invalid name or size.
    public init(
        database: SQLiteDatabase,
        table: String,
        keyColumn: String = "key",
        valueColumn: String = "value",
        tombstoneColumn: String = "tombstone",
        versionColumn: String? = nil,
        changeCapture: Bool = false,
        maxValueSize: Int = Self.defaultMaxValueSize
    ) throws {
        try self.init(
            database: database,
            table: table,
            keyColumn: keyColumn,
            valueColumn: valueColumn,
            tombstoneColumn: tombstoneColumn,
            versionColumn: versionColumn,
            changeCapture: changeCapture,
            codec: JSONValueCodec<Value>(),
            maxValueSize: maxValueSize
        )
    }
}

extension SQLiteStore {
    /// A captured store's own writes (see ``SQLiteCaptureSQL/versionedWrite(columns:values:)``): one `UPDATE` of
    /// the row, or one `INSERT` when the key has none, each setting the version the triggers would give.
    struct CapturedWrites: Sendable {
        /// Writes a value (`?2`) and clears the tombstone flag.
        let value: SQLiteCaptureSQL.VersionedWrite
        /// Writes a tombstone: no value, the flag set.
        let tombstone: SQLiteCaptureSQL.VersionedWrite

        init(_ capture: SQLiteCaptureSQL, _ schema: KeyValueTableSchema) {
            let columns = [schema.valueColumn.quoted, schema.tombstoneColumn.quoted]
            value = capture.versionedWrite(columns: columns, values: ["?2", "0"])
            tombstone = capture.versionedWrite(columns: columns, values: ["NULL", "1"])
        }
    }

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
        /// Adds the version column; `nil` without versions.
        let addVersionColumn: String?
        /// `SELECT value, tombstone, version … WHERE key = ?`
        let readVersioned: String
        /// The fence: an upsert of value, tombstone flag and version that updates only an older version.
        let writeIfNewer: String
        private let readManyPrefix: String
        private let readManyVersionedPrefix: String

        init(_ schema: KeyValueTableSchema, version: SQLIdentifier?, keyKind: SQLKeyKind) {
            let t = schema.table.quoted
            let k = schema.keyColumn.quoted
            let v = schema.valueColumn.quoted
            let d = schema.tombstoneColumn.quoted
            let ordered = keyKind == .text ? "\(k) COLLATE BINARY" : k
            let versionDefinition = version.map { ", \($0.quoted) INTEGER NOT NULL DEFAULT 0" } ?? ""
            create = """
                CREATE TABLE IF NOT EXISTS \(t) (\(k) \(SQLiteBinding.columnType(keyKind)) NOT NULL PRIMARY KEY, \
                \(v) BLOB, \(d) INTEGER NOT NULL DEFAULT 0 CHECK (\(d) IN (0, 1))\(versionDefinition))
                """
            let n = version?.quoted ?? "0"
            addVersionColumn = version.map { "ALTER TABLE \(t) ADD COLUMN \($0.quoted) INTEGER NOT NULL DEFAULT 0" }
            readVersioned = "SELECT \(v), \(d), \(n) FROM \(t) WHERE \(k) = ?"
            writeIfNewer = """
                INSERT INTO \(t) (\(k), \(v), \(d), \(n)) VALUES (?, ?, ?, ?) \
                ON CONFLICT (\(k)) DO UPDATE SET \(v) = excluded.\(v), \(d) = excluded.\(d), \(n) = excluded.\(n) \
                WHERE \(t).\(n) < excluded.\(n)
                """
            readManyVersionedPrefix = "SELECT \(k), \(v), \(d), \(n) FROM \(t) WHERE \(k) IN ("
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

        func readManyVersioned(_ count: Int) -> String {
            readManyVersionedPrefix + SQLiteBinding.placeholders(count) + ")"
        }
    }
}
