import Foundation
import GRDB
import Synchronization
import Testing
import ZDDM
import ZDDMSQL
import ZDDMSQLite
import ZDDMTesting

@Suite("SQLite versions, fence and change capture")
struct SQLiteVersionTests {
    @Test("Key-value table, String keys: New's role (fence) and Old's role (change capture)")
    func keyValueString() async throws {
        try await runBothRoles(key: { "key-\($0)" }, areInIncreasingOrder: utf8Order)
    }

    @Test("Key-value table, Int64 keys: New's role (fence) and Old's role (change capture)")
    func keyValueInt64() async throws {
        try await runBothRoles(key: { Int64($0) - 50 }, areInIncreasingOrder: { $0 < $1 })
    }

    @Test("Key-value table, byte keys: New's role (fence) and Old's role (change capture)")
    func keyValueBytes() async throws {
        try await runBothRoles(
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0xff]) },
            areInIncreasingOrder: { $0 < $1 }
        )
    }

    private func runBothRoles<Key: SQLKey & Comparable>(
        key: @escaping @Sendable (Int) -> Key,
        areInIncreasingOrder: @escaping @Sendable (Key, Key) -> Bool
    ) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        for capture in [false, true] {
            try await StoreConformanceSuite(
                makeStore: {
                    let store = try SQLiteStore<Key, String>(
                        database: try SQLiteDatabase.open(url: "sqlite:" + directory.file()),
                        table: "kv",
                        versionColumn: "zddm_version",
                        changeCapture: capture
                    )
                    try await store.prepare()
                    #expect(store.capabilities.contains(.versions))
                    #expect(store.capabilities.contains(.changeCapture) == capture)
                    return store
                },
                key: key,
                value: { "value-\($0)" },
                areInIncreasingOrder: areInIncreasingOrder,
                versionRoles: capture ? [.assigns] : [.fence]
            ).run()
        }
    }

    @Test("Own table, String keys: New's role (version columns) and Old's role (change capture)")
    func tableString() async throws {
        try await runTableBothRoles(keyType: "TEXT", key: { "key-\($0)" }, areInIncreasingOrder: utf8Order)
    }

    @Test("Own table, Int64 keys: New's role (version columns) and Old's role (change capture)")
    func tableInt64() async throws {
        try await runTableBothRoles(keyType: "INTEGER", key: { Int64($0) - 50 }, areInIncreasingOrder: { $0 < $1 })
    }

    @Test("Own table, byte keys: New's role (version columns) and Old's role (change capture)")
    func tableBytes() async throws {
        try await runTableBothRoles(
            keyType: "BLOB",
            key: { KeyBytes([UInt8(truncatingIfNeeded: $0 >> 8), UInt8(truncatingIfNeeded: $0), 0x01]) },
            areInIncreasingOrder: { $0 < $1 }
        )
    }

    private func runTableBothRoles<Key: SQLKey>(
        keyType: String,
        key: @escaping @Sendable (Int) -> Key,
        areInIncreasingOrder: @escaping @Sendable (Key, Key) -> Bool
    ) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        for capture in [false, true] {
            try await StoreConformanceSuite(
                makeStore: {
                    let database = try SQLiteDatabase.open(url: "sqlite:" + directory.file())
                    try await database.execute(
                        "CREATE TABLE notes (id \(keyType) PRIMARY KEY NOT NULL, body TEXT NOT NULL)"
                    )
                    let schema = try ChangeCaptureSchema(table: "notes", keyColumn: "id")
                    if capture { try await SQLiteChangeCapture(database: database, schema: schema).install() }
                    let store = try SQLiteTableStore<Key, String>(
                        database: database,
                        mapping: RowMapping(
                            table: "notes",
                            keyColumn: "id",
                            valueColumns: ["body"],
                            encode: { ["body": .text($0)] },
                            decode: { try $0.text("body") }
                        ),
                        versionColumn: capture ? nil : "zddm_version",
                        changeCapture: capture ? schema : nil
                    )
                    try await store.prepare()
                    #expect(store.capabilities.contains(.versions))
                    #expect(store.capabilities.contains(.changeCapture) == capture)
                    return store
                },
                key: key,
                value: { "note \($0)" },
                areInIncreasingOrder: areInIncreasingOrder,
                versionRoles: capture ? [.assigns] : [.fence]
            ).run()
        }
    }

    @Test("The fleet state passes its conformance suite, alone and shared by two connections to one file")
    func fleetState() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file()
        try await FleetStateConformanceSuite(
            makeStore: {
                let store = try SQLiteFleetStateStore(database: try SQLiteDatabase.open(url: "sqlite:" + path))
                try await store.prepare()
                return store
            },
            prefix: "one"
        ).run()
        // Two connections to the file: each call alternates between them.
        let first = try SQLiteFleetStateStore(database: try SQLiteDatabase.open(url: "sqlite:" + path))
        let second = try SQLiteFleetStateStore(database: try SQLiteDatabase.open(url: "sqlite:" + path))
        try await second.prepare()
        try await FleetStateConformanceSuite(makeStore: { AlternatingFleetStore(first, second) }, prefix: "two").run()
        let marks = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for index in 0..<40 {
                group.addTask { try await (index % 2 == 0 ? first : second).markBehind("shared") }
            }
            var marks: [UInt64] = []
            for try await mark in group { marks.append(mark) }
            return marks
        }
        #expect(Set(marks) == Set(1...40))
        #expect(try await first.state(of: "shared").behind == 40)
    }

    @Test("The fleet state on a table an earlier version created: an error naming the fix, prepare() adds the column")
    func fleetStateOlderTable() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let database = try SQLiteDatabase.open(url: "sqlite:" + directory.file())
        try await database.execute(
            """
            CREATE TABLE zddm_fleet ("migration" TEXT NOT NULL PRIMARY KEY, "stage" TEXT NOT NULL, \
            "rate" REAL NOT NULL, "high_water" REAL NOT NULL, "killswitch" INTEGER NOT NULL, \
            "behind" INTEGER NOT NULL, "caught_up" INTEGER NOT NULL, "lease_holder" TEXT, "lease_token" INTEGER, \
            "lease_expires" REAL, "last_token" INTEGER NOT NULL DEFAULT 0)
            """
        )
        try await database.execute(
            "INSERT INTO zddm_fleet VALUES ('m', 'live', 1.0, 1.0, 0, 4, 4, NULL, NULL, NULL, 0)"
        )
        let store = try SQLiteFleetStateStore(database: database)
        do {
            _ = try await store.state(of: "m")
            Issue.record("a table without verified_behind must not read")
        } catch let error as ZDDMError {
            #expect(error.message.contains("prepare() adds it"), "\(error)")
        }
        try await store.prepare()
        try await store.prepare()
        var state = try await store.state(of: "m")
        #expect(state == FleetState(stage: .live, rate: 1, highWaterRate: 1, behind: 4, caughtUp: 4))
        state = try await store.recordCleanVerify("m", startedAt: 4)
        #expect(state.permitsRampdown && state.verifiedBehind == 4)
        #expect(try await store.update("m", FleetControlChange(stage: .rampdown)).stage == .rampdown)
        #expect(try await store.state(of: "m").verifiedBehind == 4, "an update keeps the record")
    }

    @Test("Plain SQL writers get versions and exactly one change entry per change, recursive triggers off and on")
    func plainSQLBypass() async throws {
        for recursive in [false, true] {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let path = directory.file()
            let database = try SQLiteDatabase.open(url: "sqlite:" + path)
            let store = try SQLiteStore<String, String>(database: database, table: "kv", changeCapture: true)
            try await store.prepare()
            let probe = try CaptureProbe(path: path, table: "kv")
            if recursive { try await database.execute("PRAGMA recursive_triggers = ON") }

            try await database.execute("INSERT INTO kv (key, value) VALUES ('a', X'2261') ")
            #expect(try probe.version("a") == 1)
            #expect(try probe.entries() == [Entry("a", 1)])

            try await database.execute("UPDATE kv SET value = X'2262' WHERE key = 'a'")
            #expect(try probe.version("a") == 2)
            try await database.execute(
                "INSERT INTO kv (key, value) VALUES ('a', X'2263') ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            )
            #expect(try probe.version("a") == 3)
            // Writers that set the version column themselves: lower, much higher, exactly the next one, the same.
            for statement in [
                "UPDATE kv SET zddm_version = 0 WHERE key = 'a'",
                "UPDATE kv SET zddm_version = 999, value = X'2264' WHERE key = 'a'",
                "UPDATE kv SET zddm_version = zddm_version + 1 WHERE key = 'a'",
                "UPDATE kv SET zddm_version = zddm_version WHERE key = 'a'",
                "INSERT INTO kv (key, value, zddm_version) VALUES ('a', X'2265', 77) "
                    + "ON CONFLICT (key) DO UPDATE SET zddm_version = 5",
            ] {
                let before = try probe.version("a") ?? 0
                let count = try probe.entries().count
                try await database.execute(statement)
                #expect(try probe.version("a") == before + 1, "\(statement)")
                #expect(try probe.entries().count == count + 1, "\(statement)")
                #expect(try probe.entries().last == Entry("a", before + 1), "\(statement)")
            }
            let beforeDelete = try probe.version("a") ?? 0
            try await database.execute("DELETE FROM kv WHERE key = 'a'")
            #expect(try probe.version("a") == nil)
            #expect(try probe.deleted("a") == beforeDelete + 1)
            #expect(try await store.readVersioned("a") == .tombstone(version: beforeDelete + 1))
            #expect(try probe.entries().last == Entry("a", beforeDelete + 1))

            // A key inserted again continues above its deletion, whatever version the statement gives it.
            try await database.execute("INSERT INTO kv (key, value, zddm_version) VALUES ('a', X'2266', 1)")
            #expect(try probe.version("a") == beforeDelete + 2)
            #expect(try probe.deleted("a") == nil)

            // INSERT OR REPLACE over a row: one change with recursive triggers off, a deletion and an insertion on.
            let count = try probe.entries().count
            try await database.execute("INSERT OR REPLACE INTO kv (key, value) VALUES ('a', X'2267')")
            let replaced = try probe.version("a") ?? 0
            #expect(replaced == beforeDelete + (recursive ? 4 : 3))
            #expect(try probe.entries().count == count + (recursive ? 2 : 1))
            #expect(try probe.entries().last == Entry("a", replaced))

            // Several rows in one statement; a key moved to another.
            try await database.execute("INSERT INTO kv (key, value) VALUES ('b', X'2268'), ('c', X'2269')")
            let entriesBefore = try probe.entries().count
            try await database.execute("UPDATE kv SET value = X'2270'")
            #expect(try probe.entries().count == entriesBefore + 3)
            #expect(try probe.version("b") == 2 && probe.version("c") == 2)
            try await database.execute("UPDATE kv SET key = 'd' WHERE key = 'c'")
            #expect(try probe.version("d") == 1)
            #expect(try probe.deleted("c") == 3)
            #expect(try probe.entries().suffix(2) == [Entry("c", 3), Entry("d", 1)])

            // Every entry matches the version of a change, each key's entries strictly increase.
            var last: [String: UInt64] = [:]
            for entry in try probe.entries() {
                #expect(entry.version > last[entry.key] ?? 0, "\(entry)")
                last[entry.key] = entry.version
            }
            let changes = try await store.capturedChanges(limit: 1000)
            #expect(changes.map { Entry($0.key, $0.version) } == (try probe.entries()))
            try probe.close()
        }
    }

    @Test("Install on a table with rows: they start at version 0 and their first change gives 1; twice is a no-op")
    func installOnExistingTable() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file()
        let database = try SQLiteDatabase.open(url: "sqlite:" + path)
        try await database.execute(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL); "
                + "INSERT INTO accounts VALUES (1, 'one'), (2, 'two'), (3, 'three')"
        )
        let capture = try SQLiteChangeCapture(
            database: database,
            schema: ChangeCaptureSchema(table: "accounts", keyColumn: "id")
        )
        let before = try await capture.status()
        #expect(!before.isInstalled && before.backlog == nil)
        #expect(before.missing.contains("version column \"zddm_version\""), "\(before.missing)")
        try await capture.install()
        try await capture.install()
        let status = try await capture.status()
        #expect(status.isInstalled, "\(status.missing)")
        #expect(status.backlog == ChangeBacklog(entries: 0, oldestAge: nil))

        let store = try SQLiteTableStore<Int64, String>(
            database: database,
            mapping: accountsMapping(),
            changeCapture: ChangeCaptureSchema(table: "accounts", keyColumn: "id")
        )
        try await store.prepare()
        #expect(store.capabilities.isSuperset(of: [.versions, .changeCapture]))
        #expect(try await store.readVersioned(1) == .value("one", version: 0))
        #expect(try await store.writeVersioned(1, "uno") == 1)
        try await database.execute("UPDATE accounts SET name = 'dos' WHERE id = 2")
        #expect(
            try await store.readManyVersioned([1, 2, 3, 4]) == [
                1: .value("uno", version: 1), 2: .value("dos", version: 1), 3: .value("three", version: 0),
            ]
        )
        #expect(try await store.deleteVersioned(3) == 1)
        #expect(try await store.readVersioned(3) == .tombstone(version: 1))
        #expect(try await store.deleteVersioned(3) == 1)
        #expect(try await store.deleteVersioned(4) == 0)
        let changes = try await store.capturedChanges(limit: 10)
        #expect(changes.map(\.key) == [1, 2, 3] && changes.map(\.version) == [1, 1, 1])
        let backlog = try await capture.status().backlog
        #expect(backlog?.entries == 3 && backlog?.oldestAge != nil)

        try await capture.uninstall()
        let removed = try await capture.status()
        #expect(removed.missing.count == 8, "\(removed.missing)")  // 2 tables, 6 triggers; the column stays
        #expect(removed.backlog == nil)
        let refused = await #expect(throws: ZDDMError.self) { try await store.checkSchema() }
        #expect(refused?.code == .invalidArgument)
        #expect(refused?.description.contains("accounts_zddm_after_insert") == true, "\(String(describing: refused))")
        try await database.execute("UPDATE accounts SET name = 'x' WHERE id = 1")
        try await capture.uninstall()
    }

    @Test("A table store declaring change capture is refused by prepare() while the table lacks it")
    func tableStoreWithoutTriggers() async throws {
        let database = try SQLiteDatabase.open(url: "sqlite::memory:")
        try await database.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL)")
        let store = try SQLiteTableStore<Int64, String>(
            database: database,
            mapping: accountsMapping(),
            changeCapture: ChangeCaptureSchema(table: "accounts", keyColumn: "id")
        )
        for check in [{ try await store.prepare() }, { try await store.checkSchema() }] {
            let error = await #expect(throws: ZDDMError.self) { try await check() }
            #expect(error?.code == .invalidArgument)
            #expect(error?.description.contains("SQLiteChangeCapture") == true, "\(String(describing: error))")
            #expect(error?.description.contains("version column") == true, "\(String(describing: error))")
        }
        let wrong = #expect(throws: ZDDMError.self) {
            _ = try SQLiteTableStore<Int64, String>(
                database: database,
                mapping: accountsMapping(),
                changeCapture: ChangeCaptureSchema(table: "other", keyColumn: "id")
            )
        }
        #expect(wrong?.code == .invalidArgument)
        let noCapture = try SQLiteStore<String, String>(database: database, table: "kv")
        try await noCapture.prepare()
        #expect(!noCapture.capabilities.contains(.versions))
        let unsupported = await #expect(throws: ZDDMError.self) { _ = try await noCapture.readVersioned("k") }
        #expect(unsupported?.code == .unsupported)
        let captured = try SQLiteStore<String, String>(database: database, table: "kv", changeCapture: true)
        let missing = await #expect(throws: ZDDMError.self) { try await captured.checkSchema() }
        #expect(missing?.code == .invalidArgument)
        try await captured.prepare()
        try await captured.checkSchema()
        let fence = await #expect(throws: ZDDMError.self) {
            _ = try await captured.writeIfNewer("k", .value("v", version: 3))
        }
        #expect(fence?.code == .unsupported)
    }

    @Test("A key-value table without the version column gets it from prepare(), rows at version 0")
    func addsVersionColumn() async throws {
        let database = try SQLiteDatabase.open(url: "sqlite::memory:")
        let old = try SQLiteStore<String, String>(database: database, table: "kv")
        try await old.prepare()
        try await old.write("a", "one")
        let store = try SQLiteStore<String, String>(database: database, table: "kv", versionColumn: "zddm_version")
        let missing = await #expect(throws: ZDDMError.self) { try await store.checkSchema() }
        #expect(missing?.description.contains("zddm_version") == true, "\(String(describing: missing))")
        try await store.prepare()
        #expect(try await store.readVersioned("a") == .value("one", version: 0))
        #expect(try await store.writeIfNewer("a", .value("two", version: 1)))
        try await store.write("a", "three")
        #expect(try await store.readVersioned("a") == .value("three", version: 1))
    }

    @Test("Invalid or too long names are refused with an error naming the name's role")
    func badNames() async throws {
        let database = try SQLiteDatabase.open(url: "sqlite::memory:")
        let cases: [(String, () throws -> Void)] = [
            ("table name", { _ = try ChangeCaptureSchema(table: "a b", keyColumn: "id") }),
            ("key column name", { _ = try ChangeCaptureSchema(table: "t", keyColumn: "id;") }),
            ("version column name", { _ = try ChangeCaptureSchema(table: "t", keyColumn: "id", versionColumn: "v'") }),
            (
                "too long",
                {
                    _ = try ChangeCaptureSchema(
                        table: String(repeating: "t", count: 51),
                        keyColumn: "id",
                        deletedTable: "d",
                        changeTable: "c"
                    )
                }
            ),
            (
                "pass its name explicitly",
                {
                    _ = try ChangeCaptureSchema(table: String(repeating: "t", count: 51), keyColumn: "id")
                }
            ),
            ("fleet state table name", { _ = try SQLiteFleetStateStore(database: database, table: "zddm fleet") }),
            (
                "fleet state table name",
                {
                    _ = try SQLiteFleetStateStore(database: database, table: String(repeating: "f", count: 64))
                }
            ),
            (
                "version column name",
                {
                    _ = try SQLiteStore<String, String>(database: database, table: "kv", versionColumn: "x\"y")
                }
            ),
            (
                "distinct",
                { _ = try SQLiteStore<String, String>(database: database, table: "kv", versionColumn: "value") }
            ),
            (
                "longer than 63",
                {
                    _ = try SQLiteStore<String, String>(
                        database: database,
                        table: String(repeating: "k", count: 55),
                        changeCapture: true
                    )
                }
            ),
        ]
        for (role, make) in cases {
            let error = #expect(throws: ZDDMError.self) { try make() }
            #expect(error?.code == .invalidArgument)
            #expect(error?.description.contains(role) == true, "\(String(describing: error))")
        }
        // A capture on a missing table, a missing key column or a key column that is not unique.
        try await database.execute("CREATE TABLE loose (id INTEGER, name TEXT)")
        for (table, key, expected) in [
            ("absent", "id", "does not exist"), ("loose", "nope", "no key column"), ("loose", "id", "unique"),
        ] {
            let capture = try SQLiteChangeCapture(
                database: database,
                schema: ChangeCaptureSchema(table: table, keyColumn: key)
            )
            let error = await #expect(throws: ZDDMError.self) { try await capture.install() }
            #expect(error?.code == .invalidArgument)
            #expect(error?.description.contains(expected) == true, "\(String(describing: error))")
        }
        try await database.execute("CREATE UNIQUE INDEX loose_id ON loose (id)")
        try await SQLiteChangeCapture(database: database, schema: ChangeCaptureSchema(table: "loose", keyColumn: "id"))
            .install()
        let store = try SQLiteStore<String, String>(database: database, table: "kv", changeCapture: true)
        let limit = await #expect(throws: ZDDMError.self) { _ = try await store.capturedChanges(limit: 0) }
        #expect(limit?.code == .invalidArgument)
        let fence = try SQLiteStore<String, String>(database: database, table: "fenced", versionColumn: "v")
        try await fence.prepare()
        let tooBig = await #expect(throws: ZDDMError.self) {
            _ = try await fence.writeIfNewer(distinctiveSecret, .value(distinctiveSecret, version: .max))
        }
        #expect(tooBig?.code == .invalidArgument)
        #expect(tooBig?.description.contains(distinctiveSecret) == false)
    }

    @Test("Concurrent versioned writes through two connections to one file get distinct versions and one entry each")
    func concurrentConnections() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file()
        let stores = try (0..<2).map { _ in
            try SQLiteStore<String, String>(
                database: try SQLiteDatabase.open(url: "sqlite:" + path, busyTimeout: .seconds(60)),
                table: "kv",
                changeCapture: true
            )
        }
        try await stores[0].prepare()
        try await stores[1].prepare()
        let versions = try await withThrowingTaskGroup(of: (Int, UInt64).self) { group in
            for writer in 0..<60 {
                group.addTask {
                    let store = stores[writer % 2]
                    if writer % 10 == 9 { return (writer, try await store.deleteVersioned("hot")) }
                    return (writer, try await store.writeVersioned("hot", "v\(writer)"))
                }
            }
            var versions: [(Int, UInt64)] = []
            for try await version in group { versions.append(version) }
            return versions
        }
        let written = versions.filter { $0.0 % 10 != 9 }.map(\.1)
        #expect(Set(written).count == written.count)
        let final = try await stores[1].readVersioned("hot")
        let top = versions.map(\.1).max() ?? 0
        #expect(final?.version == top)
        if let winner = versions.first(where: { $0.1 == top }), winner.0 % 10 != 9 {
            #expect(final == .value("v\(winner.0)", version: top))
        }
        let changes = try await stores[0].capturedChanges(limit: 1000)
        #expect(changes.map(\.version) == Array(1...top))
        #expect(changes.map(\.sequence) == changes.map(\.sequence).sorted())
    }

    private func accountsMapping() throws -> RowMapping<String> {
        try RowMapping(
            table: "accounts",
            keyColumn: "id",
            valueColumns: ["name"],
            encode: { ["name": .text($0)] },
            decode: { try $0.text("name") }
        )
    }
}

