import PostgresNIO
import Synchronization
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
///
/// ## Versions
///
/// With a `versionColumn` the table has a fourth column, `bigint NOT NULL DEFAULT 0`, and the store declares
/// ``ZDDM/StoreCapabilities/versions``. It then plays one of two roles:
///
/// - **New** (no `changeCapture`): it keeps the versions it is given. ``writeIfNewer(_:_:)`` is one statement,
///   `INSERT … ON CONFLICT (key) DO UPDATE … WHERE stored.version < excluded.version RETURNING`, and
///   ``writeManyIfNewer(_:)`` one such statement per 5 000 records (from 64 on, one transaction: `COPY` into a
///   temporary table, then one such statement from it). ``readVersioned(_:)`` returns the row's record
///   and version. ``write(_:_:)``, ``insertIfAbsent(_:_:)`` and ``writeTombstone(_:)`` leave an existing row's
///   version as it is and give a new row version 0 (they know no version from Old; any versioned record replaces
///   them). ``writeVersioned(_:_:)`` and ``deleteVersioned(_:)`` throw ``ZDDM/ZDDMError/Code/unsupported``.
/// - **Old** (with `changeCapture`, installed by ``PostgresChangeCapture``): the table's triggers assign the
///   versions, for every writer. ``writeVersioned(_:_:)`` is the upsert with `RETURNING` the version (one round
///   trip), ``deleteVersioned(_:)`` one `DELETE … RETURNING` statement that falls back to the deleted-versions
///   table when nothing was deleted, ``readVersioned(_:)`` one statement over the table and the deleted-versions
///   table. Plain writes get versions from the triggers too. The store also declares
///   ``ZDDM/StoreCapabilities/changeCapture`` and lists, removes and measures the change table. The fenced writes
///   throw ``ZDDM/ZDDMError/Code/unsupported`` (the triggers would overwrite the versions they carry). A write
///   that fails with a serialization failure caused by a concurrent delete of its key (see
///   ``PostgresChangeCapture``) is retried, up to 5 times.
public struct PostgresStore<Key: SQLKey, Value: Sendable>: KeyValueStore, CustomStringConvertible {
    /// The default largest encoded value: 16 MiB.
    public static var defaultMaxValueSize: Int { SQLStoreCore<Key, Value>.defaultMaxValueSize }

    /// The database holding the table.
    public let database: PostgresDatabase
    /// The table's names.
    public let schema: KeyValueTableSchema
    /// The largest encoded value accepted, in bytes.
    public var maxValueSize: Int { core.maxValueSize }
    /// The version column, when the store keeps versions.
    public let versionColumn: SQLIdentifier?
    /// Change capture on the table, when the store plays Old with versions.
    public let changeCapture: PostgresChangeCapture?
    let core: SQLStoreCore<Key, Value>
    let sql: Statements
    let versionSQL: VersionStatements?
    let keyVersionsSQL: KeyVersionsSQL?
    /// Whether a large batch of fenced writes first tries a `COPY` straight into the table.
    let directCopy = DirectCopyGate()

    public var capabilities: StoreCapabilities {
        var capabilities: StoreCapabilities = [.atomicInsertIfAbsent, .tombstones, .orderedKeys, .batches]
        if versionColumn != nil { capabilities.insert(.versions) }
        if changeCapture != nil { capabilities.insert(.changeCapture) }
        return capabilities
    }

