import Logging
import PostgresNIO
public import ZDDM
public import ZDDMSQL

/// A store over your own PostgreSQL table, through a ``RowMapping``: no key-value table, no fork of the library.
///
/// The table's rows hold live values only. Tombstones live in a side table (``RowMapping/tombstoneTable``, by
/// default `<table>_zddm_tombstones(key PRIMARY KEY)`), which ``prepare()`` creates. A key is never in both.
///
/// Atomicity: ``write(_:_:)``, ``insertIfAbsent(_:_:)``, ``writeTombstone(_:)``, ``delete(_:)`` and
/// ``insertManyIfAbsent(_:)`` each run in one transaction that first takes `pg_advisory_xact_lock` on a 64-bit
/// hash of the table name and the key (FNV-1a, the same in every process; a batch takes its locks in ascending
/// order, so batches cannot deadlock). Two of them on the same key therefore run one after the other, and each
/// statement after the lock sees the other's committed effect: an insert-if-absent can never slip a value in
/// next to a tombstone or over a concurrent write. Reads are one statement over both tables, so they see one
/// snapshot. Writers that bypass ZDDM do not take the lock; write to the table through the store during a
/// migration. The key column must be the table's primary key (or unique).
///
/// ## Change capture (Old's role)
///
/// Given a `changeCapture` (installed by ``PostgresChangeCapture``), the store declares
/// ``ZDDM/StoreCapabilities/versions`` and ``ZDDM/StoreCapabilities/changeCapture``: the table's triggers give
/// every change, by any writer, a larger version and an entry in the change table. ``writeVersioned(_:_:)`` is one
/// statement (removing a tombstone of the key and upserting the row, `RETURNING` the version), and so are
/// ``deleteVersioned(_:)`` (`DELETE … RETURNING`, falling back to the deleted-versions table when nothing was
/// deleted) and ``readVersioned(_:)``. These one-statement operations take no advisory lock: the row lock and the
/// triggers order them, and Old holds no tombstones in a migration (should a ``writeTombstone(_:)`` race with a
/// ``writeVersioned(_:_:)`` of the same key, both the row and the tombstone may remain, and reads return the row).
/// Statements failing with a serialization failure caused by a concurrent delete of the same key are retried, up to
/// 5 times. Fenced writes throw ``ZDDM/ZDDMError/Code/unsupported`` in this role.
///
/// ## Fenced writes (New's role)
///
/// Given a `versionColumn` (and no change capture), the store declares ``ZDDM/StoreCapabilities/versions`` and
/// keeps the versions it is given: ``prepare()`` adds the column (`bigint NOT NULL DEFAULT 0`) to your table and to
/// the tombstone side table when they lack it. ``writeIfNewer(_:_:)`` and ``writeManyIfNewer(_:)`` run in one
/// transaction holding the keys' advisory locks: they read each key's version (its row's, else its tombstone's)
/// and store a record only over nothing or an older version, a value as the row (removing a tombstone) and a
/// tombstone in the side table (removing the row), each with its version. Plain writes keep the key's version (a
/// key they create has version 0). Old's operations (``writeVersioned(_:_:)``, ``deleteVersioned(_:)``, the change
/// table) throw ``ZDDM/ZDDMError/Code/unsupported`` in this role.
public struct PostgresTableStore<Key: SQLKey, Value: Sendable>: KeyValueStore, CustomStringConvertible {
    /// The database holding the table.
    public let database: PostgresDatabase
    /// How values map to rows.
    public let mapping: RowMapping<Value>
    /// The largest value accepted, in bytes (text as UTF-8, numbers 8 bytes each), summed over its columns.
    public var maxValueSize: Int { core.maxValueSize }
    /// Change capture on the table, when the store plays Old with versions.
    public let changeCapture: PostgresChangeCapture?
    /// The version column of the table and of the tombstone side table, when the store plays New with versions.
    public let versionColumn: SQLIdentifier?
    let core: SQLStoreCore<Key, Value>
    let sql: Statements
    let captureSQL: CaptureStatements?
    let fenceSQL: FenceStatements?

