public import PostgresNIO
import ZDDM
import ZDDMSQL

extension PostgresURL {
    /// The configuration of a `PostgresClient` for this server and login, for an application that creates and runs
    /// the client itself and hands it to ``PostgresDatabase/init(client:url:logger:)``.
    ///
    /// With `sslmode=prefer` or `require` the connection is encrypted without verifying the server's certificate,
    /// as libpq does for those modes.
    /// - Parameters:
    ///   - connectTimeout: The pool's connect timeout; 5 seconds by default.
    ///   - maximumConnections: The pool's largest number of connections; 20 by default.
    /// - Returns: The configuration.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for a timeout or pool size
    ///   below its minimum.
    public func clientConfiguration(
        connectTimeout: Duration = .seconds(5),
        maximumConnections: Int = 20
    ) throws -> PostgresClient.Configuration {
        guard connectTimeout > .zero, maximumConnections >= 1 else {
            throw ZDDMError(.invalidArgument, message: "the connect timeout and the pool size must be positive")
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
