import Foundation
import ZDDM
import ZDDMPostgres
import ZDDMSQLite

/// A database opened from a `sqlite:` or `postgres://` URL, for the commands that work on a database rather than a
/// key-value table (`capture`, `control`).
///
/// A PostgreSQL URL without a password takes it from `PGPASSWORD`, so it need not appear on the command line. The
/// password is never printed: ``description`` hides it, and so do the errors.
enum OpenedDatabase: Sendable, CustomStringConvertible {
    case sqlite(SQLiteDatabase)
    case postgres(PostgresDatabase, PostgresURL)

    /// Opens a database that must already exist: an SQLite URL naming a missing file is an error, not a new file.
    /// - Parameters:
    ///   - url: `sqlite:PATH` or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]`.
    ///   - option: The option the URL came from, for error messages.
    ///   - lockTimeout: For SQLite, how long a write waits for another connection's lock.
    ///   - steadyConnections: For PostgreSQL, the connections the pool keeps open, unpinged, for its whole life.
    ///   - environment: Where `PGPASSWORD` is read.
    /// - Returns: The open database; the caller closes it.
    /// - Throws: ``ZDDMError`` naming the option and what is wrong, never the password.
    static func open(
        _ url: String,
        option: String,
        lockTimeout: Duration = .seconds(5),
        steadyConnections: Int = 1,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws -> OpenedDatabase {
        if url.hasPrefix("sqlite:") {
            let location = try SQLiteURL(url)
            guard let path = location.filePath else {
                throw ZDDMError(.invalidArgument, message: "\(option): an in-memory SQLite database is not shared")
            }
            guard FileManager.default.fileExists(atPath: path) else {
                throw ZDDMError(.invalidArgument, message: "\(option): no SQLite database at \(path)")
            }
            return .sqlite(try SQLiteDatabase(location, busyTimeout: lockTimeout))
        }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            var location = try PostgresURL(url)
            if location.password == nil, let password = environment["PGPASSWORD"], !password.isEmpty {
                location.password = password
            }
            let database = try await PostgresDatabase.connect(url: location, steadyConnections: steadyConnections)
            return .postgres(database, location)
        }
        throw ZDDMError(
            .invalidArgument,
            message: "\(option): unsupported database URL; use sqlite:PATH or postgres://USER@HOST:PORT/DB"
        )
    }

    /// Closes the database.
    func close() async {
        switch self {
        case .sqlite(let database): try? database.close()
        case .postgres(let database, _): await database.shutdown()
        }
    }

    /// The database's URL, without the password.
    var description: String {
        switch self {
        case .sqlite(let database): "\(database.url)"
        case .postgres(_, let location): "\(location)"
        }
    }

    /// Whether this is a PostgreSQL database.
    var isPostgres: Bool {
        if case .postgres = self { return true }
        return false
    }

    /// Opens a database, runs `body` with it and closes it, whatever happens.
    /// - Parameters:
    ///   - url: The database's URL.
    ///   - option: The option the URL came from, for error messages.
    ///   - lockTimeout: For SQLite, how long a write waits for another connection's lock.
    ///   - body: What to do with the database.
    /// - Returns: What `body` returns.
    static func with<T: Sendable>(
        _ url: String,
        option: String,
        lockTimeout: Duration = .seconds(5),
        _ body: (OpenedDatabase) async throws -> T
    ) async throws -> T {
        let database = try await open(url, option: option, lockTimeout: lockTimeout)
        do {
            let result = try await body(database)
            await database.close()
            return result
        } catch {
            await database.close()
            throw error
        }
    }
}
