public import Logging
public import PostgresNIO
import ZDDM
import ZDDMSQL

/// A connection pool to a PostgreSQL database, shared by any number of stores.
///
/// There are two ways to get one, and they differ in who runs the pool:
///
/// - ``connect(url:connectTimeout:maximumConnections:steadyConnections:logger:)`` checks the server with a first connection and
///   `SELECT 1`, so an unreachable host, a wrong password or a missing database fail right there, within the
///   connect timeout, with a ``ZDDM/ZDDMError`` that names the host and port. It then creates a `PostgresClient`
///   and **starts a task that runs it**; ``shutdown()`` ends that task. Handy for tools, scripts and tests.
/// - ``init(client:url:logger:)`` uses a `PostgresClient` that the application creates and runs itself, usually
///   as a service in its `ServiceGroup`, as PostgresNIO asks. It **starts no task**: the pool runs as long as the
///   application runs the client, and ``shutdown()`` leaves it alone.
///   ``PostgresURL/clientConfiguration(connectTimeout:maximumConnections:steadyConnections:)`` makes the client's configuration
///   from a URL.
///
/// The password is never part of a description, a log line or an error. With `sslmode=prefer` or `require` the
/// connection is encrypted without verifying the server's certificate, as libpq does for those modes.
public final class PostgresDatabase: Sendable, CustomStringConvertible {
    /// The server and login when known: the URL connected to, or the one given with the client (its description
    /// hides the password).
    public let url: PostgresURL?
    let client: PostgresClient
    let logger: Logger
    /// The task running the client, when this database started it.
    private let runTask: Task<Void, Never>?
    /// The statements in flight on each of the pool's connections, failed when their connection closes.
    let watches = ConnectionWatches()

