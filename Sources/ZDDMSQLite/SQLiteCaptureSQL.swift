import ZDDM
import ZDDMSQL

/// The SQL of change capture on one SQLite table, built once from validated, quoted names: the side tables, the
/// triggers, and the statements the stores run against them.
///
/// The triggers give every change of the captured table, whoever makes it, exactly one version bump and one
/// change-table entry:
///
/// | trigger | fires | does |
/// | --- | --- | --- |
/// | `<prefix>_before_write` | `BEFORE INSERT`, when the key already has a row | keeps the row's version as a floor in the deleted-versions table, so a row that `INSERT OR REPLACE` removes without firing delete triggers still has its version continued |
/// | `<prefix>_after_insert` | `AFTER INSERT` | version = (deleted-versions entry or 0) + 1: appends the entry, sets the row's version, drops the deleted-versions entry |
/// | `<prefix>_after_update` | `AFTER UPDATE` keeping the key, unless it is a trigger's own version update | version = max(old version, floor) + 1: appends the entry, sets the row's version |
/// | `<prefix>_before_rekey` | `BEFORE UPDATE` moving a row to a key that has a row | keeps that row's version as a floor |
/// | `<prefix>_after_rekey` | `AFTER UPDATE` changing the key | a deletion of the old key and an insertion of the new one |
/// | `<prefix>_after_delete` | `AFTER DELETE` | version = max(old version, floor) + 1: keeps it in the deleted-versions table, appends the entry |
///
/// SQLite triggers cannot assign `NEW.column`, so the `AFTER` triggers set the version with an `UPDATE` of the row.
/// That `UPDATE` fires `<prefix>_after_update` again (always from `<prefix>_after_insert` and
/// `<prefix>_after_rekey`; from itself only with `PRAGMA recursive_triggers` on). The trigger recognises its own
/// update and does nothing for it: such an update changes the version, to exactly the version of the newest entry
/// of the change table, which the trigger appended for this key just before. A writer's update either leaves the
/// version as it was, or sets a value that is not the newest entry's (the newest entry of a key holds the row's
/// version), so it is always captured; and the version update only runs when the row does not already hold the
/// version, so it never repeats.
///
/// The stores' own writes (``versionedWrite(columns:values:)``) set the version in their statement, to exactly the
/// version the triggers give: an `UPDATE` of the row to `max(version, deleted-versions entry) + 1`, or, for a key
/// without a row, an `INSERT` at `deleted-versions entry + 1`. `<prefix>_after_update` or `<prefix>_after_insert`
/// then finds the row already at that version: it appends the change entry, and its own update of the row matches
/// nothing. Such a write of a key that has a row changes two rows, the row and the entry, where an upsert changes
/// five (the floor kept by `<prefix>_before_write`, the row, the entry, the trigger's update of the row, the floor
/// dropped); of a key without a row, the row and the entry, and the deleted-versions entry if the key has one.
struct SQLiteCaptureSQL: Sendable {
    /// The names.
    let schema: ChangeCaptureSchema
    /// The triggers' names and their `CREATE TRIGGER` statements, in creation order.
    let triggers: [(name: SQLIdentifier, sql: String)]
    /// Creates the deleted-versions table.
    let createDeleted: String
    /// Creates the change table.
    let createChanges: String
    /// Adds the version column to the captured table.
    let addVersionColumn: String
    /// `SELECT version FROM deleted WHERE key = ?`
    let readDeleted: String
    /// `SELECT seq, key, version FROM changes ORDER BY seq LIMIT ?`
    let listChanges: String
    /// Entries and the oldest entry's age in seconds, by SQLite's clock.
    let backlog: String
    private let readManyDeletedPrefix: String
    /// Removes one entry while its sequence number, key and version are those given (without `AUTOINCREMENT`, a
    /// removed entry's sequence number is given again once it was the largest).
    let removeChange: String
    /// `max(version, deleted-versions entry or 0) + 1` for the row an `UPDATE` changes.
    private let nextVersionOfRow: String
    /// `(deleted-versions entry of ?1 or 0) + 1`.
    private let firstVersionOfKey: String

    /// SQLite's clock as Unix seconds with milliseconds, from `julianday` (available in every SQLite 3).
    static let now = "((julianday('now') - 2440587.5) * 86400.0)"

