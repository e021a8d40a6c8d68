import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
import UserService
import ZDDM
import ZDDMSQL
import ZDDMSQLite

/// A service on a fresh database file, its test client, and direct access to its tables, to check what the proxy
/// did (or did not do) in each store.
struct ServiceFixture: Sendable {
    let client: any TestClientProtocol
    let database: SQLiteDatabase
    /// The Old table, `users_v1`, read and written behind the service's back.
    let old: SQLiteStore<Int64, User>
    /// The New table, `users_v2`.
    let new: SQLiteStore<Int64, User>

    /// Runs `body` against a service on a new database file in a temporary folder.
    static func run(_ body: @Sendable (ServiceFixture) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("user-service-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await run(databasePath: directory.appendingPathComponent("users.sqlite").path, body)
    }

    /// Runs `body` against a service on the given database file.
    static func run(databasePath: String, _ body: @Sendable (ServiceFixture) async throws -> Void) async throws {
        // The expected failures (an Old store that is gone) would otherwise log at `error`.
        var logger = Logger(label: "UserServiceTests")
        logger.logLevel = .critical
        let app = try await buildApplication(
            configuration: UserServiceConfiguration(databasePath: databasePath),
            logger: logger
        )
        let database = try SQLiteDatabase.open(url: "sqlite:\(databasePath)")
        let old = try SQLiteStore<Int64, User>(database: database, table: "users_v1", codec: JSONValueCodec<User>())
        let new = try SQLiteStore<Int64, User>(database: database, table: "users_v2", codec: JSONValueCodec<User>())
        try await app.test(.router) { client in
            try await body(ServiceFixture(client: client, database: database, old: old, new: new))
        }
    }

    /// Sends a request.
    func send(_ method: HTTPRequest.Method, _ uri: String, _ body: String? = nil) async throws -> TestResponse {
        try await client.execute(uri: uri, method: method, body: body.map { ByteBuffer(string: $0) })
    }

    /// Sends a request that must answer `status`, and decodes its JSON body.
    func json<T: Decodable>(
        _ type: T.Type,
        _ method: HTTPRequest.Method,
        _ uri: String,
        _ body: String? = nil,
        expecting status: HTTPResponse.Status = .ok,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> T {
        let response = try await send(method, uri, body)
        #expect(
            response.status == status,
            "\(method) \(uri): \(String(buffer: response.body))",
            sourceLocation: sourceLocation
        )
        return try JSONDecoder().decode(T.self, from: Data(String(buffer: response.body).utf8))
    }

    /// Writes a user through the service.
    func put(_ id: Int64, _ user: User, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let body = String(decoding: try JSONEncoder().encode(user), as: UTF8.self)
        let echoed = try await json(User.self, .put, "/users/\(id)", body, sourceLocation: sourceLocation)
        #expect(echoed == user, sourceLocation: sourceLocation)
    }

    /// Reads a user through the service; `nil` on 404.
    func get(_ id: Int64, sourceLocation: SourceLocation = #_sourceLocation) async throws -> User? {
        let response = try await send(.get, "/users/\(id)")
        if response.status == .notFound { return nil }
        #expect(response.status == .ok, "GET /users/\(id): \(response.status)", sourceLocation: sourceLocation)
        return try JSONDecoder().decode(User.self, from: Data(String(buffer: response.body).utf8))
    }

    /// The migration's status.
    func status() async throws -> MigrationStatus {
        try await json(MigrationStatus.self, .get, "/migration")
    }

    /// Sets the gate's rate through the operator endpoint.
    @discardableResult
    func setRate(_ rate: Double, sourceLocation: SourceLocation = #_sourceLocation) async throws -> MigrationStatus {
        try await json(MigrationStatus.self, .put, "/migration/rate", "\(rate)", sourceLocation: sourceLocation)
    }

    /// Turns the killswitch on or off through the operator endpoint.
    @discardableResult
    func setKillswitch(_ on: Bool) async throws -> MigrationStatus {
        try await json(MigrationStatus.self, .put, "/migration/killswitch", "\(on)")
    }

    /// What New holds for a user: `nil` when nothing.
    func inNew(_ id: Int64) async throws -> StoreRecord<User>? {
        try await new.read(id)
    }
}

/// A user with a recognisable name and e-mail.
func user(_ id: Int64, _ version: Int = 1) -> User {
    User(name: "User \(id) v\(version)", email: "user\(id).v\(version)@example.com")
}