    /// Uses a client that the application runs itself (for example in its `ServiceGroup`); starts no task.
    ///
    /// The stores' calls wait for the pool until the application runs the client, and fail once it has stopped.
    /// - Parameters:
    ///   - client: The client; the application calls its `run()`.
    ///   - url: The server the client connects to, when the application has it as a URL: named in errors and
    ///     descriptions (never the password). Without it they name "the application's client".
    ///   - logger: Where the stores' queries log; by default nowhere.
    public init(
        client: PostgresClient,
        url: PostgresURL? = nil,
        logger: Logger = Logger(label: "zddm.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.url = url
        self.client = client
        self.logger = Self.logger(logger, url: url)
        self.runTask = nil
    }

    private init(url: PostgresURL, runningClient client: PostgresClient, logger: Logger) {
        self.url = url
        self.client = client
        self.logger = logger
        self.runTask = Task { await client.run() }
    }

    /// Connects to a database and starts a task that runs its connection pool until ``shutdown()``.
    /// - Parameters:
    ///   - url: `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=disable|prefer|require`.
    ///   - connectTimeout: The longest the first connection, its login and `SELECT 1` may take together, and the
    ///     pool's connect timeout; 5 seconds by default.
    ///   - maximumConnections: The pool's largest number of connections; 20 by default.
    ///   - steadyConnections: How many connections the pool keeps open, unpinged, for its whole life, for bulk work
    ///     that keeps them busy (see ``PostgresURL/clientConfiguration(connectTimeout:maximumConnections:steadyConnections:)``);
    ///     0 (the default) for connections on demand.
    ///   - logger: Where the driver logs; by default nowhere.
    /// - Returns: The connected database.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for a malformed URL, or
    ///   ``ZDDMError/Code/connectionFailed`` naming host and port and saying what happened.
    public static func connect(
        url: String,
        connectTimeout: Duration = .seconds(5),
        maximumConnections: Int = 20,
        steadyConnections: Int = 0,
        logger: Logger = Logger(label: "zddm.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
    ) async throws -> PostgresDatabase {
        try await connect(
            url: PostgresURL(url),
            connectTimeout: connectTimeout,
            maximumConnections: maximumConnections,
            steadyConnections: steadyConnections,
            logger: logger
        )
    }

    /// Connects to a database and starts a task that runs its connection pool until ``shutdown()``.
    /// - Parameters:
    ///   - url: The server and login.
    ///   - connectTimeout: The longest the first connection, its login and `SELECT 1` may take together, and the
    ///     pool's connect timeout; 5 seconds by default.
    ///   - maximumConnections: The pool's largest number of connections; 20 by default.
    ///   - steadyConnections: How many connections the pool keeps open, unpinged, for its whole life, for bulk work
    ///     that keeps them busy (see ``PostgresURL/clientConfiguration(connectTimeout:maximumConnections:steadyConnections:)``);
    ///     0 (the default) for connections on demand.
    ///   - logger: Where the driver logs; by default nowhere.
    /// - Returns: The connected database.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/connectionFailed`` naming host and port and saying what
    ///   happened, or ``ZDDMError/Code/invalidArgument`` for a timeout or pool size below its minimum, or steady
    ///   connections outside 0 to the pool size.
    public static func connect(
        url: PostgresURL,
        connectTimeout: Duration = .seconds(5),
        maximumConnections: Int = 20,
        steadyConnections: Int = 0,
        logger: Logger = Logger(label: "zddm.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
    ) async throws -> PostgresDatabase {
        let configuration = try url.clientConfiguration(
            connectTimeout: connectTimeout,
            maximumConnections: maximumConnections,
            steadyConnections: steadyConnections
        )
        let logger = Self.logger(logger, url: url)
        do {
            try await Self.check(url: url, timeout: connectTimeout, logger: logger)
        } catch {
            throw Self.connectionError(url: url, timeout: connectTimeout, error)
        }
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        return PostgresDatabase(url: url, runningClient: client, logger: logger)
    }

    /// Runs SQL without parameters, for administration such as creating tables in tests and setup scripts.
    ///
    /// Never build this SQL from values: the stores bind values as parameters, and so should you.
    /// - Parameter sql: One statement.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func execute(_ sql: String) async throws {
        do {
            _ = try await collect(PostgresQuery(unsafeSQL: sql))
        } catch {
            throw ZDDMError(.storeFailed, message: "PostgreSQL \(server)", underlying: PostgresErrors.sanitized(error))
        }
    }

    /// Stops the pool this database started (see ``connect(url:connectTimeout:maximumConnections:steadyConnections:logger:)``):
    /// running queries finish or fail, later calls of its stores fail. A client given to
    /// ``init(client:url:logger:)`` is left running; the application stops it.
    public func shutdown() async {
        guard let runTask else { return }
        runTask.cancel()
        await runTask.value
    }

    /// How far the server's replicas lag behind it in replaying its changes: the largest `replay_lag` in
    /// `pg_stat_replication`, the signal a backfill's back-pressure uses (``ZDDM/BackfillOptions/backPressure``).
    /// - Returns: The lag, or `nil` when the server has no replica attached (or none reports a lag yet).
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func replicationLag() async throws -> Duration? {
        do {
            let rows = try await rows(
                "SELECT EXTRACT(EPOCH FROM max(replay_lag))::float8 FROM pg_stat_replication",
                PostgresBindings()
            )
            guard let seconds = try rows.first?.decode(Double?.self), seconds.isFinite else { return nil }
            return .milliseconds(Int64(max(0, seconds) * 1000))
        } catch {
            throw ZDDMError(.storeFailed, message: "PostgreSQL \(server)", underlying: PostgresErrors.sanitized(error))
        }
    }

    /// Runs one statement on a pooled connection and collects its rows.
    func rows(_ statement: String, _ binds: PostgresBindings) async throws -> [PostgresRow] {
        try await collect(PostgresQuery(unsafeSQL: statement, binds: binds))
    }

    /// `HOST:PORT/DB`, for messages.
    var server: String { url.map { "\($0.host):\($0.port)/\($0.database)" } ?? "the application's client" }

    /// The URL without its password, or what the database is when it has none, for descriptions.
    var location: String { url.map(String.init(describing:)) ?? "the application's client" }

    public var description: String { "PostgresDatabase(\(location))" }

    private static func logger(_ logger: Logger, url: PostgresURL?) -> Logger {
        var logger = logger
        if let url { logger[metadataKey: "zddm.postgres.server"] = "\(url.host):\(url.port)" }
        return logger
    }

    // MARK: Connecting

    private static func check(url: PostgresURL, timeout: Duration, logger: Logger) async throws {
        let connectionConfiguration = try url.connectionConfiguration(connectTimeout: timeout)
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
}
