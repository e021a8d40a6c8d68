import GRDB
import ZDDM
import ZDDMSQL

/// Turns GRDB's errors into errors whose descriptions hold no SQL parameters or values.
enum SQLiteErrors {
    /// A driver error reduced to SQLite's code and message; other errors are passed through when they are
    /// already safe (``ZDDMError``, cancellation) and reduced to their type name otherwise.
    static func sanitized(_ error: any Error) -> any Error {
        switch error {
        case let error as DatabaseError:
            let code = error.extendedResultCode
            return SQLDatabaseError(
                system: "SQLite",
                code: "\(code.rawValue)",
                message: error.message ?? "",
                driverError: error
            )
        case is ZDDMError, is CancellationError, is SQLDatabaseError:
            return error
        default:
            return SQLDatabaseError(
                system: "SQLite",
                code: nil,
                message: "\(type(of: error))",
                driverError: error
            )
        }
    }

    /// Wraps an error of a store operation, naming the table and the database, and adding a hint for a missing
    /// table.
    static func wrap(
        _ error: any Error,
        operation: StoreOperation,
        table: SQLIdentifier,
        database: SQLiteURL
    ) -> any Error {
        if error is CancellationError { return error }
        if var known = error as? ZDDMError {
            known.operation = known.operation ?? operation
            return known
        }
        var message = "table \(table) in \(database)"
        if let databaseError = error as? DatabaseError {
            switch databaseError.resultCode {
            case .SQLITE_READONLY: message += ": the database is read-only"
            case .SQLITE_ERROR where databaseError.message?.hasPrefix("no such table") == true:
                message += ": the table does not exist (prepare() creates it)"
            default: break
            }
        }
        return ZDDMError(.storeFailed, operation: operation, message: message, underlying: sanitized(error))
    }
}
