import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL

@Suite("PostgreSQL versions and change capture: bad input gives clear errors", .postgres, .serialized)
struct PostgresVersionBadInputTests {
    @Test("Invalid or too long names are refused before any SQL runs, naming the name's role")
    func invalidNames() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            func expectRefused(_ role: String, _ make: () throws -> Void) {
                let error = #expect(throws: ZDDMError.self) { try make() }
                #expect(error?.code == .invalidArgument)
                #expect(error?.description.contains(role) == true, "\(String(describing: error))")
            }
            expectRefused("table name") { _ = try ChangeCaptureSchema(table: "bad name", keyColumn: "id") }
            expectRefused("key column name") { _ = try ChangeCaptureSchema(table: "t", keyColumn: "id;") }
            expectRefused("version column name") {
                _ = try ChangeCaptureSchema(table: "t", keyColumn: "id", versionColumn: "1version")
            }
            expectRefused("change table name") {
                _ = try ChangeCaptureSchema(table: "t", keyColumn: "id", changeTable: "x\"y")
            }
            expectRefused("longer than 63 characters") {
                _ = try ChangeCaptureSchema(table: String(repeating: "t", count: 55), keyColumn: "id")
            }
            expectRefused("version column name") {
                _ = try PostgresStore<String, String>(database: database, table: "t", versionColumn: "v-1")
            }
            expectRefused("distinct") {
                _ = try PostgresStore<String, String>(database: database, table: "t", versionColumn: "value")
            }
            expectRefused("fleet state table name") {
                _ = try PostgresFleetStateStore(database: database, table: "a b")
            }
            expectRefused("not this store's table") {
                _ = try PostgresStore<String, String>(
                    database: database,
                    table: "t",
                    changeCapture: try ChangeCaptureSchema(table: "other", keyColumn: "key")
                )
            }
            expectRefused("mapping's columns") {
                _ = try PostgresTableStore<Int64, String>(
                    database: database,
                    mapping: RowMapping(
                        table: "notes",
                        keyColumn: "id",
                        valueColumns: ["body"],
                        encode: { ["body": .text($0)] },
                        decode: { try $0.text("body") }
                    ),
                    changeCapture: try ChangeCaptureSchema(table: "notes", keyColumn: "id", versionColumn: "body")
                )
            }
        }
    }

    @Test("Installing on a table that does not exist names the table")
    func installMissingTable() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("absent")
            let capture = PostgresChangeCapture(
                database: database,
                schema: try ChangeCaptureSchema(table: table, keyColumn: "id")
            )
            let error = await #expect(throws: ZDDMError.self) { try await capture.install() }
            #expect(error?.code == .invalidArgument)
            #expect(error?.description.contains("\"\(table)\" does not exist") == true, "\(String(describing: error))")
            #expect(try await capture.status().missing == ["table \"\(table)\""])
        }
    }

    @Test("Each role refuses the other role's operations; stores without versions refuse them all")
    func roles() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let fence = try PostgresStore<String, String>(
                database: database,
                table: uniqueTableName("fence"),
                versionColumn: "zddm_version"
            )
            try await fence.prepare()
            let old = try await capturedKeyValueStore(String.self, database: database)
            let plain = try PostgresStore<String, String>(database: database, table: uniqueTableName("plain"))
            try await plain.prepare()
            #expect(fence.capabilities.contains(.versions) && !fence.capabilities.contains(.changeCapture))
            #expect(!plain.capabilities.contains(.versions))
            let refused: [@Sendable () async throws -> Void] = [
                { _ = try await fence.writeVersioned("k", "v") },
                { _ = try await fence.deleteVersioned("k") },
                { _ = try await fence.capturedChanges(limit: 1) },
                { _ = try await old.writeIfNewer("k", .value("v", version: 1)) },
                { _ = try await old.writeManyIfNewer([("k", .value("v", version: 1))]) },
                { _ = try await plain.readVersioned("k") },
                { _ = try await plain.writeIfNewer("k", .value("v", version: 1)) },
            ]
            for operation in refused {
                let error = await #expect(throws: ZDDMError.self) { try await operation() }
                #expect(error?.code == .unsupported, "\(String(describing: error))")
            }
        }
    }

    @Test("Fenced writes: a too large value or version is refused before writing, without the value in the error")
    func fencedWriteLimits() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let store = try PostgresStore<String, String>(
                database: database,
                table: uniqueTableName("fencebig"),
                versionColumn: "zddm_version",
                maxValueSize: 1024
            )
            try await store.prepare()
            let big = distinctiveSecret + String(repeating: "x", count: 2000)
            let operations: [@Sendable () async throws -> Void] = [
                { _ = try await store.writeIfNewer("k", .value(big, version: 1)) },
                {
                    _ = try await store.writeManyIfNewer([
                        ("a", .value("small", version: 1)), ("k", .value(big, version: 1)),
                    ])
                },
                { _ = try await store.writeIfNewer("k", .value(distinctiveSecret, version: UInt64.max)) },
            ]
            for operation in operations {
                let error = await #expect(throws: ZDDMError.self) { try await operation() }
                #expect(error?.code == .invalidArgument)
                #expect(error?.description.contains(distinctiveSecret) == false)
            }
            #expect(try await store.readManyVersioned(["a", "k"]).isEmpty)
        }
    }

    @Test("A key twice in one fenced batch keeps its newest record")
    func duplicateKeysInBatch() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let store = try PostgresStore<String, String>(
                database: database,
                table: uniqueTableName("fencedup"),
                versionColumn: "zddm_version"
            )
            try await store.prepare()
            let stored = try await store.writeManyIfNewer([
                ("k", .value("old", version: 3)), ("k", .value("new", version: 5)), ("k", .tombstone(version: 4)),
            ])
            #expect(stored == ["k"])
            #expect(try await store.readVersioned("k") == .value("new", version: 5))
        }
    }

    @Test("prepare() adds the version column to an existing table without it; plain writes keep the version")
    func addVersionColumn() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("addver")
            let plain = try PostgresStore<String, String>(database: database, table: table)
            try await plain.prepare()
            try await plain.write("k", "v")
            let store = try PostgresStore<String, String>(
                database: database,
                table: table,
                versionColumn: "zddm_version"
            )
            let error = await #expect(throws: ZDDMError.self) { try await store.checkSchema() }
            #expect(error?.description.contains("zddm_version") == true, "\(String(describing: error))")
            try await store.prepare()
            #expect(try await store.readVersioned("k") == .value("v", version: 0))
            #expect(try await store.writeIfNewer("k", .value("w", version: 4)))
            try await store.write("k", "plain")
            #expect(try await store.readVersioned("k") == .value("plain", version: 4))
            #expect(try await store.insertIfAbsent("n", "new"))
            #expect(try await store.readVersioned("n") == .value("new", version: 0))
        }
    }
}
