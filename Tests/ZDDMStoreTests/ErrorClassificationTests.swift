import Testing
import ZDDM
import ZDDMSQL

@Suite("Database errors say whether retrying can cure them")
struct ErrorClassificationTests {
    @Test(
        "PostgreSQL: a lost connection, a failover, a conflict or a lack of resources is retryable; a missing table, column, privilege, database or password is not",
        arguments: [
            (nil, true), ("08006", true), ("08001", true), ("40001", true), ("40P01", true), ("53300", true),
            ("55P03", true), ("57P01", true), ("57P03", true), ("25006", true), ("XX000", true),
            ("42P01", false), ("42703", false), ("42501", false), ("28P01", false), ("28000", false),
            ("3D000", false), ("3F000", false), ("0A000", false), ("22P02", false), ("23505", false),
            ("54000", false),
        ] as [(String?, Bool)]
    )
    func postgres(code: String?, retryable: Bool) {
        let error = SQLDatabaseError(system: "PostgreSQL", code: code, message: "m", driverError: nil)
        #expect(error.isRetryable == retryable)
        #expect(ZDDMError.isRetryable(error) == retryable)
        // Wrapped as a store's error, the classification is the same.
        #expect(ZDDMError(.storeFailed, message: "", underlying: error).isRetryable == retryable)
    }

    @Test(
        "SQLite: busy and locked (and their extended codes) are retryable; no such table, read-only, corrupt, not a database, constraint are not",
        arguments: [
            (nil, true), ("5", true), ("517", true), ("6", true), ("262", true), ("10", true), ("13", true),
            ("1", false), ("3", false), ("8", false), ("1032", false), ("11", false), ("14", false), ("19", false),
            ("2067", false), ("21", false), ("23", false), ("26", false),
        ] as [(String?, Bool)]
    )
    func sqlite(code: String?, retryable: Bool) {
        let error = SQLDatabaseError(system: "SQLite", code: code, message: "m", driverError: nil)
        #expect(error.isRetryable == retryable)
    }

    @Test("Another system's code, or a code that is not a number for SQLite, is retried")
    func unknown() {
        #expect(SQLDatabaseError(system: "TLS", code: "42P01", message: "", driverError: nil).isRetryable)
        #expect(SQLDatabaseError(system: "SQLite", code: "x", message: "", driverError: nil).isRetryable)
    }
}