    public var capabilities: StoreCapabilities {
        var capabilities: StoreCapabilities = [.atomicInsertIfAbsent, .tombstones, .orderedKeys, .batches]
        if changeCapture != nil { capabilities.formUnion([.versions, .changeCapture]) }
        if versionColumn != nil { capabilities.insert(.versions) }
        return capabilities
    }

    /// Creates a store over a table.
    /// - Parameters:
    ///   - database: The database.
    ///   - mapping: The table, its columns and how values map to them.
    ///   - maxValueSize: The largest value accepted, in bytes; 16 MiB by default.
    ///   - changeCapture: Change capture on the mapping's table (Old's role); its table and key column must be the
    ///     mapping's. `nil` by default.
    ///   - versionColumn: For New's role (without `changeCapture`), the version column of the table and of the
    ///     tombstone side table; `nil` (no versions) by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for a size below 1, a change capture
    ///   for another table or key column, a version column that is a mapped column or an invalid name, or both a
    ///   change capture and a version column.
    public init(
        database: PostgresDatabase,
        mapping: RowMapping<Value>,
        maxValueSize: Int = 16 << 20,
        changeCapture: ChangeCaptureSchema? = nil,
        versionColumn: String? = nil
    ) throws {
        let version = try versionColumn.map { try SQLIdentifier($0, role: "version column name") }
        if let version {
            guard changeCapture == nil else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "a version column is for New's role and change capture for Old's: pass one of them"
                )
            }
            guard !mapping.valueColumns.contains(where: { $0.name.lowercased() == version.name.lowercased() }),
                version.name.lowercased() != mapping.keyColumn.name.lowercased()
            else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "the version column \(version) must not be one of the mapping's columns"
                )
            }
        }
        if let changeCapture {
            guard changeCapture.table == mapping.table, changeCapture.keyColumn == mapping.keyColumn else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "the change capture schema is for table \(changeCapture.table) with key column "
                        + "\(changeCapture.keyColumn), not the mapping's table \(mapping.table) with key column "
                        + "\(mapping.keyColumn)"
                )
            }
            let mapped = Set(mapping.valueColumns.map { $0.name.lowercased() })
            guard !mapped.contains(changeCapture.versionColumn.name.lowercased()) else {
                throw ZDDMError(
                    .invalidArgument,
                    message:
                        "the version column \(changeCapture.versionColumn) must not be one of the mapping's columns"
                )
            }
        }
        self.database = database
        self.mapping = mapping
        self.changeCapture = changeCapture.map { PostgresChangeCapture(database: database, schema: $0) }
        self.core = try SQLStoreCore(mapping: mapping, maxValueSize: maxValueSize)
        self.sql = Statements(mapping, keyKind: Key.sqlKeyKind)
        self.captureSQL = changeCapture.map { CaptureStatements(mapping, keyKind: Key.sqlKeyKind, capture: $0) }
        self.versionColumn = version
        self.fenceSQL = version.map { FenceStatements(mapping, keyKind: Key.sqlKeyKind, versionColumn: $0) }
    }

    /// Checks the user's table and creates the tombstone side table if it does not exist; with change capture,
    /// checks that it is installed (``PostgresChangeCapture/install(lockTimeout:)`` installs it); with a version
    /// column, adds it to both tables where it is missing.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when the table is missing, lacks a
    ///   mapped column, its key column cannot hold this store's keys, or change capture is configured but not
    ///   installed (naming what is missing).
    public func prepare() async throws {
        try await core.run(.prepare, on: database) {
            try await checkUserTable(withVersion: false)
            _ = try await database.rows(sql.createTombstones, PostgresBindings())
            try await changeCapture?.requireInstalled()
            if let fenceSQL {
                for statement in fenceSQL.addVersionColumns {
                    _ = try await database.rows(statement, PostgresBindings())
                }
            }
        }
    }

    /// Checks, without changing anything, the user's table, the tombstone side table and, with change capture,
    /// that it is installed.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` naming what does not fit or is missing.
    public func checkSchema() async throws {
        try await core.run(.prepare, on: database) {
            try await checkUserTable(withVersion: true)
            try await PostgresBinding.checkTable(
                database,
                table: mapping.tombstoneTable,
                keyColumn: mapping.tombstoneKeyColumn,
                keyKind: Key.sqlKeyKind,
                otherColumns: versionColumn.map { [$0] } ?? []
            )
            try await changeCapture?.requireInstalled()
        }
    }

    private func checkUserTable(withVersion: Bool) async throws {
        try await PostgresBinding.checkTable(
            database,
            table: mapping.table,
            keyColumn: mapping.keyColumn,
            keyKind: Key.sqlKeyKind,
            otherColumns: mapping.valueColumns + (withVersion ? versionColumn.map { [$0] } ?? [] : [])
        )
    }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        let binds = PostgresBinding.bindings(key.sqlKeyValue)
        return try await core.run(.read, on: database) {
            var result: StoreRecord<Value>?
            for row in try await database.rows(sql.read, binds) {
                let (_, record) = try decodeRecord(row, withKey: false, operation: .read)
                if result == nil || !record.isTombstone { result = record }
            }
            return result
        }
    }

    public func write(_ key: Key, _ value: Value) async throws {
        let row = try core.bindings(key, value, for: .write)
        try await locked(.write, keys: [key]) { connection in
            try await connection.run(sql.deleteTombstone, PostgresBinding.bindings(key.sqlKeyValue))
            try await connection.run(sql.upsert, row)
        }
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        let row = try core.bindings(key, value, for: .insertIfAbsent)
        return try await locked(.insertIfAbsent, keys: [key]) { connection in
            !(try await connection.run(sql.insertIfAbsent, row)).isEmpty
        }
    }

    public func delete(_ key: Key) async throws {
        try await locked(.delete, keys: [key]) { connection in
            try await connection.run(sql.deleteRow, PostgresBinding.bindings(key.sqlKeyValue))
            try await connection.run(sql.deleteTombstone, PostgresBinding.bindings(key.sqlKeyValue))
        }
    }

    public func writeTombstone(_ key: Key) async throws {
        try await locked(.writeTombstone, keys: [key]) { connection in
            try await connection.run(sql.deleteRow, PostgresBinding.bindings(key.sqlKeyValue))
            try await connection.run(sql.insertTombstone, PostgresBinding.bindings(key.sqlKeyValue))
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
                var binds = PostgresBindings(capacity: chunk.count)
                for key in chunk { PostgresBinding.append(key.sqlKeyValue, to: &binds) }
                for row in try await database.rows(sql.readMany(chunk.count), binds) {
                    let (key, record) = try decodeRecord(row, withKey: true, operation: .readMany)
                    guard let key else { continue }
                    if found[key] == nil || !record.isTombstone { found[key] = record }
                }
            }
            return found
        }
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        guard !entries.isEmpty else { return [] }
        let rows = try entries.map {
            (key: $0.key, binds: try core.bindings($0.key, $0.value, for: .insertManyIfAbsent))
        }
        return try await locked(.insertManyIfAbsent, keys: entries.map(\.key)) { connection in
            var inserted: Set<Key> = []
            for row in rows where !(try await connection.run(sql.insertIfAbsent, row.binds)).isEmpty {
                inserted.insert(row.key)
            }
            return inserted
        }
    }

    public var description: String {
        "PostgresTableStore(table \(mapping.table), tombstones in \(mapping.tombstoneTable), on \(database.location))"
    }

    // MARK: Helpers

    /// Runs `body` in a transaction holding the advisory locks of `keys`, taken in ascending order.
    func locked<T: Sendable>(
        _ operation: StoreOperation,
        keys: [Key],
        _ body: @escaping @Sendable (LockedConnection) async throws -> T
    ) async throws -> T {
        let lockIDs = Set(keys.map { PostgresBinding.lockID(table: mapping.table, key: $0.sqlKeyValue) }).sorted()
        let logger = database.logger
        let transaction = {
            try await database.withTransaction { connection in
                for lockID in lockIDs {
                    try await connection.query("SELECT pg_advisory_xact_lock(\(lockID))", logger: logger)
                }
                return try await body(LockedConnection(connection: connection, logger: logger))
            }
        }
        return try await core.run(operation, on: database) {
            guard changeCapture != nil else { return try await transaction() }
            return try await PostgresBinding.retryingSerializationFailures(transaction)
        }
    }

    /// Decodes a row of the read statements: `tombstone, [key,] columns…`.
    func decodeRecord(
        _ row: PostgresRow,
        withKey: Bool,
        operation: StoreOperation
    ) throws -> (Key?, StoreRecord<Value>) {
        let cells = row.makeRandomAccess()
        let key = withKey ? try core.key(cells[1], for: operation) : nil
        let first = withKey ? 2 : 1
        let columns = (first..<(first + mapping.valueColumns.count)).map { cells[$0] }
        return (key, try core.record(tombstone: cells[0], columns: columns, for: operation))
    }
}

