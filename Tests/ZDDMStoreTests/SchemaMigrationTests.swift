import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMSQLite

/// Old is `users(id, first_name, last_name, email)`, New is `accounts(id, full_name, email)`: the same people in
/// two shapes, migrated through the proxy.
enum PeopleSchema {
    static let usersDDL =
        "CREATE TABLE users (id bigint PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, email text NOT NULL)"
    static let accountsDDL = "CREATE TABLE accounts (id bigint PRIMARY KEY, full_name text NOT NULL, email text)"

    static func users(table: String = "users") throws -> RowMapping<Person> {
        try RowMapping(
            table: table,
            keyColumn: "id",
            valueColumns: ["first_name", "last_name", "email"],
            encode: { person in
                let parts = person.fullName.split(separator: " ", maxSplits: 1).map(String.init)
                return [
                    "first_name": .text(parts.first ?? ""), "last_name": .text(parts.count > 1 ? parts[1] : ""),
                    "email": .text(person.email),
                ]
            },
            decode: { row in
                Person(fullName: try row.text("first_name") + " " + row.text("last_name"), email: try row.text("email"))
            }
        )
    }

    static func accounts(table: String = "accounts") throws -> RowMapping<Person> {
        try RowMapping(
            table: table,
            keyColumn: "id",
            valueColumns: ["full_name", "email"],
            encode: { ["full_name": .text($0.fullName), "email": .text($0.email)] },
            decode: { Person(fullName: try $0.text("full_name"), email: try $0.optionalText("email") ?? "") }
        )
    }

    static let people: [Int64: Person] = [
        1: Person(fullName: "Ada Lovelace", email: "ada@example.com"),
        2: Person(fullName: "Alan Turing", email: "alan@example.com"),
        3: Person(fullName: "Grace Hopper", email: "grace@example.com"),
        4: Person(fullName: "Edsger Dijkstra", email: "edsger@example.com"),
        5: Person(fullName: "Barbara Liskov", email: "barbara@example.com"),
    ]

    /// Drives a migration through the proxy and checks New's rows: reads fill, writes go to both, deletes leave
    /// tombstones.
    static func migrate<Old: KeyValueStore, New: KeyValueStore>(
        old: Old,
        new: New,
        newRows: @Sendable () async throws -> [Int64: Person]
    ) async throws where Old.Key == Int64, Old.Value == Person, New.Key == Int64, New.Value == Person {
        for (id, person) in people { try await old.write(id, person) }
        let proxy = try MigrationProxy(name: "people", old: old, new: new, gate: try TrafficGate(rate: 1))
        for id in people.keys.sorted() {
            #expect(try await proxy.read(id) == people[id])
        }
        try await proxy.write(2, Person(fullName: "Alan M Turing", email: "turing@example.com"))
        try await proxy.write(6, Person(fullName: "Donald Knuth", email: "knuth@example.com"))
        try await proxy.delete(3)
        #expect(try await proxy.read(3) == nil)
        #expect(try await new.read(3) == .tombstone)
        #expect(try await old.read(2) == .value(Person(fullName: "Alan M Turing", email: "turing@example.com")))

        var expected = people
        expected[2] = Person(fullName: "Alan M Turing", email: "turing@example.com")
        expected[6] = Person(fullName: "Donald Knuth", email: "knuth@example.com")
        expected[3] = nil
        #expect(try await newRows() == expected)
        #expect(try await new.keys(after: nil, limit: 100) == [1, 2, 4, 5, 6])
    }
}

@Suite("Own schemas: users(first_name, last_name) migrated to accounts(full_name) through the proxy")
struct SchemaMigrationTests {
    @Test("SQLite users → SQLite accounts")
    func sqlite() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let database = try SQLiteDatabase.open(url: "sqlite:" + directory.file())
        try await database.execute(PeopleSchema.usersDDL)
        try await database.execute(PeopleSchema.accountsDDL)
        let old = try SQLiteTableStore<Int64, Person>(database: database, mapping: PeopleSchema.users())
        let new = try SQLiteTableStore<Int64, Person>(database: database, mapping: PeopleSchema.accounts())
        try await old.prepare()
        try await new.prepare()
        // New's rows, read with a plain key-value view of the accounts table's own columns.
        let rows = try SQLiteTableStore<Int64, Person>(database: database, mapping: PeopleSchema.accounts())
        try await PeopleSchema.migrate(old: old, new: new) {
            let ids = try await rows.keys(after: nil, limit: 100)
            return try await rows.readMany(ids).compactMapValues(\.value)
        }
    }

    @Test("PostgreSQL users → PostgreSQL accounts", .postgres)
    func postgres() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let users = uniqueTableName("users")
            let accounts = uniqueTableName("accounts")
            try await database.execute(
                PeopleSchema.usersDDL.replacingOccurrences(of: "TABLE users", with: "TABLE \(users)")
            )
            try await database.execute(
                PeopleSchema.accountsDDL.replacingOccurrences(of: "TABLE accounts", with: "TABLE \(accounts)")
            )
            let old = try PostgresTableStore<Int64, Person>(
                database: database,
                mapping: PeopleSchema.users(table: users)
            )
            let new = try PostgresTableStore<Int64, Person>(
                database: database,
                mapping: PeopleSchema.accounts(table: accounts)
            )
            try await old.prepare()
            try await new.prepare()
            try await PeopleSchema.migrate(old: old, new: new) {
                let ids = try await new.keys(after: nil, limit: 100)
                return try await new.readMany(ids).compactMapValues(\.value)
            }
        }
    }

    @Test("SQLite users → PostgreSQL accounts", .postgres)
    func sqliteToPostgres() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let sqlite = try SQLiteDatabase.open(url: "sqlite::memory:")
            try await sqlite.execute(PeopleSchema.usersDDL)
            let accounts = uniqueTableName("accounts")
            try await database.execute(
                PeopleSchema.accountsDDL.replacingOccurrences(of: "TABLE accounts", with: "TABLE \(accounts)")
            )
            let old = try SQLiteTableStore<Int64, Person>(database: sqlite, mapping: PeopleSchema.users())
            let new = try PostgresTableStore<Int64, Person>(
                database: database,
                mapping: PeopleSchema.accounts(table: accounts)
            )
            try await old.prepare()
            try await new.prepare()
            try await PeopleSchema.migrate(old: old, new: new) {
                let ids = try await new.keys(after: nil, limit: 100)
                return try await new.readMany(ids).compactMapValues(\.value)
            }
        }
    }
}
