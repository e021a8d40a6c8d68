import ZDDM

/// The names of the objects change capture adds to an Old table: a version column kept by triggers, a side table
/// keeping the versions of deleted keys, and a change table recording each change.
///
/// | object | default name | holds |
/// | --- | --- | --- |
/// | version column | `zddm_version` | the row's version; the triggers set it on every insert and update, whatever the statement says |
/// | deleted-versions table | `<table>_zddm_deleted` | `(key PRIMARY KEY, version)`: the version a deletion gave a key, so a key created again continues above it |
/// | change table | `<table>_zddm_changes` | `(seq, key, version, changed_at)`: one entry per change, for the change applier |
/// | triggers and functions | `<table>_zddm_<what>` | installed on the table, so writers that bypass the proxy get versions and entries too |
///
/// All names are validated as ``SQLIdentifier``s; a derived name longer than 63 characters is refused with a
/// message that says to pass the name explicitly.
public struct ChangeCaptureSchema: Sendable, Hashable {
    /// The captured table.
    public let table: SQLIdentifier
    /// Its key column (the primary key).
    public let keyColumn: SQLIdentifier
    /// The version column in the captured table.
    public let versionColumn: SQLIdentifier
    /// The side table of deleted keys' versions.
    public let deletedTable: SQLIdentifier
    /// The change table.
    public let changeTable: SQLIdentifier
    /// The prefix of the triggers' and functions' names (`<prefix>_before`, `<prefix>_after`, …).
    public let objectPrefix: String

    /// Validates the names.
    /// - Parameters:
    ///   - table: The captured table.
    ///   - keyColumn: Its key column.
    ///   - versionColumn: The version column; `zddm_version` by default.
    ///   - deletedTable: The deleted-versions table; `<table>_zddm_deleted` by default.
    ///   - changeTable: The change table; `<table>_zddm_changes` by default.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` naming the invalid name.
    public init(
        table: String,
        keyColumn: String,
        versionColumn: String = "zddm_version",
        deletedTable: String? = nil,
        changeTable: String? = nil
    ) throws {
        self.table = try SQLIdentifier(table, role: "table name")
        self.keyColumn = try SQLIdentifier(keyColumn, role: "key column name")
        self.versionColumn = try SQLIdentifier(versionColumn, role: "version column name")
        self.deletedTable = try Self.derived(deletedTable, table + "_zddm_deleted", role: "deleted-versions table")
        self.changeTable = try Self.derived(changeTable, table + "_zddm_changes", role: "change table")
        let prefix = table + "_zddm"
        guard SQLIdentifier.isValid(prefix + "_before_write") else {
            throw ZDDMError(
                .invalidArgument,
                message: "the table name is too long to derive change capture's trigger names (at most 50 characters)"
            )
        }
        self.objectPrefix = prefix
        guard keyColumn.lowercased() != versionColumn.lowercased() else {
            throw ZDDMError(.invalidArgument, message: "the key and version columns need distinct names")
        }
    }

    /// A trigger's or function's name: the prefix and a suffix.
    /// - Parameter suffix: What the object does, e.g. `before_write`.
    /// - Returns: The validated identifier.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` when it is too long.
    public func object(_ suffix: String) throws -> SQLIdentifier {
        try SQLIdentifier(objectPrefix + "_" + suffix, role: "change capture object name")
    }

    private static func derived(_ explicit: String?, _ derived: String, role: String) throws -> SQLIdentifier {
        if let explicit { return try SQLIdentifier(explicit, role: role + " name") }
        guard SQLIdentifier.isValid(derived) else {
            throw ZDDMError(
                .invalidArgument,
                message: "the \(role)'s derived name would be longer than 63 characters: pass its name explicitly"
            )
        }
        return try SQLIdentifier(derived, role: role + " name")
    }
}

extension ChangeCaptureSchema {
    /// A `SELECT` of the captured table's keys and the deleted-versions table's keys strictly after a cursor, in key
    /// order, each key once: a page of ``ZDDM/KeyValueStore/keysIncludingDeleted(after:limit:)``.
    ///
    /// Each table's page is taken from its key index (`ORDER BY … LIMIT`), then the two pages are merged.
    /// - Parameters:
    ///   - collation: Appended to every key in a comparison or an `ORDER BY` (e.g. ` COLLATE BINARY`), or empty.
    ///   - cursor: The cursor's placeholder, or `nil` for the first page.
    ///   - limit: The limit's placeholder.
    /// ``keysIncludingDeletedSQL(collation:cursor:limit:)`` for the first page (the limit the only
    /// parameter) and for the following ones (the cursor, then the limit).
    /// - Parameters:
    ///   - collation: Appended to every key in a comparison or an `ORDER BY`, or empty.
    ///   - placeholders: The first and the second parameter's placeholders (`?1`, `?2` or `$1`, `$2`).
    package func keysIncludingDeletedStatements(
        collation: String,
        placeholders: (String, String)
    ) -> (first: String, following: String) {
        (
            keysIncludingDeletedSQL(collation: collation, cursor: nil, limit: placeholders.0),
            keysIncludingDeletedSQL(
                collation: collation,
                cursor: placeholders.0,
                limit: placeholders.1
            )
        )
    }

