import Foundation
import Logging
import NIOCore
import PostgresNIO
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL

@Suite("PostgreSQL change capture: triggers, install, uninstall, races", .postgres, .serialized)
struct PostgresChangeCaptureTests {
    @Test("Writes that bypass the store get exactly one version bump and one change entry each")
    func bypassWrites() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("bypass")
            let store = try await capturedKeyValueStore(String.self, database: database, table: table)
            try await withRawClient { client in
                let t = "\"\(table)\""
                func run(_ query: PostgresQuery) async throws { try await client.query(query, logger: quiet) }
                func expectChanges(_ expected: [(String, UInt64)], _ step: String) async throws {
                    let changes = try await store.capturedChanges(limit: 100)
                    try await store.removeCapturedChanges(changes)
                    let got = changes.map { "\($0.key)@\($0.version)" }
                    #expect(got == expected.map { "\($0.0)@\($0.1)" }, "\(step)")
                }
                try await run("INSERT INTO \(unescaped: t) (key, value) VALUES ('a', \(json("one")))")
                try await expectChanges([("a", 1)], "INSERT")
                try await run("UPDATE \(unescaped: t) SET value = \(json("two")) WHERE key = 'a'")
                try await expectChanges([("a", 2)], "UPDATE")
                try await run(
                    """
                    INSERT INTO \(unescaped: t) (key, value) VALUES ('a', \(json("three"))) \
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
                    """
                )
                try await expectChanges([("a", 3)], "INSERT … ON CONFLICT DO UPDATE over a row")
                #expect(try await store.readVersioned("a") == .value("three", version: 3))
                try await run(
                    """
                    INSERT INTO \(unescaped: t) (key, value) VALUES ('b', \(json("bee"))) \
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
                    """
                )
                try await expectChanges([("b", 1)], "INSERT … ON CONFLICT DO UPDATE of a new key")
                try await run("UPDATE \(unescaped: t) SET zddm_version = 999 WHERE key = 'a'")
                try await expectChanges([("a", 4)], "UPDATE setting the version column")
                try await run("INSERT INTO \(unescaped: t) (key, value, zddm_version) VALUES ('c', \(json("c")), 500)")
                try await expectChanges([("c", 1)], "INSERT setting the version column")
                try await run(
                    "INSERT INTO \(unescaped: t) (key, value) VALUES ('a', \(json("x"))) ON CONFLICT DO NOTHING"
                )
                try await expectChanges([], "INSERT … ON CONFLICT DO NOTHING over a row")
                try await run("DELETE FROM \(unescaped: t) WHERE key = 'a'")
                try await expectChanges([("a", 5)], "DELETE")
                #expect(try await store.readVersioned("a") == .tombstone(version: 5))
                #expect(try await store.read("a") == nil)
                try await run("DELETE FROM \(unescaped: t) WHERE key = 'a'")
                try await expectChanges([], "DELETE of nothing")
                try await run("INSERT INTO \(unescaped: t) (key, value) VALUES ('a', \(json("again")))")
                try await expectChanges([("a", 6)], "INSERT after DELETE continues above the deletion")
                try await run("UPDATE \(unescaped: t) SET value = value")
                let all = try await store.capturedChanges(limit: 100)
                try await store.removeCapturedChanges(all)
                #expect(Set(all.map { "\($0.key)@\($0.version)" }) == ["a@7", "b@2", "c@2"], "multi-row UPDATE")
                try await run("UPDATE \(unescaped: t) SET key = 'd' WHERE key = 'c'")
                try await expectChanges([("c", 3), ("d", 1)], "UPDATE of the key: a deletion and a creation")
                #expect(try await store.readVersioned("c") == .tombstone(version: 3))
                #expect(try await store.readVersioned("d") == .value("c", version: 1))
            }
        }
    }

    @Test("Install on a table with rows: they get version 0, their first change gives 1")
    func installWithExistingRows() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("existing")
            let plain = try PostgresStore<Int64, String>(database: database, table: table)
            try await plain.prepare()
            for key in Int64(1)...3 { try await plain.write(key, "v\(key)") }
            let schema = try ChangeCaptureSchema(table: table, keyColumn: "key")
            let capture = PostgresChangeCapture(database: database, schema: schema)
            #expect(try await capture.status().isInstalled == false)
            try await capture.install()
            let status = try await capture.status()
            #expect(status.isInstalled, "\(status.missing)")
            #expect(status.backlog?.entries == 0)
            let store = try PostgresStore<Int64, String>(database: database, table: table, changeCapture: schema)
            try await store.checkSchema()
            #expect(try await store.readVersioned(1) == .value("v1", version: 0))
            #expect(try await store.writeVersioned(1, "w1") == 1)
            #expect(try await store.deleteVersioned(2) == 1)
            try await store.write(3, "w3")
            #expect(
                try await store.readManyVersioned([1, 2, 3, 4]) == [
                    1: .value("w1", version: 1), 2: .tombstone(version: 1), 3: .value("w3", version: 1),
                ]
            )
            #expect(try await capture.status().backlog?.entries == 3)
        }
    }

    @Test("Installing twice changes nothing: still one bump and one entry per change")
    func installTwice() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("twice")
            let store = try await capturedKeyValueStore(String.self, database: database, table: table)
            #expect(try await store.writeVersioned("k", "one") == 1)
            try await PostgresChangeCapture(database: database, schema: try #require(store.changeCapture?.schema))
                .install()
            #expect(try await store.writeVersioned("k", "two") == 2)
            #expect(try await store.capturedChanges(limit: 10).map(\.version) == [1, 2])
            try await store.checkSchema()
        }
    }

    @Test("Uninstall removes the triggers (and with removingData the side tables and column); stores refuse it")
    func uninstall() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("uninst")
            let store = try await capturedKeyValueStore(String.self, database: database, table: table)
            let capture = try #require(store.changeCapture)
            _ = try await store.writeVersioned("k", "one")
            try await capture.uninstall()
            let status = try await capture.status()
            #expect(status.missing.count == 2 && status.missing.allSatisfy { $0.hasPrefix("trigger") }, "\(status)")
            #expect(status.backlog?.entries == 1)
            let error = await #expect(throws: ZDDMError.self) { try await store.checkSchema() }
            #expect(error?.code == .invalidArgument)
            #expect(error?.description.contains("not installed") == true, "\(String(describing: error))")
            #expect(error?.description.contains("_zddm_before_write") == true, "\(String(describing: error))")
            try await capture.uninstall()
            try await capture.uninstall(removingData: true)
            let bare = try await capture.status()
            #expect(bare.missing.count == 5, "\(bare.missing)")
            #expect(bare.backlog == nil)
            try await capture.install()
            try await store.checkSchema()
            #expect(try await store.writeVersioned("k", "two") == 1)
        }
    }

    @Test("prepare() of a store declaring change capture refuses a table without it, naming what is missing")
    func prepareRefusesWithoutCapture() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("nocap")
            let schema = try ChangeCaptureSchema(table: table, keyColumn: "key")
            let store = try PostgresStore<String, String>(database: database, table: table, changeCapture: schema)
            let error = await #expect(throws: ZDDMError.self) { try await store.prepare() }
            #expect(error?.code == .invalidArgument)
            let text = error?.description ?? ""
            #expect(text.contains("change capture is not installed on table \"\(table)\""), "\(text)")
            #expect(text.contains("change table") && text.contains("trigger"), "\(text)")
            #expect(store.capabilities.isSuperset(of: [.versions, .changeCapture]))
        }
    }

    @Test("An INSERT that waited for a concurrent DELETE of its key: the store retries, a bypass writer gets 40001")
    func insertRacingDelete() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("race")
            let store = try await capturedKeyValueStore(String.self, database: database, table: table)
            try await withRawClient { client in
                for bypass in [false, true] {
                    let key = bypass ? "bypass" : "store"
                    #expect(try await store.writeVersioned(key, "one") == 1)
                    let started = AsyncStream<Void>.makeStream()
                    async let deletion: Void = client.withTransaction(logger: quiet) { connection in
                        try await connection.query(
                            "DELETE FROM \(unescaped: "\"\(table)\"") WHERE key = \(key)",
                            logger: quiet
                        )
                        started.continuation.yield()
                        try await Task.sleep(for: .milliseconds(600))
                    }
                    for await _ in started.stream { break }
                    if bypass {
                        do {
                            try await client.query(
                                "INSERT INTO \(unescaped: "\"\(table)\"") (key, value) VALUES (\(key), \(json("two")))",
                                logger: quiet
                            )
                            Issue.record("the racing INSERT must fail with a serialization failure")
                        } catch let error as PSQLError {
                            #expect(error.serverInfo?[.sqlState] == "40001", "\(String(reflecting: error))")
                        }
                        try await deletion
                        #expect(try await store.readVersioned(key) == .tombstone(version: 2))
                    } else {
                        let version = try await store.writeVersioned(key, "two")
                        try await deletion
                        #expect(version == 3)
                        #expect(try await store.readVersioned(key) == .value("two", version: 3))
                    }
                    let changes = try await store.capturedChanges(limit: 100).filter { $0.key == key }
                    #expect(changes.map(\.version) == (bypass ? [1, 2] : [1, 2, 3]))
                }
            }
        }
    }

    @Test("Concurrent writers on one key through several connections get distinct versions; the last is kept")
    func concurrentWriters() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let table = uniqueTableName("conc")
            let store = try await capturedKeyValueStore(String.self, database: database, table: table)
            let tableStore = try await capturedTableStore(Int64.self, keyType: "bigint", database: database)
            _ = try await store.writeVersioned("k", "start")
            try await withRawClient { client in
                let results = try await withThrowingTaskGroup(of: (writes: [UInt64], deletes: [UInt64]).self) { group in
                    for writer in 0..<6 {
                        group.addTask {
                            var writes: [UInt64] = []
                            var deletes: [UInt64] = []
                            for round in 0..<8 {
                                if writer < 3 {
                                    let rows = try await retrying {
                                        try await client.query(
                                            """
                                            INSERT INTO \(unescaped: "\"\(table)\"") (key, value) \
                                            VALUES ('k', \(json("raw-\(writer)-\(round)"))) \
                                            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value \
                                            RETURNING zddm_version
                                            """,
                                            logger: quiet
                                        ).collect()
                                    }
                                    writes.append(UInt64(try rows[0].decode(Int64.self)))
                                } else if writer == 5, round % 3 == 2 {
                                    deletes.append(try await store.deleteVersioned("k"))
                                } else {
                                    writes.append(try await store.writeVersioned("k", "store-\(writer)-\(round)"))
                                }
                            }
                            return (writes, deletes)
                        }
                    }
                    var all: (writes: [UInt64], deletes: [UInt64]) = ([], [])
                    for try await result in group {
                        all.writes += result.writes
                        all.deletes += result.deletes
                    }
                    return all
                }
                let writes = results.writes
                #expect(Set(writes).count == writes.count, "every write gets its own version")
                let final = try await store.readVersioned("k")
                #expect(final?.version == (writes + results.deletes).max())
                let changes = try await store.capturedChanges(limit: 1000).filter { $0.key == "k" }.map(\.version)
                #expect(Set(changes).count == changes.count, "every change has its own version")
                #expect(Set(writes).isSubset(of: changes) && changes.contains(1))
                #expect(changes.count <= writes.count + results.deletes.count + 1)
            }
            let tableVersions = try await withThrowingTaskGroup(of: UInt64.self) { group in
                for writer in 0..<12 {
                    group.addTask { try await tableStore.writeVersioned(7, "w\(writer)") }
                }
                var all: [UInt64] = []
                for try await version in group { all.append(version) }
                return all
            }
            #expect(Set(tableVersions) == Set(1...12))
            #expect(try await tableStore.readVersioned(7)?.version == 12)
        }
    }
}

private let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// A value as the JSON codec stores it.
private func json(_ text: String) -> ByteBuffer {
    ByteBuffer(bytes: Array("\"\(text)\"".utf8))
}

/// Retries a bypass writer's statement on a serialization failure, as a writer of a captured table should.
private func retrying<T>(_ body: () async throws -> T) async throws -> T {
    var attempt = 0
    while true {
        do {
            return try await body()
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "40001" && attempt < 5 {
            attempt += 1
        }
    }
}

/// Runs `body` with a PostgreSQL client of its own, for SQL that bypasses the stores.
func withRawClient<T: Sendable>(_ body: @Sendable (PostgresClient) async throws -> T) async throws -> T {
    let client = PostgresClient(
        configuration: try PostgresTestEnvironment.url().clientConfiguration(maximumConnections: 8)
    )
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            await client.run()
            return nil
        }
        defer { group.cancelAll() }
        return try await body(client)
    }
}
