public import PostgresNIO
import ZDDM
import ZDDMSQL

extension PostgresURL {
    /// The configuration of a `PostgresClient` for this server and login, for an application that creates and runs
    /// the client itself and hands it to ``PostgresDatabase/init(client:url:logger:)``.
    ///
    /// With `sslmode=prefer` or `require` the connection is encrypted without verifying the server's certificate,
    /// as libpq does for those modes.
    ///
    /// By default the pool opens connections on demand, closes those idle for a minute and pings idle ones every
    /// 30 seconds. It does so with timers it schedules each time a connection comes back to it and cancels when the
    /// connection is taken again; a cancelled timer keeps about half a kilobyte until its deadline (Swift's
    /// `Task.sleep`), so a pool that hands out connections hundreds of times a second holds megabytes of them. Bulk
    /// work that keeps its connections busy (a backfill, a verify) passes `steadyConnections`: that many
    /// connections are opened at once and kept for the pool's life, and idle connections are not pinged, so
    /// returning one of them schedules no timer.
    /// - Parameters:
    ///   - connectTimeout: The pool's connect timeout; 5 seconds by default.
    ///   - maximumConnections: The pool's largest number of connections; 20 by default.
    ///   - steadyConnections: How many connections the pool keeps open, unpinged, for its whole life; 0 (the
    ///     default) for connections on demand, pinged while idle.
    /// - Returns: The configuration.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for a timeout or pool size
    ///   below its minimum, or steady connections below 0 or above the pool size.
    public func clientConfiguration(
        connectTimeout: Duration = .seconds(5),
        maximumConnections: Int = 20,
        steadyConnections: Int = 0
    ) throws -> PostgresClient.Configuration {
        guard connectTimeout > .zero, maximumConnections >= 1 else {
            throw ZDDMError(.invalidArgument, message: "the connect timeout and the pool size must be positive")
        }
        guard steadyConnections >= 0, steadyConnections <= maximumConnections else {
            throw ZDDMError(
                .invalidArgument,
                message:
                    "steady connections must be in 0…\(maximumConnections) (the pool size), got \(steadyConnections)"
            )
        }
        let tls: PostgresClient.Configuration.TLS =
            switch sslMode {
            case .disable: .disable
            case .prefer: .prefer(Self.unverifiedTLS())
            case .require: .require(Self.unverifiedTLS())
            }
        var configuration = PostgresClient.Configuration(
            host: host,
            port: port,
            username: user,
            password: password,
            database: database,
            tls: tls
        )
        configuration.options.connectTimeout = connectTimeout
        configuration.options.maximumConnections = maximumConnections
        if steadyConnections > 0 {
            configuration.options.minimumConnections = steadyConnections
            configuration.options.keepAliveBehavior = nil
        }
        return configuration
    }

    /// The configuration of a single connection, for checking the server before a pool starts.
    func connectionConfiguration(connectTimeout: Duration) throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch sslMode {
        case .disable:
            tls = .disable
        case .prefer, .require:
            let context: NIOSSLContext
            do {
                context = try NIOSSLContext(configuration: Self.unverifiedTLS())
            } catch {
                throw ZDDMError(
                    .invalidArgument,
                    message: "could not set up TLS",
                    underlying: SQLDatabaseError(system: "TLS", code: nil, message: "\(error)", driverError: error)
                )
            }
            tls = sslMode == .prefer ? .prefer(context) : .require(context)
        }
        var configuration = PostgresConnection.Configuration(
            host: host,
            port: port,
            username: user,
            password: password,
            database: database,
            tls: tls
        )
        configuration.options.connectTimeout = .nanoseconds(
            connectTimeout.components.seconds * 1_000_000_000 + connectTimeout.components.attoseconds / 1_000_000_000
        )
        return configuration
    }

    private static func unverifiedTLS() -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification = .none
        return tls
    }
}
