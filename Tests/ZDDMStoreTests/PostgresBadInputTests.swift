import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMSQLite

@Suite("PostgreSQL: bad input gives clear errors and writes nothing", .postgres, .serialized)
struct PostgresBadInputTests {
    @Test("A value larger than the limit is rejected before writing, alone or in a batch")
    func valueTooLarge() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let store = try PostgresStore<String, String>(
                database: database,
                table: uniqueTableName("big"),
                maxValueSize: 1024
            )
            try await store.prepare()
            let big = distinctiveSecret + String(repeating: "x", count: 2000)
            for operation in [
                { try await store.write("k", big) },
                { _ = try await store.insertIfAbsent("k", big) },
                { _ = try await store.insertManyIfAbsent([("a", "small"), ("k", big)]) },
            ] as [@Sendable () async throws -> Void] {
                let error = await #expect(throws: ZDDMError.self) { try await operation() }
                #expect(error?.code == .invalidArgument)
                #expect(error?.description.contains(distinctiveSecret) == false)
            }
            #expect(try await store.readMany(["a", "k"]).isEmpty)
        }
    }

    @Test("A store with Int64 keys over a text key column is refused by prepare() and checkSchema()")
    func wrongKeyType() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("textkeys")
            try await database.execute(
                "CREATE TABLE \"\(table)\" (key text PRIMARY KEY, value bytea, tombstone boolean NOT NULL DEFAULT false)"
            )
            let store = try PostgresStore<Int64, String>(database: database, table: table)
            for check in [{ try await store.prepare() }, { try await store.checkSchema() }]
                as [@Sendable () async throws -> Void]
            {
                let error = await #expect(throws: ZDDMError.self) { try await check() }
                #expect(error?.code == .invalidArgument)
                #expect(error?.description.contains("integer keys") == true, "\(String(describing: error))")
            }
            // Without a schema check, the first read fails with PostgreSQL's type error, not a wrong answer.
            let error = await #expect(throws: ZDDMError.self) { _ = try await store.read(42) }
            #expect(error?.code == .storeFailed)
            #expect(error?.description.contains("text = bigint") == true, "\(String(describing: error))")
            try await PostgresStore<String, String>(database: database, table: table).prepare()
        }
    }

    @Test("A table that does not exist (no prepare()) fails with an error naming it")
    func missingTable() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("nothing")
            let store = try PostgresStore<String, String>(database: database, table: table)
            let error = await #expect(throws: ZDDMError.self) { try await store.write("k", distinctiveSecret) }
            #expect(error?.code == .storeFailed)
            #expect(error?.operation == .write)
            let text = error?.description ?? ""
            #expect(text.contains(table))
            #expect(text.contains("does not exist"))
            #expect(text.contains("42P01"))
            #expect(!text.contains(distinctiveSecret))
            let mapped = try PostgresTableStore<String, String>(
                database: database,
                mapping: RowMapping(
                    table: table,
                    keyColumn: "id",
                    valueColumns: ["body"],
                    encode: { ["body": .text($0)] },
                    decode: { try $0.text("body") }
                )
            )
            let prepareError = await #expect(throws: ZDDMError.self) { try await mapped.prepare() }
            #expect(prepareError?.description.contains("does not exist") == true)
        }
    }

    @Test("The proxy still serves from Old (SQLite) when New's PostgreSQL table has been dropped")
    func proxyServesOldWhenNewFails() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let sqlite = try SQLiteDatabase.open(url: "sqlite::memory:")
            let old = try SQLiteStore<String, String>(database: sqlite, table: "kv")
            try await old.prepare()
            let table = uniqueTableName("dropped")
            let new = try PostgresStore<String, String>(database: database, table: table)
            try await new.prepare()
            try await old.write("a", "alpha")
            try await old.write("b", "beta")
            let proxy = try MigrationProxy(name: "drop", old: old, new: new, gate: try TrafficGate(rate: 1))
            #expect(try await proxy.read("a") == "alpha")
            #expect(try await new.read("a") == .value("alpha"))
            try await database.execute("DROP TABLE \"\(table)\"")
            #expect(try await proxy.read("a") == "alpha")
            #expect(try await proxy.read("b") == "beta")
            try await proxy.write("c", "gamma")
            try await proxy.delete("b")
            #expect(try await old.read("c") == .value("gamma"))
            #expect(try await old.read("b") == nil)
            #expect(try await proxy.read("b") == nil)
        }
    }

    @Test("Error texts hold no row value and no SQL parameter")
    func errorTextsAreClean() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            // A CHECK constraint fails on the value; PostgreSQL's detail ("Failing row contains …") is left out.
            let table = uniqueTableName("strict")
            try await database.execute(
                """
                CREATE TABLE "\(table)" (key text PRIMARY KEY, value bytea CHECK (length(value) < 10), \
                tombstone boolean NOT NULL DEFAULT false)
                """
            )
            let store = try PostgresStore<String, String>(database: database, table: table)
            let error = await #expect(throws: ZDDMError.self) {
                try await store.write(distinctiveSecret, distinctiveSecret)
            }
            #expect(error?.description.contains("check constraint") == true, "\(String(describing: error))")
            // A data exception whose server message would quote the input: the message is left out.
            let people = uniqueTableName("people")
            try await database.execute("CREATE TABLE \"\(people)\" (id text PRIMARY KEY, age integer)")
            let mapped = try PostgresTableStore<String, String>(
                database: database,
                mapping: RowMapping(
                    table: people,
                    keyColumn: "id",
                    valueColumns: ["age"],
                    encode: { ["age": .text($0)] },
                    decode: { try $0.text("age") }
                )
            )
            try await mapped.prepare()
            let dataError = await #expect(throws: ZDDMError.self) {
                _ = try await mapped.insertIfAbsent(distinctiveSecret, distinctiveSecret)
            }
            for found in [error, dataError] {
                let texts = [
                    found?.description, found.map { String(reflecting: $0) }, found?.underlying.map { "\($0)" },
                ]
                for text in texts.compactMap({ $0 }) { #expect(!text.contains(distinctiveSecret), "\(text)") }
            }
            #expect(dataError?.code == .storeFailed)
            #expect(try await mapped.read(distinctiveSecret) == nil)
        }
    }

    @Test("A row that cannot be read back as a key or a value fails with mappingFailed, naming the table")
    func unmappableRows() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let people = uniqueTableName("people")
            try await database.execute("CREATE TABLE \"\(people)\" (id text PRIMARY KEY, full_name text, age integer)")
            try await database.execute("INSERT INTO \"\(people)\" VALUES ('a', 'Ada', 36)")
            let store = try PostgresTableStore<String, Person>(
                database: database,
                mapping: RowMapping(
                    table: people,
                    keyColumn: "id",
                    valueColumns: ["full_name", "age"],
                    encode: { ["full_name": .text($0.fullName), "age": .text($0.email)] },
                    decode: { Person(fullName: try $0.text("full_name"), email: try $0.text("age")) }
                )
            )
            try await store.prepare()
            let error = await #expect(throws: ZDDMError.self) { _ = try await store.read("a") }
            #expect(error?.code == .mappingFailed)
            #expect(error?.operation == .read)
            #expect(error?.description.contains(people) == true, "\(String(describing: error))")
            #expect(error?.description.contains("\"age\"") == true, "\(String(describing: error))")
            let batchError = await #expect(throws: ZDDMError.self) { _ = try await store.readMany(["a"]) }
            #expect(batchError?.code == .mappingFailed)

            // A key column of a type no key is read from.
            let numeric = uniqueTableName("numeric")
            try await database.execute(
                "CREATE TABLE \"\(numeric)\" (key numeric PRIMARY KEY, value bytea, tombstone boolean NOT NULL)"
            )
            try await database.execute("INSERT INTO \"\(numeric)\" VALUES (1.5, NULL, false)")
            let keys = try PostgresStore<Int64, String>(database: database, table: numeric)
            let keyError = await #expect(throws: ZDDMError.self) { _ = try await keys.keys(after: nil, limit: 10) }
            #expect(keyError?.code == .mappingFailed)
            #expect(keyError?.operation == .listKeys)
            #expect(keyError?.description.contains(numeric) == true, "\(String(describing: keyError))")

            // A stored value that is not JSON for the value type.
            let raw = try PostgresStore<String, [UInt8]>(
                database: database,
                table: uniqueTableName("junk"),
                codec: .rawBytes
            )
            try await raw.prepare()
            try await raw.write("k", Array(distinctiveSecret.utf8))
            let typed = try PostgresStore<String, Person>(database: database, table: raw.schema.table.name)
            let decodeError = await #expect(throws: ZDDMError.self) { _ = try await typed.read("k") }
            #expect(decodeError?.code == .mappingFailed)
            #expect(decodeError?.description.contains(distinctiveSecret) == false)
        }
    }
}
