import Foundation
import Testing
import ZDDM
import ZDDMSQL
import ZDDMSQLite

/// `zddm capture status --json`, as scripts read it.
private struct CaptureStatusJSON: Decodable {
    struct Backlog: Decodable {
        var entries: Int
        var oldestAgeSeconds: Double?
    }

    var table: String
    var database: String
    var installed: Bool
    var missing: [String]
    var backlog: Backlog?
}

/// `zddm control show --json`.
private struct FleetStateJSON: Decodable, Equatable {
    var migration: String
    var stage: String
    var rate: Double
    var highWaterRate: Double
    var killswitch: Bool
    var behind: UInt64
    var caughtUp: UInt64
    var isCaughtUp: Bool
    var verifiedBehind: UInt64? = nil
    var rampdownPermitted = false
}

/// Runs `zddm` with extra environment variables.
private func zddm(_ arguments: [String], environment: [String: String]) throws -> Run {
    let process = Process()
    process.executableURL = try zddmBinary()
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Run(
        status: process.terminationStatus,
        output: String(decoding: outData, as: UTF8.self),
        error: String(decoding: errData, as: UTF8.self)
    )
}

private func decode<T: Decodable>(_: T.Type, _ run: Run) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(run.output.utf8))
}

/// The PostgreSQL test server for the `zddm` binary: a URL without the password, which goes in `PGPASSWORD`, and
/// `psql` for plain-SQL writers.
private enum TestServer {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }
    static var password: String { environment["POSTGRES_PASSWORD"] ?? "" }

    /// The URL without a password.
    static func url() throws -> String {
        _ = try CLIPostgres.url()
        func part(_ name: String) -> String {
            (environment[name] ?? "").addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        }
        let host = environment["POSTGRES_HOST"] ?? ""
        let port = environment["POSTGRES_PORT"] ?? "5432"
        return "postgres://\(part("POSTGRES_USER"))@\(host):\(port)/\(part("POSTGRES_DB"))?sslmode=disable"
    }

    /// Runs SQL with `psql`, as a writer that knows nothing of ZDDM.
    static func psql(_ sql: String) throws {
        let process = Process()
        let psql = environment["PGBIN"].map { $0 + "/psql" } ?? "/usr/bin/psql"
        process.executableURL = URL(fileURLWithPath: psql)
        process.arguments = [
            "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", environment["POSTGRES_HOST"] ?? "", "-p",
            environment["POSTGRES_PORT"] ?? "5432", "-U", environment["POSTGRES_USER"] ?? "", "-d",
            environment["POSTGRES_DB"] ?? "", "-c", sql,
        ]
        process.environment = environment.merging(["PGPASSWORD": password]) { _, new in new }
        process.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        process.standardError = err
        try process.run()
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ZDDMError(.storeFailed, message: "psql failed: \(errors)")
        }
    }

    static var enabled: ConditionTrait {
        .enabled(
            if: CLIPostgres.shouldRun,
            Comment(
                rawValue: "PostgreSQL tests skipped: set POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, "
                    + "POSTGRES_PASSWORD and POSTGRES_DB (bash .ci/run does)"
            )
        )
    }
}

/// An SQLite database file holding a plain table `accounts (key INTEGER PRIMARY KEY, value BLOB)`.
private func makeAccounts(in folder: URL) async throws -> String {
    let path = folder.appendingPathComponent("old.sqlite").path
    let database = try SQLiteDatabase.open(url: "sqlite:\(path)")
    try await database.execute("CREATE TABLE accounts (key INTEGER PRIMARY KEY, value BLOB)")
    try await database.execute("INSERT INTO accounts (key, value) VALUES (1, x'01'), (2, x'02')")
    try database.close()
    return path
}

/// Checks that a run failed with a one-line error that contains `expected`.
func expectError(_ run: Run, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(run.status != 0, "\(run.output)", sourceLocation: sourceLocation)
    let firstLine = run.error.split(separator: "\n").first.map(String.init) ?? ""
    #expect(firstLine.hasPrefix("Error: "), "\(run.error)", sourceLocation: sourceLocation)
    #expect(firstLine.contains(expected), "\(run.error)", sourceLocation: sourceLocation)
    #expect(!run.error.contains("Fatal error") && !run.error.contains("Stack"), sourceLocation: sourceLocation)
}

