import Foundation
import InMemoryLogging
import Logging
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL

@Suite("PostgreSQL connections: bounded, clear failures; the password never shows")
struct PostgresConnectionTests {
    /// How long a failing connect may take at most: far above its timeouts, so only a hang fails the check.
    static let generousBound = Duration.seconds(60)

    @Test("A closed port on 127.0.0.1 fails quickly with connectionFailed naming host and port")
    func closedPort() async throws {
        let secret = "pw-\(UUID().uuidString)"
        let started = ContinuousClock.now
        let error = await #expect(throws: ZDDMError.self) {
            _ = try await PostgresDatabase.connect(url: "postgres://someone:\(secret)@127.0.0.1:1/db?sslmode=disable")
        }
        // Bounded, not fast: a loaded machine may take seconds; a hang would take forever.
        #expect(ContinuousClock.now - started < Self.generousBound)
        #expect(error?.code == .connectionFailed)
        let text = error?.description ?? ""
        #expect(text.contains("127.0.0.1:1"), "\(text)")
        #expect(text.lowercased().contains("refused"), "\(text)")
        #expect(!text.contains(secret))
        #expect(!String(reflecting: error as Any).contains(secret))
    }

    @Test("A server that accepts TCP but never answers fails within the connect timeout")
    func silentServer() async throws {
        // A listening socket that never accepts: the TCP handshake completes, the login never does.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(bound == 0)
        #expect(listen(listener, 8) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))

        let secret = "pw-\(UUID().uuidString)"
        let started = ContinuousClock.now
        let error = await #expect(throws: ZDDMError.self) {
            _ = try await PostgresDatabase.connect(
                url: "postgres://someone:\(secret)@127.0.0.1:\(port)/db?sslmode=disable",
                connectTimeout: .seconds(1)
            )
        }
        // The deadline holds (no hang), however loaded the machine; the exact time is not the point.
        #expect(ContinuousClock.now - started < Self.generousBound)
        #expect(error?.code == .connectionFailed)
        #expect(error?.description.contains("127.0.0.1:\(port)") == true)
        #expect(error?.description.contains(secret) == false)
        #expect(!String(reflecting: error as Any).contains(secret))
        // Whichever fires first: ZDDM's overall deadline or the driver's connect timeout.
        let text = error?.description.lowercased() ?? ""
        #expect(text.contains("no answer within") || text.contains("timeout"), "\(text)")
    }

    @Test("A wrong password fails with connectionFailed naming host and port, and never shows the password", .postgres)
    func wrongPassword() async throws {
        var url = try PostgresTestEnvironment.url()
        let wrong = "wrong-\(UUID().uuidString)"
        url.password = wrong
        let started = ContinuousClock.now
        let error = await #expect(throws: ZDDMError.self) { _ = try await PostgresDatabase.connect(url: url) }
        #expect(ContinuousClock.now - started < Self.generousBound)
        #expect(error?.code == .connectionFailed)
        let text = error?.description ?? ""
        #expect(text.contains("\(url.host):\(url.port)"), "\(text)")
        #expect(text.contains("password authentication failed"), "\(text)")
        #expect(!text.contains(wrong))
    }

    @Test(
        "A pooled connection's close is watched once, not once a statement: after many statements nothing is left registered",
        .postgres
    )
    func connectionWatchesDoNotAccumulate() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            for _ in 0..<300 { try await database.execute("SELECT 1") }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask { for _ in 0..<50 { try await database.execute("SELECT 1") } }
                }
                try await group.waitForAll()
            }
            let counts = database.watchedConnectionCounts
            #expect(counts.statements == 0, "every statement left the registry when it ended")
            #expect((1...8).contains(counts.connections), "one entry a pooled connection: \(counts.connections)")
        }
    }

    @Test("Logs, descriptions and errors never contain the password", .postgres)
    func passwordNeverShown() async throws {
        let url = try PostgresTestEnvironment.url()
        let password = try #require(url.password)
        let logs = InMemoryLogHandler()
        var logger = Logger(label: "zddm.test", factory: { _ in logs })
        logger.logLevel = .trace
        let description = try await PostgresTestEnvironment.withDatabase(logger: logger) { database in
            let store = try PostgresStore<String, String>(database: database, table: uniqueTableName("pw"))
            try await store.prepare()
            try await store.write("k", "v")
            #expect(try await store.read("k") == .value("v"))
            let missing = try PostgresStore<String, String>(database: database, table: uniqueTableName("absent"))
            let error = await #expect(throws: ZDDMError.self) { _ = try await missing.read("k") }
            #expect(error?.description.contains(password) == false)
            return "\(database) \(store) \(String(reflecting: database)) \(url) \(String(reflecting: url))"
        }
        var dumped = ""
        dump(url, to: &dumped)
        for text in [description, dumped] {
            #expect(!text.contains(password), "\(text)")
        }
        #expect(description.contains("***"))
        let entries = logs.entries
        #expect(!entries.isEmpty, "trace logging produced nothing to check")
        for entry in entries {
            let line = "\(entry.message) \(entry.metadata)"
            #expect(!line.contains(password), "\(line)")
        }
    }
}
