import Foundation
import Testing
import ZDDM
import ZDDMSQL
import ZDDMSQLite

/// The `zddm` binary next to the test bundle (built by `swift test` with the rest of the package).
func zddmBinary() throws -> URL {
    let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [here, here.deletingLastPathComponent()] {
        let url = candidate.appendingPathComponent("zddm")
        if FileManager.default.isExecutableFile(atPath: url.path) { return url }
    }
    throw ZDDMError(.invalidArgument, message: "zddm binary not found near \(here.path); run swift build first")
}

struct Run {
    var status: Int32
    var output: String
    var error: String
}

/// Runs `zddm` with arguments and waits for it.
func zddm(_ arguments: [String], input: String? = nil) throws -> Run {
    let process = Process()
    process.executableURL = try zddmBinary()
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let stdin = Pipe()
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Run(
        status: process.terminationStatus,
        output: String(decoding: outData, as: UTF8.self),
        error: String(decoding: errData, as: UTF8.self)
    )
}

/// Polls `condition` every 20 ms until it holds or `timeout` has passed, and says whether it held. The default is
/// generous: a loaded machine may be slow, and what this catches is something that never happens.
func waitUntil(timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// The checkpoint `zddm backfill` keeps in New's SQLite database, or `nil` while there is none.
func savedCheckpoint(inSQLite path: String, name: String = "zddm-backfill") async -> BackfillCheckpoint<Int64>? {
    guard FileManager.default.fileExists(atPath: path),
        let database = try? SQLiteDatabase.open(url: "sqlite:\(path)"),
        let table = try? SQLiteStore<String, BackfillCheckpoint<Int64>>(
            database: database,
            table: "zddm_checkpoints",
            codec: JSONValueCodec()
        )
    else { return nil }
    defer { try? database.close() }
    return try? await table.read(name)?.value
}

func temporaryFolder() throws -> URL {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("zddm-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    return folder
}

/// Old with 100 rows and New with the first 90, key 5 changed in New: 11 mismatches (10 missing, 1 different).
/// - Returns: The two SQLite files' paths.
func makeMismatchedTables(in folder: URL) async throws -> (old: String, new: String) {
    let oldPath = folder.appendingPathComponent("old.sqlite").path
    let newPath = folder.appendingPathComponent("new.sqlite").path
    try await makeOldTable(at: oldPath, rows: 100)
    try await makeOldTable(at: newPath, rows: 90)
    let database = try SQLiteDatabase.open(url: "sqlite:\(newPath)")
    let store = try SQLiteStore<Int64, [UInt8]>(database: database, table: "kv", codec: RawBytesValueCodec())
    try await store.write(5, Array("stale".utf8))
    try database.close()
    return (oldPath, newPath)
}

/// An SQLite key-value table with `rows` integer keys.
func makeOldTable(at path: String, rows: Int) async throws {
    let database = try SQLiteDatabase.open(url: "sqlite:\(path)")
    let store = try SQLiteStore<Int64, [UInt8]>(database: database, table: "kv", codec: RawBytesValueCodec())
    try await store.prepare()
    var start: Int64 = 1
    while start <= Int64(rows) {
        let end = min(Int64(rows), start + 4_999)
        _ = try await store.insertManyIfAbsent((start...end).map { (key: $0, value: Array("row-\($0)".utf8)) })
        start = end + 1
    }
    try database.close()
}

@Suite("zddm command line", .serialized)
struct CLITests {
    @Test("gate prints KEY, the hash rate with 17 significant digits, and in/out")
    func gate() throws {
        let run = try zddm(["gate", "--rate", "0.5", "1", "foo", "user:42"])
        #expect(run.status == 0)
        #expect(
            run.output
                == "1\t0.22394041233322126\tin\nfoo\t0.46036590343815414\tin\nuser:42\t0.00096063222758486686\tin\n"
        )
        let stdin = try zddm(["gate", "--rate", "0.3", "--stdin"], input: "1\nfoo\n")
        #expect(stdin.output == "1\t0.22394041233322126\tin\nfoo\t0.46036590343815414\tout\n")
    }

    @Test(
        "Bad input: a clear one-line error, a non-zero exit, no stack trace",
        arguments: [
            (["gate", "--rate", "abc", "k"], "--rate must be a number in [0, 1], got 'abc'"),
            (["gate", "--rate", "1.5", "k"], "--rate must be a number in [0, 1], got 1.5"),
            (["backfill", "--from", "mysql://x", "--to", "sqlite::memory:"], "unsupported store URL"),
            (
                ["backfill", "--from", "sqlite:/nonexistent/old.sqlite", "--to", "sqlite::memory:"],
                "no SQLite database"
            ),
            (
                ["verify", "--from", "sqlite::memory:", "--to", "sqlite::memory:", "--table", "nope"],
                "\"nope\" does not exist"
            ),
            (["backfill", "--from", "sqlite::memory:", "--to", "sqlite::memory:", "--table", "a;b"], "a;b"),
        ]
    )
    func badInput(arguments: [String], expected: String) throws {
        let run = try zddm(arguments)
        #expect(run.status != 0)
        let firstLine = run.error.split(separator: "\n").first.map(String.init) ?? ""
        #expect(firstLine.hasPrefix("Error: "), "\(run.error)")
        #expect(firstLine.contains(expected), "\(run.error)")
        #expect(!run.error.contains("Stack") && !run.error.contains("Fatal error") && !run.error.contains("0x0"))
    }

    @Test("kill -9 during a backfill, then the same command: it resumes from the checkpoint and verify finds 0")
    func killAndResume() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let oldPath = folder.appendingPathComponent("old.sqlite").path
        let newPath = folder.appendingPathComponent("new.sqlite").path
        let rows = 60_000
        try await makeOldTable(at: oldPath, rows: rows)
        let arguments = [
            "backfill", "--from", "sqlite:\(oldPath)", "--to", "sqlite:\(newPath)", "--table", "kv", "--batch", "500",
        ]
        let process = Process()
        process.executableURL = try zddmBinary()
        process.arguments = arguments + ["--max-rows-per-second", "10000"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The checkpoint is kept in New's database.
        var scannedAtKill = 0
        let reached = await waitUntil {
            guard let saved = await savedCheckpoint(inSQLite: newPath), saved.rowsScanned >= 10_000 else {
                return false
            }
            scannedAtKill = saved.rowsScanned
            return true
        }
        #expect(reached, "the backfill saved no checkpoint past 10000 rows")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(scannedAtKill >= 10_000 && scannedAtKill < rows)
        let saved = try #require(await savedCheckpoint(inSQLite: newPath))
        #expect(!saved.finished)

        let resumed = try zddm(arguments)
        #expect(resumed.status == 0, "\(resumed.error)")
        #expect(resumed.output.contains("backfill finished: \(rows) rows scanned"))
        // Resumed, not restarted: only the batches in flight at the kill are found already present.
        let present = resumed.output.split(separator: ",").first { $0.contains("present") }
        let presentCount = present.flatMap { Int($0.split(separator: " ").first ?? "") } ?? Int.max
        #expect(presentCount <= 2_000, "\(resumed.output)")

        let verify = try zddm(["verify", "--from", "sqlite:\(oldPath)", "--to", "sqlite:\(newPath)", "--table", "kv"])
        #expect(verify.status == 0, "\(verify.output)\(verify.error)")
        #expect(verify.output.contains("0 mismatches"))
    }

    @Test("verify exits non-zero and lists mismatches; --repair fixes them")
    func verifyMismatches() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (oldPath, newPath) = try await makeMismatchedTables(in: folder)
        let arguments = ["verify", "--from", "sqlite:\(oldPath)", "--to", "sqlite:\(newPath)", "--table", "kv"]
        let first = try zddm(arguments)
        #expect(first.status == 1)
        #expect(first.output.contains("11 mismatches"))
        // Exit 2 when the comparison cannot be made (as for diff); 64 for arguments in error.
        let missing = try zddm([
            "verify", "--from", "sqlite:\(oldPath)", "--to", "sqlite:\(newPath)", "--table", "nope",
        ])
        expectError(missing, "nope")
        #expect(missing.status == 2, "\(missing.error)")
        #expect(try zddm(arguments + ["--batch", "0"]).status == 64)
        #expect(first.output.contains("different_value\t5"))
        #expect(first.output.contains("missing_in_new\t91"))
        let repair = try zddm(arguments + ["--repair"])
        #expect(repair.status == 0)
        let after = try zddm(arguments)
        #expect(after.status == 0)
        #expect(after.output.contains("0 mismatches"))
    }

    @Test(
        "verify --workers shares a run's chunks: the run's line counts every mismatch once, status reports it, --repair fixes it, and bad runs are refused"
    )
    func chunkedVerify() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (oldPath, newPath) = try await makeMismatchedTables(in: folder)
        let arguments = ["verify", "--from", "sqlite:\(oldPath)", "--to", "sqlite:\(newPath)", "--table", "kv"]
        let chunks = ["--chunk-rows", "7", "--batch", "3"]
        let first = try zddm(arguments + ["--workers", "3"] + chunks)
        #expect(first.status == 1, "\(first.output)\(first.error)")
        let planned = try #require(
            first.output.split(separator: "\n").first { $0.hasSuffix("15 chunks; 3 workers in this process") }
        )
        let runName = try #require(planned.split(separator: ":").first?.dropFirst("run ".count))
        #expect(runName.hasPrefix("zddm-verify-"), "a run of its own: \(planned)")
        #expect(first.output.contains("100/100 keys compared (100.0%), 11 mismatches"), "\(first.output)")
        #expect(first.output.contains("chunks 15 done") && first.output.contains("; finished"))
        let coordinator = ["--coordinator", "sqlite:\(newPath)"]
        let status = try zddm(["verify", "status", String(runName)] + coordinator + ["--json"])
        #expect(status.status == 1, "finished with mismatches: \(status.output)\(status.error)")
        let report = try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any]
        #expect(report?["mismatches"] as? Int == 11 && report?["keysCompared"] as? Int == 100)
        #expect(report?["finished"] as? Bool == true && report?["chunksDone"] as? Int == 15)

        let repair = try zddm(arguments + ["--run", "fix", "--workers", "2", "--repair"] + chunks)
        #expect(repair.status == 0, "\(repair.output)\(repair.error)")
        #expect(repair.output.contains("11 repaired"), "\(repair.output)")
        let after = try zddm(arguments + ["--run", "check", "--workers", "2"] + chunks)
        #expect(after.status == 0 && after.output.contains("100/100 keys compared (100.0%), 0 mismatches"))
        #expect(try zddm(["verify", "status", "check"] + coordinator).status == 0)

        expectError(try zddm(arguments + ["--join", "nope"]), "there is no verify run named 'nope' to join")
        // A run is verified once; a run of another table, or a repairing run joined without --repair, is refused.
        expectError(try zddm(arguments + ["--run", "check"]), "verify run 'check' is already finished (100 keys")
        expectError(
            try zddm(arguments + ["--run", "check", "--deep"]),
            "verify run 'check' covers table kv → kv, but this worker table kv → kv, deep; use another run name"
        )
        // Exit 2 is trouble (as for diff): not a mismatch, which is 1.
        let unknown = try zddm(["verify", "status", "nope"] + coordinator)
        expectError(unknown, "there is no verify run named 'nope'")
        #expect(unknown.status == 2)
        let unreadable = try zddm(["verify", "status", "check", "--coordinator", "sqlite:\(folder.path)/none.sqlite"])
        #expect(unreadable.status == 2, "\(unreadable.error)")
        let joinUnknown = try zddm(arguments + ["--join", "nope"])
        #expect(joinUnknown.status == 2, "\(joinUnknown.error)")
        expectError(try zddm(arguments + coordinator), "--coordinator needs --run, --join or --workers")
        expectError(try zddm(arguments + ["--run", "a", "--join", "a"]), "give --run or --join, not both")
        expectError(try zddm(arguments + ["--workers", "0"]), "--workers must be in 1…256")
    }
}
