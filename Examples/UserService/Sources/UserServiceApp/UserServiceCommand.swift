import ArgumentParser
import Foundation
import Hummingbird
import Logging
import UserService

/// Runs the user service.
@main
struct UserServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user-service",
        abstract: "A users HTTP service whose storage migrates from users_v1 to users_v2 through ZDDM."
    )

    @Option(help: "The address to bind.")
    var hostname = "127.0.0.1"

    @Option(help: "The port to bind.")
    var port = 8080

    @Option(
        help: """
            The SQLite file (default: $USER_SERVICE_DATABASE, or \(UserServiceConfiguration.defaultDatabasePath) \
            in the current directory).
            """
    )
    var database: String?

    @Option(help: "A rate to start with, overriding the one the last run saved.")
    var rate: Double?

    @Option(help: "The log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
    }

    func run() async throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "UserService")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let path =
            database
            ?? ProcessInfo.processInfo.environment["USER_SERVICE_DATABASE"]
            ?? UserServiceConfiguration.defaultDatabasePath
        let configuration = UserServiceConfiguration(
            hostname: hostname,
            port: port,
            databasePath: path,
            initialRate: rate
        )
        let app = try await buildApplication(configuration: configuration, logger: logger)
        try await app.runService()
    }
}