@Suite("zddm capture and zddm control", .serialized)
struct CaptureAndControlTests {
    // MARK: capture

    /// Install, a plain-SQL write in the backlog, uninstall, on one Old database.
    private func captureLifecycle(
        old: String,
        table: String,
        environment: [String: String] = [:],
        write: (String) async throws -> Void
    ) async throws -> [Run] {
        var runs: [Run] = []
        func run(_ arguments: [String]) throws -> Run {
            let result = try zddm(["capture"] + arguments + ["--old", old, "--table", table], environment: environment)
            runs.append(result)
            return result
        }
        let before = try run(["status"])
        #expect(before.status == 1, "\(before.error)")
        #expect(before.output.contains("not installed (missing: "), "\(before.output)")
        #expect(before.output.contains("change table \"\(table)_zddm_changes\""), "\(before.output)")

        let install = try run(["install", "--lock-timeout", "2"])
        #expect(install.status == 0, "\(install.error)")
        #expect(install.output.contains("change capture installed on table \"\(table)\""), "\(install.output)")
        let again = try run(["install"])
        #expect(again.status == 0, "\(again.error)")

        let empty = try run(["status"])
        #expect(empty.status == 0, "\(empty.error)")
        #expect(empty.output.hasPrefix("capture on table \"\(table)\" in "), "\(empty.output)")
        #expect(empty.output.hasSuffix(": installed; backlog 0 entries\n"), "\(empty.output)")

        try await write(
            "INSERT INTO \(table) (key, value) VALUES (3, NULL); UPDATE \(table) SET value = NULL WHERE key = 1; "
                + "DELETE FROM \(table) WHERE key = 2"
        )
        let busy = try run(["status"])
        #expect(busy.status == 0, "\(busy.error)")
        #expect(busy.output.contains(": installed; backlog 3 entries, oldest "), "\(busy.output)")
        #expect(busy.output.hasSuffix(" s old\n"), "\(busy.output)")
        let json = try decode(CaptureStatusJSON.self, try run(["status", "--json"]))
        #expect(json.installed && json.missing.isEmpty && json.table == table)
        #expect(json.backlog?.entries == 3)
        let age = try #require(json.backlog?.oldestAgeSeconds)
        #expect(age >= 0 && age < 600)

        let uninstall = try run(["uninstall", "--remove-data"])
        #expect(uninstall.status == 0, "\(uninstall.error)")
        #expect(uninstall.output.contains("change capture and its data removed from table"), "\(uninstall.output)")
        let after = try run(["status"])
        #expect(after.status == 1)
        #expect(after.output.contains("not installed (missing: "), "\(after.output)")
        #expect(after.output.hasSuffix("; no change table\n"), "\(after.output)")
        let afterJSON = try decode(CaptureStatusJSON.self, try run(["status", "--json"]))
        #expect(!afterJSON.installed && !afterJSON.missing.isEmpty && afterJSON.backlog == nil)
        return runs
    }

