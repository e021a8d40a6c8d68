import Foundation
public import GRDB
import ZDDM

/// An open SQLite database, shared by any number of stores (for example Old's and New's tables in one file).
///
/// Opened from a URL, files use WAL mode with a pool of readers and one writer; `sqlite::memory:` and read-only
/// files use a single connection. Writers wait up to the busy timeout for another process's lock. An application
/// that already has a GRDB `DatabaseQueue` or `DatabasePool` hands it over with ``init(writer:)`` instead, so the
/// stores share its connections and its configuration.
public final class SQLiteDatabase: Sendable, CustomStringConvertible {
    /// Where the database is.
    public let url: SQLiteURL
    let writer: any DatabaseWriter
    /// Whether ``close()`` closes the writer: only one this database opened itself.
    private let ownsWriter: Bool

    /// Opens a database from a URL.
    /// - Parameters:
    ///   - url: `sqlite:PATH`, `sqlite:///ABSOLUTE/PATH` or `sqlite::memory:`, optionally with `?mode=ro`.
    ///   - busyTimeout: How long a write waits for another connection's lock before failing; 5 seconds by default.
    /// - Returns: The open database.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for a malformed URL, or
    ///   ``ZDDMError/Code/connectionFailed`` when the file cannot be opened or is not an SQLite database.
    public static func open(url: String, busyTimeout: Duration = .seconds(5)) throws -> SQLiteDatabase {
        try SQLiteDatabase(SQLiteURL(url), busyTimeout: busyTimeout)
    }

    /// Opens a database.
    /// - Parameters:
    ///   - url: Where the database is, and whether it is read-only.
    ///   - busyTimeout: How long a write waits for another connection's lock before failing; 5 seconds by default.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/connectionFailed`` when the file cannot be opened or is not
    ///   an SQLite database.
    public init(_ url: SQLiteURL, busyTimeout: Duration = .seconds(5)) throws {
        self.url = url
        self.ownsWriter = true
        var configuration = Configuration()
        configuration.readonly = url.readOnly
        let seconds = Double(busyTimeout.components.seconds) + Double(busyTimeout.components.attoseconds) / 1e18
        configuration.busyMode = .timeout(max(0, seconds))
        configuration.label = "zddm"
        do {
            switch url.location {
            case .memory:
                writer = try DatabaseQueue(configuration: configuration)
            case .file(let path):
                if url.readOnly {
                    writer = try DatabaseQueue(path: path, configuration: configuration)
                } else {
                    writer = try DatabasePool(path: path, configuration: configuration)
                }
            }
            // Opening is lazy in SQLite: read the schema now so a file that is not a database fails here.
            try writer.unsafeReentrantRead { db in
                _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master")
            }
        } catch {
            throw ZDDMError(
                .connectionFailed,
                message: "could not open the SQLite database \(url)",
                underlying: SQLiteErrors.sanitized(error)
            )
        }
    }

    /// Uses a database the application has already opened with GRDB, with the application's configuration (busy
    /// mode, read-only, WAL); nothing is opened or run in the background.
    ///
    /// The application keeps owning the writer: ``close()`` leaves it open, and the application closes it after
    /// the last store call.
    /// - Parameter writer: A `DatabaseQueue` or `DatabasePool`.
    public init(writer: any DatabaseWriter) {
        let path = writer.path
        let inMemory = path.isEmpty || path == ":memory:" || path.contains("mode=memory")
        self.url = SQLiteURL(location: inMemory ? .memory : .file(path), readOnly: writer.configuration.readonly)
        self.writer = writer
        self.ownsWriter = false
    }

    /// Runs SQL without parameters, for administration such as creating tables in tests and setup scripts.
    ///
    /// Never build this SQL from values: the stores bind values as parameters, and so should you.
    /// - Parameter sql: One or more statements.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/storeFailed`` when SQLite fails.
    public func execute(_ sql: String) async throws {
        do {
            try await writer.write { db in try db.execute(sql: sql) }
        } catch {
            throw ZDDMError(.storeFailed, message: "SQLite \(url)", underlying: SQLiteErrors.sanitized(error))
        }
    }

    /// Closes the database; later calls of its stores fail. A writer given to ``init(writer:)`` is left open for
    /// the application to close.
    /// - Throws: ``ZDDMError`` when SQLite cannot close (for example while a statement runs).
    public func close() throws {
        guard ownsWriter else { return }
        do {
            if let pool = writer as? DatabasePool {
                try pool.close()
            } else if let queue = writer as? DatabaseQueue {
                try queue.close()
            }
        } catch {
            throw ZDDMError(.storeFailed, message: "closing \(url)", underlying: SQLiteErrors.sanitized(error))
        }
    }

    public var description: String { "SQLiteDatabase(\(url))" }
}
