import GRDB
import Testing
import ZDDM
import ZDDMSQL
import ZDDMSQLite

/// The captured stores' own writes set the version in their statement (an `UPDATE`, or an `INSERT` for a key without
/// a row), so the triggers only append the change entry. These tests count the rows each write changes (SQLite's
/// `total_changes()`, which counts what triggers change too) on the store's only connection, and check that versions
/// and entries stay what the triggers alone would give, mixed with plain SQL writers.
@Suite("SQLite captured stores' own writes")
struct SQLiteCapturedWriteTests {
    @Test("Key-value table: a write changes the row and appends one entry, nothing else, recursive triggers off and on")
    func keyValueStore() async throws {
        for recursive in [false, true] {
            let queue = try DatabaseQueue()
            let database = SQLiteDatabase(writer: queue)
            let store = try SQLiteStore<String, String>(database: database, table: "kv", changeCapture: true)
            try await store.prepare()
            if recursive { try await database.execute("PRAGMA recursive_triggers = ON") }
            let probe = Probe(queue: queue, table: "kv", key: "key")

            // A new key: the row and its entry. The same key again: the row's update and its entry.
            var rows = try await probe.changes()
            #expect(try await store.writeVersioned("a", "one") == 1)
            #expect(try await probe.changes() == rows + 2)
            rows = try await probe.changes()
            #expect(try await store.writeVersioned("a", "two") == 2)
            #expect(try await probe.changes() == rows + 2)
            #expect(try await store.readVersioned("a") == .value("two", version: 2))

            // Plain writes and tombstones of the store take the same path.
            rows = try await probe.changes()
            try await store.write("a", "three")
            #expect(try await probe.changes() == rows + 2)
            #expect(try await store.readVersioned("a") == .value("three", version: 3))
            rows = try await probe.changes()
            try await store.writeTombstone("a")
            #expect(try await probe.changes() == rows + 2)
            #expect(try await store.readVersioned("a") == .tombstone(version: 4))
            try await store.writeTombstone("t")
            #expect(try await store.readVersioned("t") == .tombstone(version: 1))
            try await store.write("w", "new")
            #expect(try await store.readVersioned("w") == .value("new", version: 1))

            // A deleted key continues above its deletion and loses its deleted-versions entry.
            #expect(try await store.deleteVersioned("a") == 5)
            rows = try await probe.changes()
            #expect(try await store.writeVersioned("a", "again") == 6)
            #expect(try await probe.changes() == rows + 3)
            #expect(try await probe.deleted("a") == nil)

            // A plain insert that found the row leaves its version as a floor; the next write goes above both and
            // drops it.
            try await database.execute("INSERT INTO kv (key, value) VALUES ('a', X'22') ON CONFLICT DO NOTHING")
            #expect(try await probe.deleted("a") == 6)
            #expect(try await store.writeVersioned("a", "above") == 7)
            #expect(try await probe.deleted("a") == nil)
            // A floor above the row's version (only a writer of the side table leaves one): the write goes above it.
            try await database.execute("INSERT INTO kv_zddm_deleted (key, version) VALUES ('a', 40)")
            #expect(try await store.writeVersioned("a", "floor") == 41)
            #expect(try await store.readVersioned("a") == .value("floor", version: 41))

            // Plain SQL writers between the store's writes still get exactly one bump each.
            try await database.execute("UPDATE kv SET zddm_version = 999 WHERE key = 'a'")
            #expect(try await store.readVersioned("a")?.version == 42)
            try await database.execute("UPDATE kv SET zddm_version = zddm_version + 1 WHERE key = 'a'")
            #expect(try await store.readVersioned("a")?.version == 43)
            #expect(try await store.writeVersioned("a", "last") == 44)

            // One entry per change, at the version each change returned or left, in order.
            let entries = try await probe.entries(of: "a")
            #expect(entries == [1, 2, 3, 4, 5, 6, 7, 41, 42, 43, 44], "\(entries)")
            let rowVersions = try await store.readManyVersioned(["a", "t", "w"]).mapValues(\.version)
            #expect(rowVersions == ["a": 44, "t": 1, "w": 1])
        }
    }

    @Test("Own table: a write changes the row and appends one entry, nothing else, recursive triggers off and on")
    func tableStore() async throws {
        for recursive in [false, true] {
            let queue = try DatabaseQueue()
            let database = SQLiteDatabase(writer: queue)
            try await database.execute(
                "CREATE TABLE notes (id INTEGER PRIMARY KEY NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL)"
            )
            let schema = try ChangeCaptureSchema(table: "notes", keyColumn: "id")
            try await SQLiteChangeCapture(database: database, schema: schema).install()
            let store = try SQLiteTableStore<Int64, Note>(
                database: database,
                mapping: RowMapping(
                    table: "notes",
                    keyColumn: "id",
                    valueColumns: ["title", "body"],
                    encode: { ["title": .text($0.title), "body": .text($0.body)] },
                    decode: { Note(title: try $0.text("title"), body: try $0.text("body")) }
                ),
                changeCapture: schema
            )
            try await store.prepare()
            if recursive { try await database.execute("PRAGMA recursive_triggers = ON") }
            let probe = Probe(queue: queue, table: "notes", key: "id")

            var rows = try await probe.changes()
            #expect(try await store.writeVersioned(1, Note(title: "a", body: "one")) == 1)
            #expect(try await probe.changes() == rows + 2)
            rows = try await probe.changes()
            #expect(try await store.writeVersioned(1, Note(title: "b", body: "two")) == 2)
            #expect(try await probe.changes() == rows + 2)
            try await store.write(1, Note(title: "c", body: "three"))
            #expect(try await store.readVersioned(1) == .value(Note(title: "c", body: "three"), version: 3))

            // A tombstone deletes the row (a change) and a write brings it back above it.
            try await store.writeTombstone(1)
            #expect(try await store.readVersioned(1) == .tombstone(version: 4))
            #expect(try await store.writeVersioned(1, Note(title: "d", body: "four")) == 5)
            #expect(try await store.read(1) == .value(Note(title: "d", body: "four")))
            #expect(try await store.deleteVersioned(1) == 6)
            try await store.write(1, Note(title: "e", body: "five"))
            #expect(try await store.readVersioned(1)?.version == 7)

            try await database.execute("UPDATE notes SET zddm_version = 999, title = 'f' WHERE id = 1")
            #expect(try await store.writeVersioned(1, Note(title: "g", body: "six")) == 9)
            #expect(try await probe.entries(of: 1) == [1, 2, 3, 4, 5, 6, 7, 8, 9])
        }
    }
}

private struct Note: Equatable, Sendable {
    var title: String
    var body: String
}

/// Reads a captured table and its side tables on the store's own connection.
private struct Probe {
    let queue: DatabaseQueue
    let table: String
    let key: String

    /// Rows changed on the connection so far, by statements and by triggers.
    func changes() async throws -> Int {
        try await queue.read { $0.totalChangesCount }
    }

    func deleted(_ key: some DatabaseValueConvertible & Sendable) async throws -> Int64? {
        try await queue.read { db in
            try Int64.fetchOne(db, sql: "SELECT version FROM \(table)_zddm_deleted WHERE key = ?", arguments: [key])
        }
    }

    /// The versions of a key's change entries, oldest first.
    func entries(of key: some DatabaseValueConvertible & Sendable) async throws -> [Int64] {
        try await queue.read { db in
            try Int64.fetchAll(
                db,
                sql: "SELECT version FROM \(table)_zddm_changes WHERE key = ? ORDER BY seq",
                arguments: [key]
            )
        }
    }
}
