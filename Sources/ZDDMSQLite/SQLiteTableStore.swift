import GRDB
public import ZDDM
public import ZDDMSQL

/// A store over your own SQLite table, through a ``RowMapping``: no key-value table, no fork of the library.
///
/// The table's rows hold live values only. Tombstones live in a side table (``RowMapping/tombstoneTable``, by
/// default `<table>_zddm_tombstones(key PRIMARY KEY)`), which ``prepare()`` creates. A key is never in both:
/// ``write(_:_:)`` removes the tombstone and upserts the row, ``writeTombstone(_:)`` removes the row and
/// records the tombstone, and ``insertIfAbsent(_:_:)`` inserts only when neither holds the key. Each of these
/// runs as one SQLite write transaction, and SQLite runs write transactions one at a time, so they are atomic
/// with respect to each other. The key column must be the table's primary key (or unique).
///
/// ## Versions
///
/// - **Old** (with `changeCapture:`): your table is captured by ``SQLiteChangeCapture``, which you install once
///   (``prepare()`` and ``checkSchema()`` refuse a table that lacks it, naming what is missing). Every change, by
///   any writer, gives the key a larger version and a change-table entry; the store declares
///   ``ZDDM/StoreCapabilities/versions`` and ``ZDDM/StoreCapabilities/changeCapture`` and implements
///   ``writeVersioned(_:_:)``, ``deleteVersioned(_:)``, ``readVersioned(_:)`` (the row, else the deleted-versions
///   table as a tombstone) and the change table. ``write(_:_:)`` and ``writeVersioned(_:_:)`` remove the key's
///   tombstone, then update the row, or insert it when the key has none, setting the next version themselves, so the
///   triggers only append the change entry. The fence throws ``ZDDMError/Code/unsupported``.
/// - **New** (with `versionColumn:` and no capture): ``prepare()`` adds the version column
///   (`INTEGER NOT NULL DEFAULT 0`) to your table and to the tombstone side table when they lack it.
///   ``writeIfNewer(_:_:)`` stores a record only over nothing or an older version, in one write transaction; plain
///   writes keep the key's version (a key they create has version 0). Old's operations throw
///   ``ZDDMError/Code/unsupported``.
public struct SQLiteTableStore<Key: SQLKey, Value: Sendable>: KeyValueStore, CustomStringConvertible {
    /// The database holding the table.
    public let database: SQLiteDatabase
    /// How values map to rows.
    public let mapping: RowMapping<Value>
    /// The largest value accepted, in bytes (text as UTF-8, numbers 8 bytes each), summed over its columns.
    public var maxValueSize: Int { core.maxValueSize }
    /// The version column of the table (and, in New's role, of the tombstone side table), when the store keeps
    /// versions.
    public let versionColumn: SQLIdentifier?
    /// The names of change capture on the table, when the store is Old with change capture.
    public var changeCapture: ChangeCaptureSchema? { capture?.schema }
    let core: SQLStoreCore<Key, Value>
    let sql: Statements
    let capture: SQLiteCaptureSQL?
    /// With change capture, the store's own write of a row, which sets the version itself (see
    /// ``SQLiteCaptureSQL/versionedWrite(columns:values:)``).
    let capturedWrite: SQLiteCaptureSQL.VersionedWrite?

    public var capabilities: StoreCapabilities {
        var capabilities: StoreCapabilities = [.atomicInsertIfAbsent, .tombstones, .orderedKeys, .batches]
        if versionColumn != nil { capabilities.insert(.versions) }
        if capture != nil { capabilities.insert(.changeCapture) }
        return capabilities
    }

