import Foundation
import Testing
import ZDDM
import ZDDMSQL
import ZDDMSQLite

/// The PostgreSQL server from `POSTGRES_HOST`, `POSTGRES_PORT`, `POSTGRES_USER`, `POSTGRES_PASSWORD` and
/// `POSTGRES_DB`, as a URL for the `zddm` binary; the same rules as the store tests' `PostgresTestEnvironment`:
/// skipped without them unless `ZDDM_REQUIRE_POSTGRES=1` (as `.ci/run` sets), which makes them fail instead.
enum CLIPostgres {
    static let variables = ["POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"]
    static var environment: [String: String] { ProcessInfo.processInfo.environment }
    static var isConfigured: Bool { variables.allSatisfy { environment[$0]?.isEmpty == false } }
    static var shouldRun: Bool { isConfigured || environment["ZDDM_REQUIRE_POSTGRES"] == "1" }

    static func url() throws -> String {
        guard isConfigured else {
            let missing = variables.filter { environment[$0]?.isEmpty != false }
            Issue.record("ZDDM_REQUIRE_POSTGRES=1 but \(missing.joined(separator: ", ")) not set")
            throw ZDDMError(.invalidArgument, message: "PostgreSQL test variables missing")
        }
        func part(_ name: String) -> String {
            (environment[name] ?? "").addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        }
        let host = environment["POSTGRES_HOST"] ?? ""
        let port = environment["POSTGRES_PORT"] ?? "5432"
        return "postgres://\(part("POSTGRES_USER")):\(part("POSTGRES_PASSWORD"))@\(host):\(port)/"
            + "\(part("POSTGRES_DB"))?sslmode=disable"
    }
}

/// One operation from a worker's log.
private struct LoggedOperation: Decodable {
    var kind: String
    var key: Int64
    var value: String?
    var start: UInt64
    var end: UInt64
    var failed: Bool
    var error: String?
}

private struct WorkerSummary: Decodable {
    var operations: Int
    var failed: Int
    var gateStates: [String]
}

/// A `zddm worker` child process.
private struct Worker {
    let process: Process
    let output: URL
    let errors: URL
    let log: URL

    /// What the worker logged on standard error so far.
    var errorLog: String { (try? String(contentsOf: errors, encoding: .utf8)) ?? "" }

    /// How many lines the worker's control service has logged about the migration's settings so far.
    var controlLines: Int { errorLog.split(separator: "\n").filter { $0.contains("zddm.kv.") }.count }
}

@Suite("Many instances: real processes on shared stores and one control file", .serialized)
struct MultiProcessTests {
    static let keys: Int64 = 16
    static let processes = 3

