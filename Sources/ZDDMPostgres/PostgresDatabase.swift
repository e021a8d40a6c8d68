public import Logging
import PostgresNIO
import ZDDM
import ZDDMSQL

/// A connection pool to a PostgreSQL database, shared by any number of stores, that owns the pool's lifecycle.
///
/// ``connect(url:connectTimeout:logger:)`` checks the server with a first connection and `SELECT 1`, so an
/// unreachable host, a wrong password or a missing database fail right there, within the connect timeout, with a
/// ``ZDDMError`` that names the host and port. It then starts the pool's background task; ``shutdown()`` stops
/// it. The password is never part of a description, a log line or an error.
///
/// With `sslmode=prefer` or `require` the connection is encrypted without verifying the server's certificate,
/// as libpq does for those modes.
public final class PostgresDatabase: Sendable, CustomStringConvertible {
    /// The server and login (its description hides the password).
    public let url: PostgresURL
    let client: PostgresClient
    let logger: Logger
    private let runTask: Task<Void, Never>

    private init(url: PostgresURL, client: PostgresClient, logger: Logger) {
        self.url = url
        self.client = client
        self.logger = logger
        self.runTask = Task { await client.run() }
    }

    /// Connects to a database.
    /// - Parameters:
    ///   - url: `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=disable|prefer|require`.
    ///   - connectTimeout: The longest the first connection, its login and `SELECT 1` may take together, and the
    ///     pool's connect timeout; 5 seconds by default.
    ///   - maximumConnections: The pool's largest number of connections; 20 by default.
    ///   - logger: Where the driver logs; by default nowhere.
    /// - Returns: The connected database.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for a malformed URL, or
    ///   ``ZDDMError/Code/connectionFailed`` naming host and port and saying what happened.
    public static func connect(
        url: String,
        connectTimeout: Duration = .seconds(5),
        maximumConnections: Int = 20,
        logger: Logger = Logger(label: "zddm.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
    ) async throws -> PostgresDatabase {
        try await connect(
            url: PostgresURL(url),
            connectTimeout: connectTimeout,
            maximumConnections: maximumConnections,
            logger: logger
        )
    }

    /// Connects to a database.
    /// - Parameters:
    ///   - url: The server and login.
    ///   - connectTimeout: The longest the first connection, its login and `SELECT 1` may take together, and the
    ///     pool's connect timeout; 5 seconds by default.
    ///   - maximumConnections: The pool's largest number of connections; 20 by default.
    ///   - logger: Where the driver logs; by default nowhere.
    /// - Returns: The connected database.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/connectionFailed`` naming host and port and saying what
    ///   happened, or ``ZDDMError/Code/invalidArgument`` for a timeout or pool size below its minimum.
    public static func connect(
        url: PostgresURL,
        connectTimeout: Duration = .seconds(5),
        maximumConnections: Int = 20,
        logger: Logger = Logger(label: "zddm.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
    ) async throws -> PostgresDatabase {
        guard connectTimeout > .zero, maximumConnections >= 1 else {
            throw ZDDMError(.invalidArgument, message: "the connect timeout and the pool size must be positive")
        }
        let timeAmount = TimeAmount.nanoseconds(
            connectTimeout.components.seconds * 1_000_000_000 + connectTimeout.components.attoseconds / 1_000_000_000
        )
        var logger = logger
        logger[metadataKey: "zddm.postgres.server"] = "\(url.host):\(url.port)"
        do {
            try await Self.check(url: url, timeout: connectTimeout, timeAmount: timeAmount, logger: logger)
        } catch {
            throw Self.connectionError(url: url, timeout: connectTimeout, error)
        }
        var configuration = PostgresClient.Configuration(
            host: url.host,
            port: url.port,
            username: url.user,
            password: url.password,
            database: url.database,
            tls: try clientTLS(url.sslMode)
        )
        configuration.options.connectTimeout = connectTimeout
        configuration.options.maximumConnections = maximumConnections
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        return PostgresDatabase(url: url, client: client, logger: logger)
    }

    /// Runs SQL without parameters, for administration such as creating tables in tests and setup scripts.
    ///
    /// Never build this SQL from values: the stores bind values as parameters, and so should you.
    /// - Parameter sql: One statement.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func execute(_ sql: String) async throws {
        do {
            try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
        } catch {
            throw ZDDMError(.storeFailed, message: "PostgreSQL \(server)", underlying: PostgresErrors.sanitized(error))
        }
    }

    /// Stops the pool: running queries finish or fail, later calls of its stores fail.
    public func shutdown() async {
        runTask.cancel()
        await runTask.value
    }

    /// Runs one statement on a pooled connection and collects its rows.
    func rows(_ statement: String, _ binds: PostgresBindings) async throws -> [PostgresRow] {
        try await client.query(PostgresQuery(unsafeSQL: statement, binds: binds), logger: logger).collect()
    }

    /// `HOST:PORT/DB`, for messages.
    var server: String { "\(url.host):\(url.port)/\(url.database)" }

    public var description: String { "PostgresDatabase(\(url))" }

    // MARK: Connecting

    private static func check(url: PostgresURL, timeout: Duration, timeAmount: TimeAmount, logger: Logger) async throws
    {
        var configuration = PostgresConnection.Configuration(
            host: url.host,
            port: url.port,
            username: url.user,
            password: url.password,
            database: url.database,
            tls: try connectionTLS(url.sslMode)
        )
        configuration.options.connectTimeout = timeAmount
        let connectionConfiguration = configuration
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let connection = try await PostgresConnection.connect(
                    configuration: connectionConfiguration,
                    id: 0,
                    logger: logger
                )
                do {
                    try await connection.query("SELECT 1", logger: logger)
                } catch {
                    try? await connection.close()
                    throw error
                }
                try? await connection.close()
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw ConnectTimeout()
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private struct ConnectTimeout: Error {}

    private static func connectionError(url: PostgresURL, timeout: Duration, _ error: any Error) -> ZDDMError {
        let place =
            "PostgreSQL at \(url.host):\(url.port) (database \(String(reflecting: url.database)), "
            + "user \(String(reflecting: url.user)))"
        let what: String
        let sanitized = PostgresErrors.sanitized(error)
        switch error {
        case is ConnectTimeout:
            what = "no answer within \(timeout)"
        case let error as PSQLError where error.serverInfo != nil:
            what = "the server refused: \(PostgresErrors.message(of: error))"
        case let error as PSQLError where error.code == .connectionError:
            what = "could not connect: \(error.underlying.map { "\($0)" } ?? "connection error")"
        case let error as PSQLError where error.code == .sslUnsupported:
            what = "the server does not support TLS, which sslmode=require demands"
        default:
            what = "\(sanitized)"
        }
        return ZDDMError(.connectionFailed, message: "could not connect to \(place): \(what)", underlying: sanitized)
    }

    private static func clientTLS(_ mode: PostgresURL.SSLMode) throws -> PostgresClient.Configuration.TLS {
        switch mode {
        case .disable: return .disable
        case .prefer: return .prefer(unverifiedTLS())
        case .require: return .require(unverifiedTLS())
        }
    }

    private static func connectionTLS(_ mode: PostgresURL.SSLMode) throws -> PostgresConnection.Configuration.TLS {
        switch mode {
        case .disable:
            return .disable
        case .prefer, .require:
            let context: NIOSSLContext
            do {
                context = try NIOSSLContext(configuration: unverifiedTLS())
            } catch {
                throw ZDDMError(
                    .invalidArgument,
                    message: "could not set up TLS",
                    underlying: SQLDatabaseError(system: "TLS", code: nil, message: "\(error)", driverError: error)
                )
            }
            return mode == .prefer ? .prefer(context) : .require(context)
        }
    }

    private static func unverifiedTLS() -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        return tls
    }
}
