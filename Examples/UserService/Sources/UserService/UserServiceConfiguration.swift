/// Where the service listens and where its data lives.
public struct UserServiceConfiguration: Sendable {
    /// The default database file, relative to the current directory.
    public static let defaultDatabasePath = "users.sqlite"

    /// The address to bind.
    public var hostname: String
    /// The port to bind.
    public var port: Int
    /// The SQLite file holding the Old table (`users_v1`), the New table (`users_v2`) and the migration's own
    /// tables (`zddm_control`, `zddm_checkpoints`).
    public var databasePath: String
    /// The migration's name: a metrics dimension, the checkpoint's name and the key of the saved gate state.
    public var migrationName: String
    /// A rate to start with, overriding the one saved by the last run; `nil` keeps the saved rate (0 the first
    /// time).
    public var initialRate: Double?

    /// Creates a configuration.
    /// - Parameters:
    ///   - hostname: The address to bind; `127.0.0.1` by default.
    ///   - port: The port to bind; 8080 by default.
    ///   - databasePath: The SQLite file; `users.sqlite` in the current directory by default.
    ///   - migrationName: The migration's name; `users-v2` by default.
    ///   - initialRate: A rate overriding the saved one, or `nil`.
    public init(
        hostname: String = "127.0.0.1",
        port: Int = 8080,
        databasePath: String = Self.defaultDatabasePath,
        migrationName: String = "users-v2",
        initialRate: Double? = nil
    ) {
        self.hostname = hostname
        self.port = port
        self.databasePath = databasePath
        self.migrationName = migrationName
        self.initialRate = initialRate
    }
}
