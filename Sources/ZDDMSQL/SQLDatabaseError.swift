public import ZDDM

/// A database driver's error reduced to what is safe to show: the database system, its error code and a
/// message that names tables and columns but never a row's value, an SQL parameter or a password.
///
/// The SQL stores wrap every driver error in one of these before putting it in ``ZDDM/ZDDMError/underlying``, so a
/// ``ZDDM/ZDDMError``'s description stays clean. The driver's own error is kept in ``driverError`` for debugging;
/// it is not part of the description, and inspecting it may show values.
public struct SQLDatabaseError: Error, Sendable, ValueFreeDescription {
    /// The database system, for example `"SQLite"` or `"PostgreSQL"`.
    public var system: String
    /// The system's error code (an SQLite result code or a PostgreSQL SQLSTATE), when there is one.
    public var code: String?
    /// A message without values, parameters or passwords.
    public var message: String
    /// The driver's original error; its description may hold values, so it is left out of ``description``.
    public var driverError: (any Error)?

    /// Creates an error.
    /// - Parameters:
    ///   - system: The database system.
    ///   - code: Its error code, if any.
    ///   - message: A message without values, parameters or passwords.
    ///   - driverError: The driver's original error.
    public init(system: String, code: String?, message: String, driverError: (any Error)?) {
        self.system = system
        self.code = code
        self.message = message
        self.driverError = driverError
    }

    public var description: String {
        var text = system + " error"
        if let code { text += " " + code }
        if !message.isEmpty { text += ": " + message }
        return text
    }
}

extension SQLDatabaseError: RetryableError {
    /// `false` when the database says the statement fails the same way until something is changed; `true` for a
    /// lost connection, a failover, a lock, deadlock or serialization conflict, a lack of resources, and whenever
    /// there is no code to judge by.
    ///
    /// - PostgreSQL: SQLSTATE classes 0A (feature not supported), 22 (data exception), 23 (integrity constraint
    ///   violation), 28 (invalid authorization, such as a wrong password), 3D and 3F (no such database or schema),
    ///   42 (syntax error or access rule violation: a missing table or column, a missing privilege), 44 and 54
    ///   (check option violated, a program limit exceeded) are not retryable.
    /// - SQLite: the primary result codes `SQLITE_ERROR` (such as no such table), `SQLITE_PERM`, `SQLITE_READONLY`,
    ///   `SQLITE_CORRUPT`, `SQLITE_CANTOPEN`, `SQLITE_TOOBIG`, `SQLITE_CONSTRAINT`, `SQLITE_MISMATCH`,
    ///   `SQLITE_MISUSE`, `SQLITE_AUTH` and `SQLITE_NOTADB` are not retryable; `SQLITE_BUSY` and `SQLITE_LOCKED` are.
    public var isRetryable: Bool {
        guard let code else { return true }
        switch system {
        case "PostgreSQL":
            return !Self.permanentPostgresClasses.contains(String(code.prefix(2)))
        case "SQLite":
            guard let extended = Int(code) else { return true }
            return !Self.permanentSQLiteCodes.contains(extended & 0xFF)
        default:
            return true
        }
    }

    /// SQLSTATE classes that retrying cannot cure (PostgreSQL's documentation, "PostgreSQL Error Codes").
    private static let permanentPostgresClasses: Set<String> = ["0A", "22", "23", "28", "3D", "3F", "42", "44", "54"]

    /// SQLite primary result codes that retrying cannot cure (sqlite.org, "Result and Error Codes"): ERROR (1),
    /// PERM (3), READONLY (8), CORRUPT (11), CANTOPEN (14), TOOBIG (18), CONSTRAINT (19), MISMATCH (20),
    /// MISUSE (21), AUTH (23), NOTADB (26).
    private static let permanentSQLiteCodes: Set<Int> = [1, 3, 8, 11, 14, 18, 19, 20, 21, 23, 26]
}
