package import ArgumentParser
import Foundation
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMSQLite

/// `zddm capture`: install, inspect and remove change capture on Old's table.
package struct CaptureCommand: AsyncParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Install, inspect or remove change capture on Old's table.",
        discussion: """
            Change capture gives every row of Old's table a version and records each change, by any writer \
            (plain SQL included), in a change table that the change applier reads. The change applier removes the \
            entries it has applied; `capture status` shows how many are left and how old the oldest is.
            """,
        subcommands: [CaptureInstallCommand.self, CaptureStatusCommand.self, CaptureUninstallCommand.self]
    )

    package init() {}
}

/// The options every `capture` subcommand takes: the table and its names.
struct CaptureOptions: ParsableArguments {
    @Option(help: "Old's URL: sqlite:PATH or postgres://USER@HOST:PORT/DB (the password from PGPASSWORD or the URL).")
    var old: String

    @Option(help: "The captured table.")
    var table: String

    @Option(help: "The table's key column (its primary key or a unique column).")
    var keyColumn: String = "key"

    @Option(help: "The version column the triggers keep.")
    var versionColumn: String = "zddm_version"

    func validate() throws {
        _ = try schema()
    }

    /// The names change capture uses; checked before anything connects.
    func schema() throws -> ChangeCaptureSchema {
        do {
            return try ChangeCaptureSchema(table: table, keyColumn: keyColumn, versionColumn: versionColumn)
        } catch let error as ZDDMError {
            throw ValidationError(error.message)
        }
    }
}

/// The `--lock-timeout` option of the `capture` subcommands that change the table.
struct LockTimeoutOption: ParsableArguments {
    @Option(
        help: """
            Seconds to wait for the table's locks before giving up with nothing changed (PostgreSQL's \
            lock_timeout; for SQLite, how long to wait for another writer).
            """
    )
    var lockTimeout: Double = 5

    func validate() throws {
        guard lockTimeout.isFinite, lockTimeout > 0, lockTimeout <= 86_400 else {
            throw ValidationError("--lock-timeout must be a number of seconds in (0, 86400]")
        }
    }

    var duration: Duration { .milliseconds(max(1, Int64((lockTimeout * 1000).rounded()))) }
}

/// `zddm capture install`.
struct CaptureInstallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install",
        abstract: "Install change capture on Old's table, or bring it up to date.",
        discussion: """
            Adds the version column (existing rows get version 0), the deleted-versions table, the change table \
            and the triggers; installing again changes nothing. It is safe on a table with live traffic: it runs \
            in one short transaction, and writers simply wait for it. On PostgreSQL it takes an ACCESS EXCLUSIVE \
            lock on the table to add the column (a catalog change, no table rewrite) and SHARE ROW EXCLUSIVE for \
            the triggers, held a few milliseconds until it commits; with lock_timeout set to --lock-timeout it \
            never queues long behind a running transaction, and gives up with nothing changed instead. On SQLite \
            it is one write transaction. Writers that insert without a column list (INSERT INTO t VALUES …) must \
            name their columns once the version column exists. The change applier removes the entries it has \
            applied.
            """
    )

    @OptionGroup var options: CaptureOptions
    @OptionGroup var lock: LockTimeoutOption

    func run() async throws {
        let schema = try options.schema()
        try await OpenedDatabase.with(options.old, option: "--old", lockTimeout: lock.duration) { database in
            switch database {
            case .sqlite(let sqlite):
                try await SQLiteChangeCapture(database: sqlite, schema: schema).install()
            case .postgres(let postgres, _):
                try await PostgresChangeCapture(database: postgres, schema: schema).install(
                    lockTimeout: lock.duration
                )
            }
            print("change capture installed on table \(schema.table) in \(database)")
        }
    }
}

/// `zddm capture status`.
struct CaptureStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show whether change capture is installed, and the change table's backlog.",
        discussion: """
            Prints one line (or a JSON object with --json): installed, or what is missing; the entries the change \
            applier has not yet applied and removed; the oldest entry's age by the database's clock. Exits 0 when \
            change capture is installed and current, 1 otherwise. Changes nothing.
            """
    )

    @OptionGroup var options: CaptureOptions

    @Flag(help: "Print a JSON object instead of a line.")
    var json = false

    func run() async throws {
        let schema = try options.schema()
        let report = try await OpenedDatabase.with(options.old, option: "--old") { database in
            switch database {
            case .sqlite(let sqlite):
                let status = try await SQLiteChangeCapture(database: sqlite, schema: schema).status()
                return CaptureStatusReport(
                    table: schema.table.name,
                    database: "\(database)",
                    missing: status.missing,
                    backlog: status.backlog
                )
            case .postgres(let postgres, _):
                let status = try await PostgresChangeCapture(database: postgres, schema: schema).status()
                return CaptureStatusReport(
                    table: schema.table.name,
                    database: "\(database)",
                    missing: status.missing,
                    backlog: status.backlog
                )
            }
        }
        print(json ? try report.json() : report.line)
        if !report.installed { throw ExitCode(1) }
    }
}

/// `zddm capture uninstall`.
struct CaptureUninstallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uninstall",
        abstract: "Remove change capture from Old's table.",
        discussion: """
            Removes the triggers in one transaction; removing what is not installed is not an error. Entries still \
            in the change table were not applied to New: check `capture status` first. On PostgreSQL the change \
            table, the deleted-versions table and the version column stay unless --remove-data is given. On \
            SQLite the triggers, the change table and the deleted-versions table go together, so --remove-data is \
            required; the version column stays (drop it with ALTER TABLE … DROP COLUMN once nothing reads it).
            """
    )

    @OptionGroup var options: CaptureOptions
    @OptionGroup var lock: LockTimeoutOption

    @Flag(help: "Also drop the change table and the deleted-versions table (and on PostgreSQL the version column).")
    var removeData = false

    func validate() throws {
        if options.old.hasPrefix("sqlite:"), !removeData {
            throw ValidationError(
                "on SQLite, uninstall drops the change table and the deleted-versions table with the triggers: "
                    + "pass --remove-data"
            )
        }
    }

    func run() async throws {
        let schema = try options.schema()
        try await OpenedDatabase.with(options.old, option: "--old", lockTimeout: lock.duration) { database in
            switch database {
            case .sqlite(let sqlite):
                try await SQLiteChangeCapture(database: sqlite, schema: schema).uninstall()
            case .postgres(let postgres, _):
                try await PostgresChangeCapture(database: postgres, schema: schema).uninstall(
                    removingData: removeData,
                    lockTimeout: lock.duration
                )
            }
            let what = removeData ? "change capture and its data removed" : "change capture removed (data kept)"
            print("\(what) from table \(schema.table) in \(database)")
        }
    }
}