/// The connection of a transaction that holds the advisory locks of its keys.
struct LockedConnection: Sendable {
    let connection: PostgresConnection
    let logger: Logger

    /// Runs one statement and collects its rows.
    @discardableResult
    func run(_ statement: String, _ binds: PostgresBindings) async throws -> [PostgresRow] {
        try await connection.query(PostgresQuery(unsafeSQL: statement, binds: binds), logger: logger).collect()
    }
}

extension PostgresTableStore {
    /// The SQL text of a store, built once from validated, quoted names.
    struct Statements: Sendable {
        static var batchSize: Int { 1000 }

        let createTombstones: String
        let read: String
        let upsert: String
        let insertIfAbsent: String
        let deleteRow: String
        let deleteTombstone: String
        let insertTombstone: String
        let keysFirst: String
        let keysAfter: String
        private let readManyValues: String
        private let readManyTombstones: String
        private let key: String
        private let tombstoneKey: String

        init(_ mapping: RowMapping<Value>, keyKind: SQLKeyKind) {
            let t = mapping.table.quoted
            let k = mapping.keyColumn.quoted
            let s = mapping.tombstoneTable.quoted
            let sk = mapping.tombstoneKeyColumn.quoted
            let columns = mapping.valueColumns.map(\.quoted)
            let list = columns.joined(separator: ", ")
            let nulls = columns.map { _ in "NULL" }.joined(separator: ", ")
            let ordered = keyKind == .text ? "\(k) COLLATE \"C\"" : k
            key = k
            tombstoneKey = sk
            createTombstones = """
                CREATE TABLE IF NOT EXISTS \(s) (\(sk) \(PostgresBinding.columnType(keyKind)) PRIMARY KEY)
                """
            read = """
                SELECT false, \(list) FROM \(t) WHERE \(k) = $1 \
                UNION ALL SELECT true, \(nulls) FROM \(s) WHERE \(sk) = $1
                """
            let values = PostgresBinding.placeholders(from: 1, count: columns.count + 1)
            let updates = columns.map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", ")
            upsert = "INSERT INTO \(t) (\(k), \(list)) VALUES (\(values)) ON CONFLICT (\(k)) DO UPDATE SET \(updates)"
            insertIfAbsent = """
                INSERT INTO \(t) (\(k), \(list)) SELECT \(values) \
                WHERE NOT EXISTS (SELECT 1 FROM \(s) WHERE \(sk) = $1) ON CONFLICT (\(k)) DO NOTHING RETURNING true
                """
            deleteRow = "DELETE FROM \(t) WHERE \(k) = $1"
            deleteTombstone = "DELETE FROM \(s) WHERE \(sk) = $1"
            insertTombstone = "INSERT INTO \(s) (\(sk)) VALUES ($1) ON CONFLICT (\(sk)) DO NOTHING"
            keysFirst = "SELECT \(k) FROM \(t) ORDER BY \(ordered) LIMIT $1"
            keysAfter = "SELECT \(k) FROM \(t) WHERE \(ordered) > $1 ORDER BY \(ordered) LIMIT $2"
            readManyValues = "SELECT false, \(k), \(list) FROM \(t) WHERE \(k) IN "
            readManyTombstones = " UNION ALL SELECT true, \(sk), \(nulls) FROM \(s) WHERE \(sk) IN "
        }

        func readMany(_ count: Int) -> String {
            let inList = "(" + PostgresBinding.placeholders(from: 1, count: count) + ")"
            return readManyValues + inList + readManyTombstones + inList
        }
    }
}