    /// Creates a store over a table.
    /// - Parameters:
    ///   - database: The database.
    ///   - mapping: The table, its columns and how values map to them.
    ///   - versionColumn: For New's role, the version column of the table and of the tombstone side table; `nil`
    ///     (the default) for a store without versions, or to take the capture's.
    ///   - changeCapture: For Old's role, change capture on the table (its table and key column must be the
    ///     mapping's); `nil` by default.
    ///   - maxValueSize: The largest value accepted, in bytes; 16 MiB by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for a size below 1, an invalid version
    ///   column name, or a capture of another table or key column.
    public init(
        database: SQLiteDatabase,
        mapping: RowMapping<Value>,
        versionColumn: String? = nil,
        changeCapture: ChangeCaptureSchema? = nil,
        maxValueSize: Int = 16 << 20
    ) throws {
        self.database = database
        self.mapping = mapping
        var version = try versionColumn.map { try SQLIdentifier($0, role: "version column name") }
        if let changeCapture {
            guard changeCapture.table.name.lowercased() == mapping.table.name.lowercased(),
                changeCapture.keyColumn.name.lowercased() == mapping.keyColumn.name.lowercased()
            else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "the change capture's table and key column must be the mapping's (\(mapping.table), "
                        + "\(mapping.keyColumn))"
                )
            }
            guard version == nil || version?.name.lowercased() == changeCapture.versionColumn.name.lowercased() else {
                throw ZDDMError(.invalidArgument, message: "the version column must be the change capture's")
            }
            version = changeCapture.versionColumn
            let capture = try SQLiteCaptureSQL(changeCapture, keyType: "")
            self.capture = capture
            self.capturedWrite = capture.versionedWrite(
                columns: mapping.valueColumns.map(\.quoted),
                values: mapping.valueColumns.indices.map { "?\($0 + 2)" }
            )
        } else {
            self.capture = nil
            self.capturedWrite = nil
        }
        if let version {
            let taken = ([mapping.keyColumn] + mapping.valueColumns).map { $0.name.lowercased() }
            guard !taken.contains(version.name.lowercased()), version.name.lowercased() != "key" else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "the version column needs a name distinct from the key and value columns and from \"key\""
                )
            }
        }
        self.versionColumn = version
        self.core = try SQLStoreCore(mapping: mapping, maxValueSize: maxValueSize)
        self.sql = Statements(mapping, version: version, sideVersions: changeCapture == nil, keyKind: Key.sqlKeyKind)
    }

    /// Whether the store is New with versions: the tombstone side table keeps versions, plain writes keep them.
    var fencing: Bool { versionColumn != nil && capture == nil }

    /// Checks the user's table and creates the tombstone side table if it does not exist. In New's role it adds the
    /// version column to the table and the side table when they lack it; with change capture it refuses a table on
    /// which ``SQLiteChangeCapture`` is not installed.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` when the table is missing, lacks a
    ///   mapped column or change capture, or its key column cannot hold this store's keys.
    public func prepare() async throws {
        try await core.run(.prepare, on: database) { db in
            if fencing, let versionColumn {
                let columns = try SQLiteChangeCapture.tableColumns(db, mapping.table)
                if !columns.isEmpty, columns[versionColumn.name.lowercased()] == nil {
                    try db.execute(sql: sql.addVersionColumn)
                }
            }
            try check(db)
            try db.execute(sql: sql.createTombstones)
            if fencing, let versionColumn {
                let columns = try SQLiteChangeCapture.tableColumns(db, mapping.tombstoneTable)
                if columns[versionColumn.name.lowercased()] == nil { try db.execute(sql: sql.addTombstoneVersion) }
            }
        }
    }

    /// Checks, without changing anything, the user's table and the tombstone side table.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` naming what does not fit.
    public func checkSchema() async throws {
        try await core.run(.prepare, on: database) { db in
            try check(db)
            try SQLiteBinding.checkTable(
                db,
                table: mapping.tombstoneTable,
                keyColumn: mapping.tombstoneKeyColumn,
                keyKind: Key.sqlKeyKind,
                otherColumns: fencing ? (versionColumn.map { [$0] } ?? []) : []
            )
        }
    }

    private func check(_ db: Database) throws {
        if let capture { try core.checkCapture(db, sql: capture) }
        try SQLiteBinding.checkTable(
            db,
            table: mapping.table,
            keyColumn: mapping.keyColumn,
            keyKind: Key.sqlKeyKind,
            otherColumns: mapping.valueColumns + (versionColumn.map { [$0] } ?? [])
        )
    }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        let found = try await core.run(.read, on: database, writing: false) { db -> [DatabaseValue]?? in
            if let row = try Row.fetchOne(db.cachedStatement(sql: sql.read), arguments: [bound]) {
                return .some(Array(row.databaseValues))
            }
            return try Bool.fetchOne(db.cachedStatement(sql: sql.readTombstone), arguments: [bound]) == nil
                ? nil : .some(nil)
        }
        switch found {
        case nil: return nil
        case .some(nil): return .tombstone
        case .some(.some(let columns)): return .value(try core.value(columns, for: .read))
        }
    }

    public func write(_ key: Key, _ value: Value) async throws {
        let arguments = try core.arguments(key, value, for: .write)
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        let fencing = fencing
        try await core.run(.write, on: database) { [capturedWrite] db in
            if fencing {
                let version = try SQLiteBinding.databaseValue(version: currentVersion(db, bound) ?? 0, for: .write)
                try storeValue(db, bound: bound, arguments: arguments, version: version)
                return
            }
            if let capturedWrite {
                try db.cachedStatement(sql: sql.deleteTombstone).execute(arguments: [bound])
                _ = try capturedWrite.run(db, arguments: arguments)
                return
            }
            try db.inSavepoint {
                try db.cachedStatement(sql: sql.deleteTombstone).execute(arguments: [bound])
                try db.cachedStatement(sql: sql.upsert).execute(arguments: arguments)
                return .commit
            }
        }
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        let arguments = try core.arguments(key, value, for: .insertIfAbsent)
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        return try await core.run(.insertIfAbsent, on: database) { db in
            try insertIfAbsent(db, bound: bound, arguments: arguments)
        }
    }

    private func insertIfAbsent(_ db: Database, bound: DatabaseValue, arguments: StatementArguments) throws -> Bool {
        if try Bool.fetchOne(db.cachedStatement(sql: sql.readTombstone), arguments: [bound]) != nil { return false }
        try db.cachedStatement(sql: sql.insertIfAbsent).execute(arguments: arguments)
        return db.changesCount > 0
    }

    public func delete(_ key: Key) async throws {
        try await change(.delete, key, sql.deleteRow, sql.deleteTombstone)
    }

    public func writeTombstone(_ key: Key) async throws {
        guard fencing else { return try await change(.writeTombstone, key, sql.deleteRow, sql.insertTombstone) }
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        try await core.run(.writeTombstone, on: database) { db in
            let version = try SQLiteBinding.databaseValue(
                version: currentVersion(db, bound) ?? 0,
                for: .writeTombstone
            )
            try storeTombstone(db, bound: bound, version: version)
        }
    }

    /// Runs two statements on one key in one transaction.
    private func change(_ operation: StoreOperation, _ key: Key, _ first: String, _ second: String) async throws {
        let bound = SQLiteBinding.databaseValue(key.sqlKeyValue)
        try await core.run(operation, on: database) { db in
            try db.inSavepoint {
                try db.cachedStatement(sql: first).execute(arguments: [bound])
                try db.cachedStatement(sql: second).execute(arguments: [bound])
                return .commit
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
        let (rows, tombstones) = try await core.run(.readMany, on: database, writing: false) { db in
            var rows: [[DatabaseValue]] = []
            var tombstones: [DatabaseValue] = []
            for chunk in chunks {
                for row in try Row.fetchAll(
                    db.cachedStatement(sql: sql.readMany(chunk.count)),
                    arguments: StatementArguments(chunk)
                ) {
                    rows.append(Array(row.databaseValues))
                }
                tombstones += try DatabaseValue.fetchAll(
                    db,
                    sql: sql.readManyTombstones(chunk.count),
                    arguments: StatementArguments(chunk)
                )
            }
            return (rows, tombstones)
        }
        var found: [Key: StoreRecord<Value>] = [:]
        for key in tombstones { found[try core.key(key, for: .readMany)] = .tombstone }
        for row in rows {
            found[try core.key(row[0], for: .readMany)] = .value(try core.value(Array(row.dropFirst()), for: .readMany))
        }
        return found
    }

    public func insertManyIfAbsent(_ entries: [(key: Key, value: Value)]) async throws -> Set<Key> {
        guard !entries.isEmpty else { return [] }
        let prepared = try entries.map { entry in
            (
                bound: SQLiteBinding.databaseValue(entry.key.sqlKeyValue),
                arguments: try core.arguments(entry.key, entry.value, for: .insertManyIfAbsent)
            )
        }
        let indexes = try await core.run(.insertManyIfAbsent, on: database) { db in
            var inserted: [Int] = []
            for (index, entry) in prepared.enumerated()
            where try insertIfAbsent(db, bound: entry.bound, arguments: entry.arguments) {
                inserted.append(index)
            }
            return inserted
        }
        return Set(indexes.map { entries[$0].key })
    }

    public var description: String {
        "SQLiteTableStore(table \(mapping.table), tombstones in \(mapping.tombstoneTable), in \(database.url))"
    }
}

extension SQLiteTableStore {
    /// The SQL text of a store, built once from validated, quoted names.
    struct Statements: Sendable {
        static var batchSize: Int { 500 }

        let createTombstones: String
        let read: String
        let readTombstone: String
        let upsert: String
        let insertIfAbsent: String
        let deleteRow: String
        let deleteTombstone: String
        let insertTombstone: String
        let keysFirst: String
        let keysAfter: String
        /// Adds the version column to the table.
        let addVersionColumn: String
        /// Adds the version column to the tombstone side table.
        let addTombstoneVersion: String
        /// `SELECT columns…, version … WHERE key = ?`
        let readVersioned: String
        /// `SELECT version FROM side … WHERE key = ?`
        let readTombstoneVersion: String
        /// An upsert of the value's columns and the version.
        let upsertVersioned: String
        /// An upsert of a tombstone and its version.
        let insertTombstoneVersioned: String
        /// `SELECT version … WHERE key = ?`
        let readVersion: String
        private let readManyPrefix: String
        private let readManyTombstonesPrefix: String
        private let readManyVersionedPrefix: String
        private let readManyTombstoneVersionsPrefix: String

        init(_ mapping: RowMapping<Value>, version: SQLIdentifier?, sideVersions: Bool, keyKind: SQLKeyKind) {
            let t = mapping.table.quoted
            let k = mapping.keyColumn.quoted
            let s = mapping.tombstoneTable.quoted
            let sk = mapping.tombstoneKeyColumn.quoted
            let columns = mapping.valueColumns.map(\.quoted)
            let list = columns.joined(separator: ", ")
            let ordered = keyKind == .text ? "\(k) COLLATE BINARY" : k
            let n = version?.quoted ?? "0"
            let sideVersion = sideVersions ? version.map { ", \($0.quoted) INTEGER NOT NULL DEFAULT 0" } ?? "" : ""
            createTombstones = """
                CREATE TABLE IF NOT EXISTS \(s) (\(sk) \(SQLiteBinding.columnType(keyKind)) NOT NULL PRIMARY KEY\
                \(sideVersion))
                """
            addVersionColumn = "ALTER TABLE \(t) ADD COLUMN \(n) INTEGER NOT NULL DEFAULT 0"
            addTombstoneVersion = "ALTER TABLE \(s) ADD COLUMN \(n) INTEGER NOT NULL DEFAULT 0"
            readVersioned = "SELECT \(list), \(n) FROM \(t) WHERE \(k) = ?"
            readTombstoneVersion = "SELECT \(n) FROM \(s) WHERE \(sk) = ?"
            readVersion = "SELECT \(n) FROM \(t) WHERE \(k) = ?"
            upsertVersioned = """
                INSERT INTO \(t) (\(k), \(list), \(n)) VALUES (\(SQLiteBinding.placeholders(columns.count + 2))) \
                ON CONFLICT (\(k)) DO UPDATE SET \((columns + [n]).map { "\($0) = excluded.\($0)" }.joined(separator: ", "))
                """
            insertTombstoneVersioned = """
                INSERT INTO \(s) (\(sk), \(n)) VALUES (?, ?) ON CONFLICT (\(sk)) DO UPDATE SET \(n) = excluded.\(n)
                """
            readManyVersionedPrefix = "SELECT \(k), \(list), \(n) FROM \(t) WHERE \(k) IN ("
            readManyTombstoneVersionsPrefix = "SELECT \(sk), \(n) FROM \(s) WHERE \(sk) IN ("
            read = "SELECT \(list) FROM \(t) WHERE \(k) = ?"
            readTombstone = "SELECT 1 FROM \(s) WHERE \(sk) = ?"
            let insert = "INSERT INTO \(t) (\(k), \(list)) VALUES (\(SQLiteBinding.placeholders(columns.count + 1)))"
            let updates = columns.map { "\($0) = excluded.\($0)" }.joined(separator: ", ")
            upsert = insert + " ON CONFLICT (\(k)) DO UPDATE SET \(updates)"
            insertIfAbsent = insert + " ON CONFLICT (\(k)) DO NOTHING"
            deleteRow = "DELETE FROM \(t) WHERE \(k) = ?"
            deleteTombstone = "DELETE FROM \(s) WHERE \(sk) = ?"
            insertTombstone = "INSERT INTO \(s) (\(sk)) VALUES (?) ON CONFLICT (\(sk)) DO NOTHING"
            keysFirst = "SELECT \(k) FROM \(t) ORDER BY \(ordered) LIMIT ?"
            keysAfter = "SELECT \(k) FROM \(t) WHERE \(ordered) > ? ORDER BY \(ordered) LIMIT ?"
            readManyPrefix = "SELECT \(k), \(list) FROM \(t) WHERE \(k) IN ("
            readManyTombstonesPrefix = "SELECT \(sk) FROM \(s) WHERE \(sk) IN ("
        }

        func readMany(_ count: Int) -> String {
            readManyPrefix + SQLiteBinding.placeholders(count) + ")"
        }

        func readManyTombstones(_ count: Int) -> String {
            readManyTombstonesPrefix + SQLiteBinding.placeholders(count) + ")"
        }

        func readManyVersioned(_ count: Int) -> String {
            readManyVersionedPrefix + SQLiteBinding.placeholders(count) + ")"
        }

        func readManyTombstoneVersions(_ count: Int) -> String {
            readManyTombstoneVersionsPrefix + SQLiteBinding.placeholders(count) + ")"
        }
    }
}
