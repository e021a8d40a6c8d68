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

    /// What an error of a store operation means, when SQLite says so clearly: a missing table or a read-only
    /// database.
    static func hint(for error: any Error) -> String? {
        guard let databaseError = error as? DatabaseError else { return nil }
        switch databaseError.resultCode {
        case .SQLITE_READONLY: return "the database is read-only"
        case .SQLITE_ERROR where databaseError.message?.hasPrefix("no such table") == true:
            return "the table does not exist (prepare() creates it)"
        default: return nil
        }
    }
}

extension SQLiteErrors {
    /// Turns an error of an operation on a table into what the library throws: cancellation as it is, a
    /// ``ZDDM/ZDDMError`` with the operation added, anything else a ``ZDDM/ZDDMError/Code/storeFailed`` naming the
    /// table and the database, with SQLite's error sanitised.
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
        if let hint = hint(for: error) { message += ": " + hint }
        return ZDDMError(.storeFailed, operation: operation, message: message, underlying: sanitized(error))
    }
}