/// A change-table entry, for comparisons.
private struct Entry: Equatable, CustomStringConvertible {
    var key: String
    var version: UInt64
    init(_ key: String, _ version: UInt64) {
        self.key = key
        self.version = version
    }
    var description: String { "\(key)@\(version)" }
}

/// Reads a captured key-value table directly, through a connection of its own.
private struct CaptureProbe {
    let pool: DatabasePool
    let table: String

    init(path: String, table: String) throws {
        pool = try DatabasePool(path: path)
        self.table = table
    }

    func version(_ key: String) throws -> UInt64? {
        try pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT zddm_version FROM \(table) WHERE key = ?", arguments: [key])
        }.map { UInt64($0) }
    }

    func deleted(_ key: String) throws -> UInt64? {
        try pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT version FROM \(table)_zddm_deleted WHERE key = ?", arguments: [key])
        }.map { UInt64($0) }
    }

    func entries() throws -> [Entry] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT key, version FROM \(table)_zddm_changes ORDER BY seq").map {
                Entry($0[0], UInt64($0[1] as Int64))
            }
        }
    }

    func close() throws { try pool.close() }
}

/// A fleet state store that sends each call to one of two stores in turn (two connections to one file).
private final class AlternatingFleetStore: FleetStateStore, Sendable {
    private let stores: [SQLiteFleetStateStore]
    private let next = Mutex(0)

    init(_ first: SQLiteFleetStateStore, _ second: SQLiteFleetStateStore) {
        stores = [first, second]
    }

    private var store: SQLiteFleetStateStore {
        stores[
            next.withLock { index in
                index += 1
                return index % 2
            }
        ]
    }

    func state(of migration: String) async throws -> FleetState { try await store.state(of: migration) }
    func update(_ migration: String, _ change: FleetControlChange) async throws -> FleetState {
        try await store.update(migration, change)
    }
    func markBehind(_ migration: String) async throws -> UInt64 { try await store.markBehind(migration) }
    func publishCaughtUp(_ migration: String, through behind: UInt64, token: UInt64) async throws -> Bool {
        try await store.publishCaughtUp(migration, through: behind, token: token)
    }
    func recordCleanVerify(_ migration: String, startedAt behind: UInt64) async throws -> FleetState {
        try await store.recordCleanVerify(migration, startedAt: behind)
    }
    func acquireLease(_ migration: String, holder: String, duration: Duration) async throws -> UInt64? {
        try await store.acquireLease(migration, holder: holder, duration: duration)
    }
    func releaseLease(_ migration: String, holder: String, token: UInt64) async throws {
        try await store.releaseLease(migration, holder: holder, token: token)
    }
}