    @Test("The gate agrees across processes, with the in-process gate, and with a known vector")
    func gateAgreement() async throws {
        let keys = (1...2_000).map(String.init) + ["foo", "user:42", "ключ"]
        let input = keys.joined(separator: "\n") + "\n"
        for extra in [[String](), ["--hasher", "fast", "--salt", "orders"]] {
            async let first = zddm(["gate", "--rate", "0.5", "--stdin"] + extra, input: input)
            async let second = zddm(["gate", "--rate", "0.5", "--stdin"] + extra, input: input)
            let (a, b) = try await (first, second)
            #expect(a.status == 0 && b.status == 0, "\(a.error)\(b.error)")
            #expect(a.output == b.output)
            let hasher: any GateHasher = extra.isEmpty ? SHA1RateHasher() : FastRateHasher(salt: "orders")
            let gate = try TrafficGate(rate: 0.5, hasher: hasher)
            let expected = keys.map { key in
                "\(key)\t\(String(format: "%.17g", hasher.hashRate(of: key)))\t\(gate.admits(key) ? "in" : "out")\n"
            }
            #expect(a.output == expected.joined())
            // The workers' Int64 keys hash as their decimal text does.
            for key in Int64(1)...Self.keys {
                #expect(hasher.hashRate(of: key) == hasher.hashRate(of: String(key)))
            }
        }
        // The original ZDDM's unsalted SHA-1 rates.
        let known = try zddm(["gate", "--rate", "0.5", "1", "foo", "user:42"])
        #expect(
            known.output
                == "1\t0.22394041233322126\tin\nfoo\t0.46036590343815414\tin\nuser:42\t0.00096063222758486686\tin\n"
        )
    }

    @Test("SQLite Old and New: flips in the shared file while 3 processes run; invariants 1–3 hold")
    func sqliteFleet() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let newPath = folder.appendingPathComponent("new.sqlite").path
        try await runFleet(folder: folder, newURL: "sqlite:\(newPath)", newTable: nil)
        // Invariant 3, read directly: every key in New is Old's value, or absent, or a tombstone where Old has none.
        let old = try SQLiteDatabase.open(url: "sqlite:\(folder.appendingPathComponent("old.sqlite").path)")
        let new = try SQLiteDatabase.open(url: "sqlite:\(newPath)")
        defer {
            try? old.close()
            try? new.close()
        }
        let oldTable = try SQLiteStore<Int64, [UInt8]>(database: old, table: "kv", codec: RawBytesValueCodec())
        let newTable = try SQLiteStore<Int64, [UInt8]>(database: new, table: "kv", codec: RawBytesValueCodec())
        for key in Int64(1)...Self.keys {
            let inOld = try await oldTable.read(key)?.value
            switch try await newTable.read(key) {
            case nil: break
            case .tombstone: #expect(inOld == nil, "key \(key): a tombstone in New where Old has a value")
            case .value(let value): #expect(value == inOld, "key \(key): New differs from Old after repair")
            }
        }
    }

    @Test(
        "SQLite Old, PostgreSQL New: flips in the shared file while 3 processes run; invariants 1–3 hold",
        .enabled(
            if: CLIPostgres.shouldRun,
            Comment(
                rawValue: "PostgreSQL tests skipped: set POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, "
                    + "POSTGRES_PASSWORD and POSTGRES_DB (bash .ci/run does)"
            )
        )
    )
    func postgresFleet() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        try await runFleet(folder: folder, newURL: try CLIPostgres.url(), newTable: "zddm_multiprocess_kv")
    }

    /// Seeds Old, starts the workers, flips the shared control file while they run, then checks invariants 1–3.
    private func runFleet(folder: URL, newURL: String, newTable: String?) async throws {
        let oldPath = folder.appendingPathComponent("old.sqlite").path
        let oldURL = "sqlite:\(oldPath)"
        let configURL = folder.appendingPathComponent("control.json")
        // Keys 1…8 start with a value in Old ("row-K"); 9…16 start absent.
        try await makeOldTable(at: oldPath, rows: Int(Self.keys / 2))
        let tableArguments = ["--table", "kv"] + (newTable.map { ["--new-table", $0] } ?? [])
        let prepare = try zddm(["worker", "--prepare", "--old", oldURL, "--new", newURL] + tableArguments)
        #expect(prepare.status == 0, "\(prepare.error)")
        try writeControl(#"{"zddm": {"kv": {"rate": 0.5, "killswitch": false, "stage": "live"}}}"#, to: configURL)

        // The workers drive traffic until the stop file appears (at most 2 minutes).
        let stopFile = folder.appendingPathComponent("stop")
        let workers = try (0..<Self.processes).map { index in
            try startWorker(
                index: index,
                folder: folder,
                arguments: [
                    "worker", "--old", oldURL, "--new", newURL, "--config", configURL.path, "--migration", "kv",
                    "--seconds", "120", "--stop-file", stopFile.path, "--seed", "\(index + 1)", "--keys",
                    "\(Self.keys)", "--poll-milliseconds", "20",
                ] + tableArguments
            )
        }
        defer { for worker in workers where worker.process.isRunning { worker.process.terminate() } }

        // Flip rate, stage and killswitch while they run (one invalid value among them, which they must ignore).
        let flips = [
            #"{"zddm": {"kv": {"rate": 1, "killswitch": false, "stage": "live"}}}"#,
            #"{"zddm": {"kv": {"rate": 1, "killswitch": true, "stage": "live"}}}"#,
            #"{"zddm": {"kv": {"rate": 0.25, "killswitch": false, "stage": "shadow"}}}"#,
            #"{"zddm": {"kv": {"rate": "abc", "killswitch": false, "stage": "dualwrite"}}}"#,
            #"{"zddm": {"kv": {"rate": 0, "killswitch": false, "stage": "live"}}}"#,
            #"{"zddm": {"kv": {"rate": 0.75, "killswitch": false, "stage": "off"}}}"#,
            #"{"zddm": {"kv": {"rate": 0.75, "killswitch": false, "stage": "live"}}}"#,
            #"{"zddm": {"kv": {"rate": 1, "killswitch": true, "stage": "shadow"}}}"#,
            #"{"zddm": {"kv": {"rate": 0.5, "killswitch": false, "stage": "live"}}}"#,
        ]
        let started = await waitUntil { workers.allSatisfy { $0.errorLog.contains("traffic started") } }
        try #require(started, "the workers did not all start their traffic")
        for flip in flips {
            let before = workers.map(\.controlLines)
            try writeControl(flip, to: configURL)
            // Each worker's control service logs what it made of the change (applied, rejected or refused), and
            // has recorded the gate's new state before it does.
            let seen = await waitUntil { zip(workers, before).allSatisfy { $0.controlLines > $1 } }
            try #require(seen, "not every worker took up \(flip)")
            // Traffic runs in this state for a while (not a wait for anything).
            try await Task.sleep(for: .milliseconds(200))
        }
        try Data().write(to: stopFile)
        let finished = await waitUntil { !workers.contains(where: \.process.isRunning) }
        #expect(finished, "the workers did not stop")
        var operations: [LoggedOperation] = []
        let decoder = JSONDecoder()
        for worker in workers {
            #expect(!worker.process.isRunning, "a worker did not finish in time")
            let errors = (try? String(contentsOf: worker.errors, encoding: .utf8)) ?? ""
            #expect(worker.process.terminationStatus == 0, "\(errors)")
            let output = try String(contentsOf: worker.output, encoding: .utf8)
            let summary = try decoder.decode(WorkerSummary.self, from: Data(output.utf8))
            #expect(summary.operations > 100, "\(output)")
            // Every process followed the file: it saw the killswitch, shadow and off, and rejected the bad rate.
            #expect(summary.gateStates.contains { $0.contains("killswitch") }, "\(summary.gateStates)")
            #expect(summary.gateStates.contains { $0.hasSuffix("/shadow") }, "\(summary.gateStates)")
            #expect(summary.gateStates.contains { $0.hasSuffix("/off") }, "\(summary.gateStates)")
            #expect(errors.contains("zddm.kv.rate: invalid value 'abc'"), "\(errors)")
            let lines = try String(contentsOf: worker.log, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == summary.operations)
            operations += try lines.map { try decoder.decode(LoggedOperation.self, from: Data($0.utf8)) }
        }
        #expect(operations.count > 300)

        // Invariant 2: no call failed.
        let failed = operations.filter(\.failed)
        #expect(failed.isEmpty, "\(failed.count) calls failed, e.g. \(failed.first?.error ?? "")")

        // Invariant 1: Old's final value per key is the effect of an acknowledged mutation that no other mutation
        // strictly followed (by the shared wall clock), or the initial value when the key was never mutated.
        let old = try SQLiteDatabase.open(url: oldURL)
        let oldTable = try SQLiteStore<Int64, [UInt8]>(database: old, table: "kv", codec: RawBytesValueCodec())
        var mutatedKeys = 0
        for key in Int64(1)...Self.keys {
            let final = try await oldTable.read(key)?.value.map { String(decoding: $0, as: UTF8.self) }
            let mutations = operations.filter { $0.key == key && $0.kind != "read" && !$0.failed }
            if mutations.isEmpty {
                #expect(final == (key <= Self.keys / 2 ? "row-\(key)" : nil), "key \(key)")
                continue
            }
            mutatedKeys += 1
            let lastStart = mutations.map(\.start).max() ?? 0
            let allowed = mutations.filter { $0.end >= lastStart }.map { $0.kind == "delete" ? nil : $0.value }
            #expect(allowed.contains(final), "key \(key): Old holds \(final ?? "nothing"), not a last mutation")
        }
        try old.close()
        #expect(mutatedKeys == Int(Self.keys))

        // Invariant 3: after a verify-and-repair pass, New agrees with Old.
        let verifyArguments =
            ["verify", "--from", oldURL, "--to", newURL, "--table", "kv"] + (newTable.map { ["--to-table", $0] } ?? [])
        // Invariant 4 does not hold across processes (a proxy's safety memory sees only its own process's
        // writes), so New may differ before the repair; say how much, without expecting anything of it.
        let before = try zddm(verifyArguments)
        let beforeLine = before.output.split(separator: "\n").first.map(String.init) ?? before.error
        print(
            "many instances (seeds 1…\(Self.processes), \(operations.count) operations), before repair: \(beforeLine)"
        )
        let repair = try zddm(verifyArguments + ["--repair"])
        #expect(repair.status == 0, "\(repair.output)\(repair.error)")
        let after = try zddm(verifyArguments)
        #expect(after.status == 0, "\(after.output)\(after.error)")
        #expect(after.output.contains("0 mismatches"), "\(after.output)")
    }

    private func startWorker(index: Int, folder: URL, arguments: [String]) throws -> Worker {
        let output = folder.appendingPathComponent("worker-\(index).out")
        let errors = folder.appendingPathComponent("worker-\(index).err")
        let log = folder.appendingPathComponent("worker-\(index).jsonl")
        for url in [output, errors] {
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw ZDDMError(.invalidArgument, message: "cannot create \(url.path)")
            }
        }
        let process = Process()
        process.executableURL = try zddmBinary()
        process.arguments = arguments + ["--log", log.path]
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = try FileHandle(forWritingTo: errors)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return Worker(process: process, output: output, errors: errors, log: log)
    }

    /// Replaces the control file atomically, as an operator's tooling should.
    private func writeControl(_ json: String, to url: URL) throws {
        try Data(json.utf8).write(to: url, options: .atomic)
    }
}