    @Test("capture on SQLite: install, a plain-SQL write shows in the backlog, uninstall, status exits 1")
    func captureSQLite() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = try await makeAccounts(in: folder)
        _ = try await captureLifecycle(old: "sqlite:\(path)", table: "accounts") { sql in
            let database = try SQLiteDatabase.open(url: "sqlite:\(path)")
            defer { try? database.close() }
            try await database.execute(sql)
        }
        // The version column stays on SQLite; the side tables are gone.
        let database = try SQLiteDatabase.open(url: "sqlite:\(path)")
        defer { try? database.close() }
        try await database.execute("SELECT zddm_version FROM accounts")
        await #expect(throws: (any Error).self) { try await database.execute("SELECT 1 FROM accounts_zddm_changes") }
    }

    @Test(
        "capture on PostgreSQL: the same lifecycle; the password (from PGPASSWORD) is never printed",
        TestServer.enabled
    )
    func capturePostgres() async throws {
        let table = "zddm_cli_capture_\(UInt32.random(in: 0...UInt32.max))"
        try TestServer.psql("CREATE TABLE \(table) (key bigint PRIMARY KEY, value bytea)")
        defer { try? TestServer.psql("DROP TABLE IF EXISTS \(table), \(table)_zddm_changes, \(table)_zddm_deleted") }
        try TestServer.psql("INSERT INTO \(table) (key, value) VALUES (1, '\\x01'), (2, '\\x02')")
        let runs = try await captureLifecycle(
            old: try TestServer.url(),
            table: table,
            environment: ["PGPASSWORD": TestServer.password]
        ) { sql in try TestServer.psql(sql) }
        #expect(runs.allSatisfy { $0.output.contains("postgres://") })
        #expect(!TestServer.password.isEmpty)
        for run in runs {
            #expect(!run.output.contains(TestServer.password) && !run.error.contains(TestServer.password))
        }
        // Without --remove-data the side tables and the version column stay.
        let old = try TestServer.url()
        let environment = ["PGPASSWORD": TestServer.password]
        #expect(try zddm(["capture", "install", "--old", old, "--table", table], environment: environment).status == 0)
        let kept = try zddm(["capture", "uninstall", "--old", old, "--table", table], environment: environment)
        #expect(kept.status == 0, "\(kept.error)")
        #expect(kept.output.contains("change capture removed (data kept)"), "\(kept.output)")
        try TestServer.psql("SELECT zddm_version FROM \(table); SELECT count(*) FROM \(table)_zddm_changes")
        let status = try zddm(
            ["capture", "status", "--old", old, "--table", table, "--json"],
            environment: environment
        )
        #expect(status.status == 1)
        let json = try decode(CaptureStatusJSON.self, status)
        #expect(json.missing.allSatisfy { $0.hasPrefix("trigger") } && json.backlog?.entries == 0, "\(status.output)")
    }

    // MARK: control

    /// Set and show round trips on one shared-state database.
    private func controlRoundTrip(state: String, table: String, environment: [String: String] = [:]) throws -> [Run] {
        var runs: [Run] = []
        let migration = "accounts-\(UInt32.random(in: 0...UInt32.max))"
        func control(_ arguments: [String]) throws -> Run {
            let run = try zddm(
                ["control"] + arguments + ["--state", state, "--table", table, "--migration", migration],
                environment: environment
            )
            runs.append(run)
            return run
        }
        let set = try control(["set", "--stage", "dualwrite", "--rate", "0.25"])
        #expect(set.status == 0, "\(set.error)")
        // The high-water rate rose, so New may be behind Old for the newly admitted keys: behind moves on.
        #expect(
            set.output.hasPrefix(
                "migration \"\(migration)\": stage dualwrite, rate 0.25, high-water rate 0.25, killswitch off, "
                    + "behind 1, caught up 0 (New may be behind Old"
            ),
            "\(set.output)"
        )
        let shown = try decode(FleetStateJSON.self, try control(["show", "--json"]))
        #expect(
            shown
                == FleetStateJSON(
                    migration: migration,
                    stage: "dualwrite",
                    rate: 0.25,
                    highWaterRate: 0.25,
                    killswitch: false,
                    behind: 1,
                    caughtUp: 0,
                    isCaughtUp: false
                )
        )
        // The high-water rate never goes down.
        let lower = try decode(FleetStateJSON.self, try control(["set", "--rate", "0.1", "--json"]))
        #expect(lower.rate == 0.1 && lower.highWaterRate == 0.25 && lower.stage == "dualwrite")
        // The killswitch stops New's writes: behind moves on, and the line says New may be behind.
        let killed = try control(["set", "--killswitch", "on"])
        #expect(killed.status == 0, "\(killed.error)")
        #expect(
            killed.output.contains("killswitch on, behind 2, caught up 0 (New may be behind Old"),
            "\(killed.output)"
        )
        let show = try control(["show"])
        #expect(show.output == killed.output)
        // Turning it on again while on changes nothing; off and on again moves behind once more.
        #expect(try decode(FleetStateJSON.self, try control(["set", "--killswitch", "on", "--json"])).behind == 2)
        #expect(try decode(FleetStateJSON.self, try control(["set", "--killswitch", "off", "--json"])).behind == 2)
        #expect(try decode(FleetStateJSON.self, try control(["set", "--killswitch", "on", "--json"])).behind == 3)

        // Bad input: an error naming what was wrong, nothing changed.
        let before = try control(["show", "--json"]).output
        for (arguments, expected) in [
            (["set", "--rate", "1.5"], "--rate must be a number in [0, 1], got 1.5"),
            (["set", "--rate", "x"], "--rate must be a number in [0, 1], got 'x'"),
            (["set", "--stage", "bogus"], "--stage must be one of off, dualwrite, shadow, live, rampdown, complete"),
            (["set", "--killswitch", "maybe"], "--killswitch"),
            (["set"], "give at least one of --stage, --rate, --killswitch"),
            (["set", "--stage", "rampdown"], "stage dualwrite → rampdown refused: only live can move to rampdown"),
            (["set", "--stage", "complete"], "stage dualwrite → complete refused: go through rampdown first"),
        ] {
            expectError(try control(arguments), expected)
        }
        #expect(try control(["show", "--json"]).output == before)

        // live → rampdown needs rate 1, the killswitch off, the applier caught up and a recorded clean verify pass.
        #expect(try control(["set", "--stage", "live", "--rate", "1", "--killswitch", "off"]).status == 0)
        expectError(try control(["set", "--stage", "rampdown"]), "rampdown needs the change applier caught up")
        expectError(try control(["set", "--stage", "rampdown"]), "a clean verify pass at rate 1")
        #expect(try control(["show", "--json"]).output.contains("\"stage\":\"live\""))
        return runs
    }

    @Test("control on SQLite: set and show round trip, killswitch on moves behind, bad input changes nothing")
    func controlSQLite() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = try await makeAccounts(in: folder)
        _ = try controlRoundTrip(state: "sqlite:\(path)", table: "zddm_fleet")
        _ = try controlRoundTrip(state: "sqlite:\(path)", table: "other_fleet")
        let never = try zddm(["control", "show", "--state", "sqlite:\(path)", "--migration", "never-set"])
        #expect(never.status == 0, "\(never.error)")
        #expect(never.output.contains("stage off, rate 0.0, high-water rate 0.0, killswitch off, behind 0"))
    }

    @Test("control on PostgreSQL: the same round trip; the password is never printed", TestServer.enabled)
    func controlPostgres() throws {
        let table = "zddm_cli_fleet_\(UInt32.random(in: 0...UInt32.max))"
        defer { try? TestServer.psql("DROP TABLE IF EXISTS \(table)") }
        let runs = try controlRoundTrip(
            state: try TestServer.url(),
            table: table,
            environment: ["PGPASSWORD": TestServer.password]
        )
        #expect(!TestServer.password.isEmpty)
        for run in runs {
            #expect(!run.output.contains(TestServer.password) && !run.error.contains(TestServer.password))
        }
    }

    @Test("control set: rampdown permitted by a clean zddm verify --migration pass, revoked when New falls behind")
    func controlTransitions() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // Old (which also holds the shared state), and New: the same rows (a clean pass), or one row missing.
        let path = folder.appendingPathComponent("old.sqlite").path
        let samePath = folder.appendingPathComponent("same.sqlite").path
        let differentPath = folder.appendingPathComponent("different.sqlite").path
        try await makeOldTable(at: path, rows: 10)
        try await makeOldTable(at: samePath, rows: 10)
        try await makeOldTable(at: differentPath, rows: 9)

        func control(_ arguments: [String]) throws -> Run {
            try zddm(["control"] + arguments + ["--state", "sqlite:\(path)", "--migration", "m"], environment: [:])
        }
        func verify(_ new: String, _ extra: [String] = ["--migration", "m"]) throws -> Run {
            try zddm(
                ["verify", "--from", "sqlite:\(path)", "--to", "sqlite:\(new)", "--table", "kv"] + extra,
                environment: [:]
            )
        }
        #expect(try control(["set", "--stage", "live", "--rate", "0.5"]).status == 0)
        expectError(try control(["set", "--stage", "rampdown"]), "rampdown needs rate 1 (the rate is 0.5)")
        // Rate 1 raises the high water, so New may be behind until the change applier has caught up (done here
        // through the library, as an applier holding the lease would).
        #expect(try control(["set", "--rate", "1"]).status == 0)
        let state = try SQLiteFleetStateStore(database: try SQLiteDatabase.open(url: "sqlite:\(path)"))
        let token = try #require(try await state.acquireLease("m", holder: "test", duration: .seconds(60)))
        #expect(try await state.publishCaughtUp("m", through: try await state.state(of: "m").behind, token: token))
        expectError(try control(["set", "--stage", "rampdown"]), "a clean verify pass at rate 1")
        expectError(try control(["set", "--stage", "rampdown"]), "none recorded yet; run zddm verify")
        var shown = try control(["show"]).output
        #expect(shown.contains("behind 2, caught up 2; no clean verify pass recorded; rampdown needs a clean verify"))

        // A pass that finds a mismatch records nothing; neither does a pass on a migration never set up.
        let unclean = try verify(differentPath)
        #expect(unclean.status == 1 && unclean.output.contains("fleet: nothing recorded"), "\(unclean.output)")
        expectError(try verify(samePath, ["--migration", "never-set"]), "migration 'never-set' has no shared state")
        expectError(try verify(samePath, ["--state", "sqlite:\(path)"]), "--state needs --migration")
        #expect(try decode(FleetStateJSON.self, try control(["show", "--json"])).verifiedBehind == nil)

        // A clean pass is recorded with the barrier read before it began, and permits rampdown.
        let clean = try verify(samePath)
        #expect(clean.status == 0, "\(clean.error)")
        #expect(clean.output.contains("fleet: recorded a clean pass that began at behind 2"), "\(clean.output)")
        #expect(clean.output.contains("rampdown permitted"), "\(clean.output)")
        let json = try decode(FleetStateJSON.self, try control(["show", "--json"]))
        #expect(json.verifiedBehind == 2 && json.rampdownPermitted && json.stage == "live")
        shown = try control(["show"]).output
        #expect(shown.contains("; clean verify pass recorded at behind 2; rampdown permitted"), "\(shown)")

        // New falling behind revokes it, until another clean pass.
        _ = try await state.markBehind("m")
        #expect(try await state.publishCaughtUp("m", through: 3, token: token))
        expectError(try control(["set", "--stage", "rampdown"]), "the last one began at behind 2")
        // This time a run of two workers: it records the barrier read before it was planned.
        let run = try verify(samePath, ["--migration", "m", "--run", "again", "--workers", "2", "--chunk-rows", "3"])
        #expect(run.status == 0, "\(run.output)\(run.error)")
        #expect(run.output.contains("fleet: recorded a clean pass that began at behind 3"), "\(run.output)")
        try state.database.close()

        let rampdown = try control(["set", "--stage", "rampdown"])
        #expect(rampdown.status == 0, "\(rampdown.error)")
        #expect(rampdown.output.contains("stage rampdown") && rampdown.output.contains("recorded at behind 3"))
        expectError(try control(["set", "--rate", "0.5"]), "the rate must stay 1 in stage rampdown")
        #expect(try control(["set", "--stage", "complete"]).status == 0)
        expectError(try control(["set", "--stage", "live"]), "stage complete → live refused: Old is no longer written")
        #expect(try control(["show"]).output.contains("stage complete, rate 1.0"))
    }

    @Test("control on a table an earlier version created: show names the fix, set adds the column")
    func controlOlderTable() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = try await makeAccounts(in: folder)
        let database = try SQLiteDatabase.open(url: "sqlite:\(path)")
        try await database.execute(
            """
            CREATE TABLE zddm_fleet ("migration" TEXT NOT NULL PRIMARY KEY, "stage" TEXT NOT NULL, \
            "rate" REAL NOT NULL, "high_water" REAL NOT NULL, "killswitch" INTEGER NOT NULL, \
            "behind" INTEGER NOT NULL, "caught_up" INTEGER NOT NULL, "lease_holder" TEXT, "lease_token" INTEGER, \
            "lease_expires" REAL, "last_token" INTEGER NOT NULL DEFAULT 0)
            """
        )
        try await database.execute(
            "INSERT INTO zddm_fleet VALUES ('m', 'live', 1.0, 1.0, 0, 3, 3, NULL, NULL, NULL, 0)"
        )
        try database.close()
        func control(_ arguments: [String]) throws -> Run {
            try zddm(["control"] + arguments + ["--state", "sqlite:\(path)", "--migration", "m"], environment: [:])
        }
        expectError(try control(["show"]), "prepare() adds it, as does zddm control set")
        let set = try control(["set", "--killswitch", "off"])
        #expect(set.status == 0, "\(set.error)")
        #expect(set.output.contains("stage live, rate 1.0") && set.output.contains("no clean verify pass recorded"))
        #expect(try decode(FleetStateJSON.self, try control(["show", "--json"])).behind == 3)
    }

    // MARK: bad input and secrets

    @Test(
        "Bad input: a clear one-line error naming what was wrong, a non-zero exit",
        arguments: [
            (["control", "show", "--state", "sqlite:/tmp/x.sqlite"], "Missing expected argument '--migration"),
            (
                ["control", "show", "--state", "sqlite:/tmp/x.sqlite", "--migration", ""],
                "--migration must not be empty"
            ),
            (["control", "show", "--state", "sqlite:/nonexistent/s.sqlite", "--migration", "m"], "no SQLite database"),
            (["control", "show", "--state", "mysql://x", "--migration", "m"], "--state: unsupported database URL"),
            (["control", "show", "--state", "sqlite::memory:", "--migration", "m"], "in-memory SQLite database"),
            (["control", "show", "--state", "sqlite:/tmp/x.sqlite", "--migration", "m", "--table", "a;b"], "--table"),
            (["capture", "status", "--old", "sqlite:/nonexistent/o.sqlite", "--table", "t"], "no SQLite database"),
            (["capture", "status", "--old", "sqlite:/tmp/x.sqlite", "--table", "a;b"], "invalid table name"),
            (["capture", "status", "--old", "sqlite:/tmp/x.sqlite"], "Missing expected argument '--table"),
            (
                ["capture", "install", "--old", "sqlite:/tmp/x.sqlite", "--table", "t", "--lock-timeout", "0"],
                "--lock-timeout must be a number of seconds"
            ),
            (
                ["capture", "uninstall", "--old", "sqlite:/tmp/x.sqlite", "--table", "t"],
                "on SQLite, uninstall drops the change table"
            ),
            (
                ["capture", "status", "--old", "sqlite:/tmp/x.sqlite", "--table", "t", "--key-column", "zddm_version"],
                "the key and version columns need distinct names"
            ),
        ]
    )
    func badInput(arguments: [String], expected: String) throws {
        expectError(try zddm(arguments, environment: [:]), expected)
    }

    @Test("capture on a table that does not exist, or has no such key column: errors that say so")
    func captureMissingTable() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let old = "sqlite:\(try await makeAccounts(in: folder))"
        expectError(
            try zddm(["capture", "install", "--old", old, "--table", "nope"], environment: [:]),
            "table \"nope\" does not exist"
        )
        expectError(
            try zddm(
                ["capture", "install", "--old", old, "--table", "accounts", "--key-column", "id"],
                environment: [:]
            ),
            "has no key column \"id\""
        )
        let status = try zddm(["capture", "status", "--old", old, "--table", "nope"], environment: [:])
        #expect(status.status == 1)
        #expect(status.output.contains("not installed (missing: table \"nope\")"), "\(status.output)")
    }

    @Test("A password in the URL or in PGPASSWORD is never printed, even when the connection fails")
    func passwordNeverPrinted() throws {
        let secret = "s3cret-Pw-\(UInt32.random(in: 0...UInt32.max))"
        let runs = [
            try zddm(
                ["capture", "status", "--old", "postgres://zddm:\(secret)@127.0.0.1:1/db", "--table", "t"],
                environment: [:]
            ),
            try zddm(
                ["capture", "install", "--old", "postgres://zddm@127.0.0.1:1/db", "--table", "t"],
                environment: ["PGPASSWORD": secret]
            ),
            try zddm(
                [
                    "control", "set", "--state", "postgres://zddm:\(secret)@127.0.0.1:1/db", "--migration", "m",
                    "--rate", "1",
                ],
                environment: [:]
            ),
            try zddm(
                ["control", "show", "--state", "postgres://zddm:\(secret)@[::1/db", "--migration", "m"],
                environment: [:]
            ),
        ]
        for run in runs {
            #expect(run.status != 0)
            #expect(run.error.hasPrefix("Error: "), "\(run.error)")
            #expect(!run.output.contains(secret) && !run.error.contains(secret), "\(run.error)")
        }
    }
}