    /// Creates a store over a table, validating every name before any SQL runs.
    /// - Parameters:
    ///   - database: The database.
    ///   - table: The table's name (in the connection's search path).
    ///   - keyColumn: The key column; `key` by default.
    ///   - valueColumn: The value column; `value` by default.
    ///   - tombstoneColumn: The tombstone flag column; `tombstone` by default.
    ///   - versionColumn: The version column, for a store with versions (New's role, or Old's with
    ///     `changeCapture`); `nil` (no versions) by default. With `changeCapture`, `nil` means the capture's
    ///     version column.
    ///   - changeCapture: Change capture on this table (Old's role): its table and key column must be this store's.
    ///     `nil` by default.
    ///   - codec: How values become bytes.
    ///   - maxValueSize: The largest encoded value accepted, in bytes; 16 MiB by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an invalid name or size, or a change
    ///   capture for another table, key column or version column.
    public init(
        database: PostgresDatabase,
        table: String,
        keyColumn: String = "key",
        valueColumn: String = "value",
        tombstoneColumn: String = "tombstone",
        versionColumn: String? = nil,
        changeCapture: ChangeCaptureSchema? = nil,
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
        let version = try versionColumn.map { try SQLIdentifier($0, role: "version column name") }
        if let version {
            let others = [schema.keyColumn, schema.valueColumn, schema.tombstoneColumn].map { $0.name.lowercased() }
            guard !others.contains(version.name.lowercased()) else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "the version column needs a name distinct from the key, value and tombstone columns"
                )
            }
        }
        if let changeCapture {
            guard changeCapture.table == schema.table, changeCapture.keyColumn == schema.keyColumn else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "the change capture schema is for table \(changeCapture.table) with key column "
                        + "\(changeCapture.keyColumn), not this store's table \(schema.table) with key column "
                        + "\(schema.keyColumn)"
                )
            }
            guard version == nil || version == changeCapture.versionColumn else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "the version column differs from the change capture schema's version column"
                )
            }
            if changeCapture.versionColumn.name.lowercased() == schema.valueColumn.name.lowercased()
                || changeCapture.versionColumn.name.lowercased() == schema.tombstoneColumn.name.lowercased()
            {
                throw ZDDMError(
                    .invalidArgument,
                    message: "the version column needs a name distinct from the value and tombstone columns"
                )
            }
        }
        let versionColumn = changeCapture?.versionColumn ?? version
        let schema = schema
        self.versionColumn = versionColumn
        self.changeCapture = changeCapture.map { PostgresChangeCapture(database: database, schema: $0) }
        self.core = try SQLStoreCore(schema: schema, codec: codec, maxValueSize: maxValueSize)
        self.sql = Statements(schema, keyKind: Key.sqlKeyKind, versionColumn: versionColumn)
        self.versionSQL = versionColumn.map {
            VersionStatements(schema, keyKind: Key.sqlKeyKind, versionColumn: $0, capture: changeCapture)
        }
        self.keyVersionsSQL = versionColumn.map {
            KeyVersionsSQL(
                schema: schema,
                versionColumn: $0,
                capture: changeCapture,
                collation: Key.sqlKeyKind == .text ? " COLLATE \"C\"" : "",
                placeholders: (cursor: "$1", limit: "$2", firstLimit: "$1"),
                trueLiteral: "true"
            )
        }
    }

    /// Creates the table if it does not exist (with the version column, when configured), adds the version column
    /// to an existing table without it (`ADD COLUMN IF NOT EXISTS … bigint NOT NULL DEFAULT 0`, a catalog change
    /// only), then checks that its columns fit the key type and, with change capture, that it is installed.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when an existing table lacks a column,
    ///   its key column cannot hold this store's keys, or change capture is configured but not installed (naming
    ///   what is missing), or ``ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func prepare() async throws {
        try await core.run(.prepare, on: database) {
            _ = try await query(sql.create, PostgresBindings())
            if let addVersion = sql.addVersion { _ = try await query(addVersion, PostgresBindings()) }
            try await check()
        }
    }

    /// Checks, without changing anything, that the table exists, its columns fit the key type and, with change
    /// capture, that change capture is installed.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` naming what does not fit or is missing.
    public func checkSchema() async throws {
        try await core.run(.prepare, on: database) { try await check() }
    }

    private func check() async throws {
        try await PostgresBinding.checkTable(
            database,
            table: schema.table,
            keyColumn: schema.keyColumn,
            keyKind: Key.sqlKeyKind,
            otherColumns: [schema.valueColumn, schema.tombstoneColumn] + (versionColumn.map { [$0] } ?? [])
        )
        try await changeCapture?.requireInstalled()
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
        try await core.run(.write, on: database) { _ = try await change(sql.upsert, binds) }
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        let binds = try core.bindings(key, value, for: .insertIfAbsent)
        return try await core.run(.insertIfAbsent, on: database) {
            !(try await change(sql.insertIfAbsent, binds)).isEmpty
        }
    }

    public func delete(_ key: Key) async throws {
        let binds = keyBinds(key)
        try await core.run(.delete, on: database) { _ = try await query(sql.delete, binds) }
    }

    public func writeTombstone(_ key: Key) async throws {
        let binds = keyBinds(key)
        try await core.run(.writeTombstone, on: database) { _ = try await change(sql.tombstone, binds) }
    }

    /// One ordered statement over the table (and, with change capture, the deleted-versions table's keys that
    /// have no row); no values are read.
    public func keyVersions(after cursor: Key?, limit: Int) async throws -> [KeyVersion<Key>] {
        guard let statements = keyVersionsSQL else {
            throw ZDDMError(.unsupported, operation: .listKeys, message: "table \(schema.table) keeps no versions")
        }
        try core.checkListLimit(limit)
        var binds = PostgresBindings(capacity: 2)
        if let cursor { PostgresBinding.append(cursor.sqlKeyValue, to: &binds) }
        binds.append(Int64(limit))
        let statement = cursor == nil ? statements.first : statements.following
        return try await core.run(.listKeys, on: database) {
            try await query(statement, binds).map { row in
                let cells = row.makeRandomAccess()
                return KeyVersion(
                    key: try core.key(cells[0], for: .listKeys),
                    version: try PostgresBinding.version(cells[1]),
                    isTombstone: try cells[2].decode(Bool.self)
                )
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
            capture: changeCapture?.schema,
            first: sql.keysFirst,
            following: sql.keysAfter
        )
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
                for row in try await change(sql.insertMany, binds) {
                    inserted.insert(try core.key(row.makeRandomAccess()[0], for: .insertManyIfAbsent))
                }
            }
            return inserted
        }
    }

    public var description: String { "PostgresStore(table \(schema.table) on \(database.location))" }

    func query(_ statement: String, _ binds: PostgresBindings) async throws -> [PostgresRow] {
        try await database.rows(statement, binds)
    }

    /// Runs a statement that may insert a row; with change capture, retried when a concurrent delete of the same
    /// key makes it fail with a serialization failure (see ``PostgresChangeCapture``).
    func change(_ statement: String, _ binds: PostgresBindings) async throws -> [PostgresRow] {
        guard changeCapture != nil else { return try await database.rows(statement, binds) }
        return try await PostgresBinding.retryingSerializationFailures { try await database.rows(statement, binds) }
    }

    func keyBinds(_ key: Key) -> PostgresBindings {
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
    ///   - versionColumn: The version column, for a store with versions; `nil` (no versions) by default.
    ///   - changeCapture: Change capture on this table (Old's role); `nil` by default.
    ///   - maxValueSize: The largest encoded value accepted, in bytes; 16 MiB by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an invalid name or size, or a change
    ///   capture for another table, key column or version column.
    public init(
        database: PostgresDatabase,
        table: String,
        keyColumn: String = "key",
        valueColumn: String = "value",
        tombstoneColumn: String = "tombstone",
        versionColumn: String? = nil,
        changeCapture: ChangeCaptureSchema? = nil,
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

        let addVersion: String?

        init(_ schema: KeyValueTableSchema, keyKind: SQLKeyKind, versionColumn: SQLIdentifier?) {
            let t = schema.table.quoted
            let k = schema.keyColumn.quoted
            let v = schema.valueColumn.quoted
            let d = schema.tombstoneColumn.quoted
            let ordered = keyKind == .text ? "\(k) COLLATE \"C\"" : k
            let versionDefinition = versionColumn.map { "\($0.quoted) bigint NOT NULL DEFAULT 0" }
            create = """
                CREATE TABLE IF NOT EXISTS \(t) (\(k) \(PostgresBinding.columnType(keyKind)) PRIMARY KEY, \
                \(v) bytea, \(d) boolean NOT NULL DEFAULT false\(versionDefinition.map { ", " + $0 } ?? ""))
                """
            addVersion = versionDefinition.map { "ALTER TABLE \(t) ADD COLUMN IF NOT EXISTS \($0)" }
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

/// Remembers that a `COPY` straight into the table met a key already there, so that the next large batches go
/// straight to the staging table instead of failing the same way.
final class DirectCopyGate: Sendable {
    /// Large batches left to send through the staging table before trying a direct `COPY` again.
    private let skipping = Atomic<Int>(0)

    /// Whether the next large batch may try a direct `COPY`.
    func mayTry() -> Bool {
        var left = skipping.load(ordering: .relaxed)
        while left > 0 {
            let (exchanged, original) = skipping.compareExchange(
                expected: left,
                desired: left - 1,
                ordering: .relaxed
            )
            if exchanged { return false }
            left = original
        }
        return true
    }

    /// A direct `COPY` met a present key: skip the next 32 large batches.
    func conflicted() {
        skipping.store(32, ordering: .relaxed)
    }
}
