import Foundation
import GRDB
import Logging
import PostgresNIO
import ServiceLifecycle
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMSQLite
import ZDDMTesting

@Suite("Stores over the application's own database connections")
struct ExistingConnectionTests {
    @Test("SQLite: stores over a DatabaseQueue the application made share it and leave it open")
    func sqliteQueue() async throws {
        let queue = try DatabaseQueue()
        let database = SQLiteDatabase(writer: queue)
        #expect(database.url.location == .memory)
        let store = try SQLiteStore<String, String>(database: database, table: "kv")
        try await store.prepare()
        try await store.write("k", "v")
        #expect(try await store.read("k") == .value("v"))
        // The application sees the store's table through its own queue, and closing the database leaves it open.
        try database.close()
        #expect(try await queue.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM kv") } == 1)
        #expect(try await store.read("k") == .value("v"))
        try queue.close()
    }

    @Test("SQLite: stores over a DatabasePool the application made pass the conformance suite")
    func sqlitePool() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file()
        let pool = try DatabasePool(path: path)
        let database = SQLiteDatabase(writer: pool)
        #expect(database.url == SQLiteURL(location: .file(path)))
        try await StoreConformanceSuite(
            makeStore: {
                let store = try SQLiteStore<String, String>(database: database, table: uniqueTableName("kv"))
                try await store.prepare()
                return store
            },
            key: { "key-\($0)" },
            value: { "value-\($0)" },
            areInIncreasingOrder: utf8Order
        ).run()
        try database.close()
        #expect(try await pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") } == 1)
        try pool.close()
    }

    @Test(
        "PostgreSQL: a pool with steady connections keeps them open and unpinged; by default connections open on demand and idle ones are pinged"
    )
    func steadyConnectionsConfiguration() throws {
        let url = try PostgresURL("postgres://app@db.example:5432/app?sslmode=disable")
        let onDemand = try url.clientConfiguration()
        #expect(onDemand.options.minimumConnections == 0 && onDemand.options.keepAliveBehavior != nil)
        let steady = try url.clientConfiguration(maximumConnections: 4, steadyConnections: 2)
        #expect(steady.options.minimumConnections == 2 && steady.options.keepAliveBehavior == nil)
        #expect(steady.options.maximumConnections == 4)
        for bad in [-1, 5] {
            let error = #expect(throws: ZDDMError.self) {
                try url.clientConfiguration(maximumConnections: 4, steadyConnections: bad)
            }
            #expect(error?.code == .invalidArgument)
        }
    }

    @Test("PostgreSQL: stores over a database connected with steady connections", .postgres)
    func postgresSteadyConnections() async throws {
        let database = try await PostgresDatabase.connect(
            url: PostgresTestEnvironment.url(),
            maximumConnections: 3,
            steadyConnections: 2
        )
        let store = try PostgresStore<String, String>(database: database, table: uniqueTableName("steady"))
        try await store.prepare()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<20 { group.addTask { try await store.write("k\(index)", "v\(index)") } }
            try await group.waitForAll()
        }
        #expect(try await store.readMany((0..<20).map { "k\($0)" }).count == 20)
        await database.shutdown()
        await #expect(throws: ZDDMError.self) {
            try await PostgresDatabase.connect(
                url: PostgresTestEnvironment.url(),
                maximumConnections: 2,
                steadyConnections: 3
            )
        }
    }

    @Test("PostgreSQL: stores over a client the application runs in its ServiceGroup", .postgres)
    func postgresClientInServiceGroup() async throws {
        let url = try PostgresTestEnvironment.url()
        let client = PostgresClient(configuration: try url.clientConfiguration(maximumConnections: 4))
        let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [client], logger: quiet))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let database = PostgresDatabase(client: client, url: url)
            let store = try PostgresStore<String, String>(database: database, table: uniqueTableName("app"))
            try await store.prepare()
            try await store.write("k", "v")
            #expect(try await store.read("k") == .value("v"))
            // The database did not start the client, so it does not stop it either.
            await database.shutdown()
            #expect(try await store.readMany(["k"]) == ["k": .value("v")])
            let text = "\(database) \(store)"
            #expect(text.contains("\(url.host):\(url.port)"), "\(text)")
            if let password = url.password { #expect(!text.contains(password), "\(text)") }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    @Test(
        "PostgreSQL: a client run in a plain task group, without a URL; errors name the application's client",
        .postgres
    )
    func postgresClientInTaskGroup() async throws {
        let client = PostgresClient(configuration: try PostgresTestEnvironment.url().clientConfiguration())
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { await client.run() }
            let database = PostgresDatabase(client: client)
            #expect(database.url == nil)
            let table = uniqueTableName("client")
            let store = try PostgresTableStore<Int64, String>(
                database: database,
                mapping: RowMapping(
                    table: table,
                    keyColumn: "id",
                    valueColumns: ["body"],
                    encode: { ["body": .text($0)] },
                    decode: { try $0.text("body") }
                )
            )
            let error = await #expect(throws: ZDDMError.self) { _ = try await store.read(1) }
            #expect(error?.code == .storeFailed)
            #expect(error?.description.contains("the application's client") == true, "\(String(describing: error))")
            try await database.execute("CREATE TABLE \"\(table)\" (id bigint PRIMARY KEY, body text)")
            try await store.prepare()
            #expect(try await store.insertIfAbsent(1, "one"))
            #expect(try await store.read(1) == .value("one"))
            tasks.cancelAll()
        }
    }
}
