import Logging
import PostgresNIO
import ZDDMPostgres

extension TCPForwarder {
    /// Waits until the server has no session left from the forwarders' connections: after that, nothing sent through
    /// them before a cut can still change the database.
    static func waitForSessionsToEnd(of forwarders: [TCPForwarder], url: PostgresURL) async throws {
        let ports = forwarders.flatMap(\.serverSidePorts)
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let connection = try await PostgresConnection.connect(
            configuration: PostgresConnection.Configuration(
                host: url.host,
                port: url.port,
                username: url.user,
                password: url.password,
                database: url.database,
                tls: .disable
            ),
            id: 1,
            logger: logger
        )
        do {
            try await poll("the server to end the cut sessions") {
                let rows = try await connection.query(
                    "SELECT count(*)::int8 FROM pg_stat_activity WHERE client_port = ANY(\(ports))",
                    logger: logger
                ).collect()
                return try rows.first?.decode(Int64.self) == 0
            }
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
    }
}