    package func keysIncludingDeletedSQL(
        collation: String,
        cursor: String?,
        limit: String
    ) -> String {
        let k = keyColumn.quoted
        func page(_ key: String, _ table: String) -> String {
            let condition = cursor.map { " WHERE \(key)\(collation) > \($0)" } ?? ""
            return "SELECT \(key) AS zddm_key FROM \(table)\(condition) ORDER BY \(key)\(collation) LIMIT \(limit)"
        }
        return """
            SELECT zddm_key FROM (SELECT zddm_key FROM (\(page(k, table.quoted))) AS zddm_live \
            UNION SELECT zddm_key FROM (\(page("\"key\"", deletedTable.quoted))) AS zddm_gone) AS zddm_keys \
            ORDER BY zddm_key\(collation) LIMIT \(limit)
            """
    }
}

/// The SQL of ``ZDDM/KeyValueStore/keyVersions(after:limit:)`` for a key-value table with a version column: keys
/// with their versions and tombstone flags in key order, with (for Old's role) the deleted-versions table's keys
/// that have no row.
package struct KeyVersionsSQL: Sendable {
    /// The first page: the limit is the only parameter.
    package let first: String
    /// A page after a cursor: the cursor, then the limit.
    package let following: String

    /// Builds the statements.
    /// - Parameters:
    ///   - schema: The table's names.
    ///   - versionColumn: The version column.
    ///   - capture: Change capture on the table (Old's role), whose deleted-versions table is listed too.
    ///   - collation: The collation clause ordering keys (` COLLATE BINARY`, ` COLLATE "C"`, or empty).
    ///   - placeholders: The cursor's and the limit's placeholders in a page after a cursor, and the limit's in
    ///     the first page.
    ///   - trueLiteral: The SQL of a true tombstone flag.
    ///   - withValues: Whether each row ends with the value column (`NULL` for a deleted key without a row).
    package init(
        schema: KeyValueTableSchema,
        versionColumn: SQLIdentifier,
        capture: ChangeCaptureSchema?,
        collation: String,
        placeholders: (cursor: String, limit: String, firstLimit: String),
        trueLiteral: String,
        withValues: Bool = false
    ) {
        func page(cursor: String?, limit: String) -> String {
            let t = schema.table.quoted
            let k = schema.keyColumn.quoted
            let d = schema.tombstoneColumn.quoted
            let liveValue = withValues ? ", \(schema.valueColumn.quoted) AS zddm_value" : ""
            let goneValue = withValues ? ", NULL AS zddm_value" : ""
            let live = """
                SELECT \(k) AS zddm_key, \(versionColumn.quoted) AS zddm_version, \(d) AS zddm_tombstone\(liveValue) \
                FROM \(t)\
                \(cursor.map { " WHERE \(k)\(collation) > \($0)" } ?? "") ORDER BY \(k)\(collation) LIMIT \(limit)
                """
            guard let capture else { return live }
            let g = capture.deletedTable.quoted
            let gone = """
                SELECT g."key" AS zddm_key, g.version AS zddm_version, \(trueLiteral) AS zddm_tombstone\(goneValue) \
                FROM \(g) AS g WHERE \(cursor.map { "g.\"key\"\(collation) > \($0) AND " } ?? "")\
                NOT EXISTS (SELECT 1 FROM \(t) AS r WHERE r.\(k) = g."key") \
                ORDER BY g."key"\(collation) LIMIT \(limit)
                """
            return """
                SELECT * FROM (SELECT * FROM (\(live)) AS zddm_live \
                UNION ALL SELECT * FROM (\(gone)) AS zddm_gone) AS zddm_all ORDER BY zddm_key\(collation) LIMIT \(limit)
                """
        }
        first = page(cursor: nil, limit: placeholders.firstLimit)
        following = page(cursor: placeholders.cursor, limit: placeholders.limit)
    }
}