    /// The suffixes of the triggers' names, all at most 12 characters so the names stay valid identifiers.
    static let triggerSuffixes = [
        "before_write", "after_insert", "after_update", "before_rekey", "after_rekey", "after_delete",
    ]

    /// Builds the SQL.
    /// - Parameters:
    ///   - schema: The names.
    ///   - keyType: The declared type of the captured table's key column, used for the side tables' key columns.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` when a trigger name is too long.
    init(_ schema: ChangeCaptureSchema, keyType: String) throws {
        self.schema = schema
        let t = schema.table.quoted
        let k = schema.keyColumn.quoted
        let ver = schema.versionColumn.quoted
        let del = schema.deletedTable.quoted
        let ch = schema.changeTable.quoted
        let now = Self.now
        let type = keyType.isEmpty ? "" : " " + keyType
        createDeleted = """
            CREATE TABLE IF NOT EXISTS \(del) ("key"\(type) NOT NULL PRIMARY KEY, "version" INTEGER NOT NULL)
            """
        createChanges = """
            CREATE TABLE IF NOT EXISTS \(ch) ("seq" INTEGER PRIMARY KEY, "key"\(type) NOT NULL, \
            "version" INTEGER NOT NULL, "changed_at" REAL NOT NULL)
            """
        addVersionColumn = "ALTER TABLE \(t) ADD COLUMN \(ver) INTEGER NOT NULL DEFAULT 0"
        readDeleted = "SELECT \"version\" FROM \(del) WHERE \"key\" = ?"
        listChanges = "SELECT \"seq\", \"key\", \"version\" FROM \(ch) ORDER BY \"seq\" LIMIT ?"
        backlog = "SELECT count(*), \(now) - min(\"changed_at\") FROM \(ch)"
        readManyDeletedPrefix = "SELECT \"key\", \"version\" FROM \(del) WHERE \"key\" IN ("
        removeChange = "DELETE FROM \(ch) WHERE \"seq\" = ? AND \"key\" = ? AND \"version\" = ?"
        let deletedOf = { (key: String) in "(SELECT \"version\" FROM \(del) WHERE \"key\" = \(key))" }
        nextVersionOfRow = "max(coalesce(\(ver), 0), coalesce(\(deletedOf("\(t).\(k)")), 0)) + 1"
        firstVersionOfKey = "coalesce(\(deletedOf("?1")), 0) + 1"

        /// The version a key's deleted-versions entry holds, or 0.
        func floor(_ key: String) -> String {
            "coalesce((SELECT \"version\" FROM \(del) WHERE \"key\" = \(key)), 0)"
        }
        /// Keeps the version of the row holding `key`, if any, as its floor.
        func keepFloor(_ key: String) -> String {
            """
            INSERT INTO \(del) ("key", "version") SELECT \(k), coalesce(\(ver), 0) FROM \(t) WHERE \(k) = \(key) \
            ON CONFLICT ("key") DO UPDATE SET "version" = max("version", excluded."version");
            """
        }
        /// Appends an entry, sets the row's version (only when it differs) and drops the key's floor.
        func bump(_ key: String, to version: String) -> String {
            """
            INSERT INTO \(ch) ("key", "version", "changed_at") VALUES (\(key), \(version), \(now)); \
            UPDATE \(t) SET \(ver) = \(version) WHERE \(k) = \(key) AND \(ver) IS NOT \(version); \
            DELETE FROM \(del) WHERE "key" = \(key);
            """
        }
        /// Records a key's deletion at `version`: keeps the version, appends the entry.
        func deleted(_ key: String, version: String) -> String {
            """
            INSERT INTO \(ch) ("key", "version", "changed_at") VALUES (\(key), \(version), \(now)); \
            INSERT INTO \(del) ("key", "version") VALUES (\(key), \(version)) \
            ON CONFLICT ("key") DO UPDATE SET "version" = excluded."version";
            """
        }
        let afterOld = "max(coalesce(OLD.\(ver), 0), \(floor("OLD.\(k)"))) + 1"
        let ownUpdate = """
            NEW.\(ver) IS NOT OLD.\(ver) AND EXISTS (SELECT 1 FROM \(ch) \
            WHERE "seq" = (SELECT max("seq") FROM \(ch)) AND "key" = NEW.\(k) AND "version" = NEW.\(ver))
            """
        let bodies: [String] = [
            """
            BEFORE INSERT ON \(t) FOR EACH ROW WHEN EXISTS (SELECT 1 FROM \(t) WHERE \(k) = NEW.\(k)) \
            BEGIN \(keepFloor("NEW.\(k)")) END
            """,
            """
            AFTER INSERT ON \(t) FOR EACH ROW \
            BEGIN \(bump("NEW.\(k)", to: floor("NEW.\(k)") + " + 1")) END
            """,
            """
            AFTER UPDATE ON \(t) FOR EACH ROW WHEN NEW.\(k) IS OLD.\(k) AND NOT (\(ownUpdate)) \
            BEGIN \(bump("NEW.\(k)", to: "max(coalesce(OLD.\(ver), 0), \(floor("NEW.\(k)"))) + 1")) END
            """,
            """
            BEFORE UPDATE ON \(t) FOR EACH ROW WHEN NEW.\(k) IS NOT OLD.\(k) \
            AND EXISTS (SELECT 1 FROM \(t) WHERE \(k) = NEW.\(k)) \
            BEGIN \(keepFloor("NEW.\(k)")) END
            """,
            """
            AFTER UPDATE ON \(t) FOR EACH ROW WHEN NEW.\(k) IS NOT OLD.\(k) \
            BEGIN \(deleted("OLD.\(k)", version: afterOld)) \
            \(bump("NEW.\(k)", to: floor("NEW.\(k)") + " + 1")) END
            """,
            """
            AFTER DELETE ON \(t) FOR EACH ROW \
            BEGIN \(deleted("OLD.\(k)", version: afterOld)) END
            """,
        ]
        triggers = try zip(Self.triggerSuffixes, bodies).map { suffix, body in
            let name = try schema.object(suffix)
            return (name, "CREATE TRIGGER \(name.quoted) " + body)
        }
    }

