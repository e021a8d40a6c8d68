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
