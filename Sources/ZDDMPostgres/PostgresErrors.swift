import PostgresNIO
import ZDDM
import ZDDMSQL

/// Turns PostgresNIO's errors into errors whose descriptions hold no SQL parameters, row values or passwords.
///
/// PostgreSQL's message is kept (it names tables, columns and constraints) except for SQLSTATE class 22 (data
/// exceptions), whose messages may quote the offending input; details, hints and the query are always left out.
enum PostgresErrors {
    static func sanitized(_ error: any Error) -> any Error {
        switch error {
        case is ZDDMError, is CancellationError, is SQLDatabaseError:
            return error
        case let error as PostgresTransactionError:
            let inner = error.closureError ?? error.beginError ?? error.commitError ?? error.rollbackError
            return inner.map(sanitized)
                ?? SQLDatabaseError(
                    system: "PostgreSQL",
                    code: nil,
                    message: "transaction failed",
                    driverError: error
                )
        case let error as PSQLError:
            return SQLDatabaseError(
                system: "PostgreSQL",
                code: error.serverInfo?[.sqlState],
                message: message(of: error),
                driverError: error
            )
        case let error as PostgresDecodingError:
            return SQLDatabaseError(
                system: "PostgreSQL",
                code: nil,
                message: "could not decode column \(String(reflecting: error.columnName)) of type "
                    + "\(error.postgresType) as \(error.targetType)",
                driverError: error
            )
        default:
            return SQLDatabaseError(system: "PostgreSQL", code: nil, message: "\(type(of: error))", driverError: error)
        }
    }

    /// An error to rethrow as it is, or `nil`: a cancellation, or a ``ZDDM/ZDDMError`` (also one thrown inside a
    /// transaction's body).
    static func passedThrough(_ error: any Error) -> (any Error)? {
        if error is CancellationError || error is ZDDMError { return error }
        if let transaction = error as? PostgresTransactionError, let known = transaction.closureError as? ZDDMError {
            return known
        }
        return nil
    }

    /// The server's or the client's explanation, without values.
    static func message(of error: PSQLError) -> String {
        if let info = error.serverInfo {
            let state = info[.sqlState] ?? ""
            if state.hasPrefix("22") {
                return "data exception (the server's message is left out because it may quote a value)"
            }
            return info[.message] ?? "server error"
        }
        var text = "\(error.code)"
        if let underlying = error.underlying {
            text += ": \(underlying)"
        }
        return text
    }

    /// The SQLSTATE of a PostgreSQL error, if it is one.
    static func sqlState(_ error: any Error) -> String? {
        switch error {
        case let error as PSQLError: error.serverInfo?[.sqlState]
        case let error as PostgresTransactionError:
            (error.closureError ?? error.beginError ?? error.commitError).flatMap(sqlState)
        default: nil
        }
    }

    /// What an error of a store operation means, when PostgreSQL says so clearly: a missing table or a read-only
    /// database.
    static func hint(for error: any Error) -> String? {
        switch sqlState(error) {
        case "42P01": "a table does not exist (prepare() creates it)"
        case "25006": "the database is read-only"
        default: nil
        }
    }
}