    /// A store's own write of a key, with the version set by its statements rather than by the triggers.
    struct VersionedWrite: Sendable {
        /// `UPDATE table SET assignments, version = <next> WHERE key = ?1 RETURNING version`, where `<next>` is the
        /// version `<prefix>_after_update` gives an update keeping the key, `max(old version, deleted-versions
        /// entry) + 1`. The trigger finds the row already at that version, so it appends the change entry and writes
        /// nothing else. No row comes back when the key has no row.
        let update: String
        /// `INSERT INTO table (key, columns…, version) VALUES (?1, values…, <first>) RETURNING version`, run when
        /// ``update`` found no row, where `<first>` is the version `<prefix>_after_insert` gives, `deleted-versions
        /// entry + 1`. The trigger finds the row already at that version, so it appends the change entry and drops
        /// the deleted-versions entry; `<prefix>_before_write` does nothing, the key having no row.
        let insert: String
    }

    /// The statements of a store's own write (see ``VersionedWrite``): one `UPDATE` of the row, or one `INSERT`, and
    /// the triggers append the change entry. A plain upsert would also fire `<prefix>_before_write` (keeping the row's
    /// version as a floor) and `<prefix>_after_update`'s own update of the row: three more writes.
    /// - Parameters:
    ///   - columns: The quoted columns the write sets, besides the key and the version.
    ///   - values: Their values, in the same order: `?2`, `?3`… (the key is `?1`) or literals.
    func versionedWrite(columns: [String], values: [String]) -> VersionedWrite {
        let t = schema.table.quoted
        let k = schema.keyColumn.quoted
        let ver = schema.versionColumn.quoted
        let assignments = zip(columns, values).map { "\($0) = \($1)" }.joined(separator: ", ")
        let names = ([k] + columns + [ver]).joined(separator: ", ")
        let list = (["?1"] + values + [firstVersionOfKey]).joined(separator: ", ")
        return VersionedWrite(
            update: "UPDATE \(t) SET \(assignments), \(ver) = \(nextVersionOfRow) WHERE \(k) = ?1 RETURNING \(ver)",
            insert: "INSERT INTO \(t) (\(names)) VALUES (\(list)) RETURNING \(ver)"
        )
    }

    /// `SELECT key, version FROM deleted WHERE key IN (?, …)` with `count` placeholders.
    func readManyDeleted(_ count: Int) -> String {
        readManyDeletedPrefix + SQLiteBinding.placeholders(count) + ")"
    }
}
