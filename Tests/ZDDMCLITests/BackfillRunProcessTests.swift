import Foundation
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL

@Suite(
    "zddm backfill runs: worker processes sharing chunks through PostgreSQL",
    .serialized,
    .enabled(if: CLIPostgres.shouldRun, "PostgreSQL tests skipped: bash .ci/run sets POSTGRES_* variables")
)
struct BackfillRunProcessTests {
    /// A `zddm backfill` child process whose output goes to a file.
    struct Child {
        let process: Process
        let output: URL

        static func start(_ arguments: [String], in folder: URL, name: String) throws -> Child {
            let process = Process()
            process.executableURL = try zddmBinary()
            process.arguments = arguments
            let output = folder.appendingPathComponent("\(name).out")
            _ = FileManager.default.createFile(atPath: output.path, contents: nil)
            let handle = try FileHandle(forWritingTo: output)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            return Child(process: process, output: output)
        }

        var text: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }

        /// Waits for the process to exit, polling (a busy machine is slow, not wrong).
        func exitStatus(within deadline: Duration = .seconds(300)) async -> Int32? {
            let exited = await waitUntil(timeout: deadline) { !process.isRunning }
            return exited ? process.terminationStatus : nil
        }
    }

    @Test(
        "Three worker processes on one run; one is killed with kill -9 holding a chunk: the run finishes, its chunk is rescued, each chunk is completed once, verify finds 0 mismatches"
    )
    func killedWorker() async throws {
        let url = try CLIPostgres.url()
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let oldPath = folder.appendingPathComponent("old.sqlite").path
        try await makeOldTable(at: oldPath, rows: 24_000)
        let install = try zddm(["capture", "install", "--old", "sqlite:\(oldPath)", "--table", "kv"])
        #expect(install.status == 0, "\(install.error)")
        let newTable = "bf_new_\(UUID().uuidString.prefix(8).lowercased())"
        let run = "run-\(UUID().uuidString.prefix(8).lowercased())"
        let common = [
            "backfill", "--from", "sqlite:\(oldPath)", "--to", url, "--table", "kv", "--to-table", newTable,
            "--batch", "200", "--lease-seconds", "2",
        ]
        // About 8 s for the whole run at 3 000 rows/s, shared by every worker: slow enough to kill one mid-run.
        let first = try Child.start(
            common + [
                "--run", run, "--chunk-rows", "500", "--max-rows-per-second", "3000", "--worker-name", "A",
            ],
            in: folder,
            name: "A"
        )
        let coordinator = try await PostgresDatabase.connect(url: PostgresURL(url))
        defer { Task { await coordinator.shutdown() } }
        let chunks = try PostgresBackfillCoordinator<Int64>(database: coordinator)
        let planned = await waitUntil(timeout: .seconds(120)) {
            ((try? await chunks.chunks(of: run)) ?? []).count == 48
        }
        #expect(planned, "run not planned: \(first.text.suffix(500))")
        let second = try Child.start(common + ["--join", run, "--worker-name", "B"], in: folder, name: "B")
        let victim = try Child.start(common + ["--join", run, "--worker-name", "C"], in: folder, name: "C")
        // Kill C while it holds a chunk whose last batch it has not checkpointed. C is frozen (SIGSTOP) before each
        // look, so it sends nothing between the look and the kill: a statement already sent may still land, but
        // completing the chunk takes one more after its last checkpoint, which a frozen process cannot send.
        // The chunk is noted when C is killed: once its 2 s lease expires, A or B may take it over at any time.
        var heldAtDeath: Int?
        let holding = await waitUntil(timeout: .seconds(120)) {
            kill(victim.process.processIdentifier, SIGSTOP)
            let states = (try? await chunks.chunks(of: run)) ?? []
            guard
                let unfinished = states.first(where: {
                    $0.owner == "C-1" && $0.held && !$0.done && $0.rowsScanned < $0.plannedRows
                })
            else {
                kill(victim.process.processIdentifier, SIGCONT)
                return false
            }
            kill(victim.process.processIdentifier, SIGKILL)
            heldAtDeath = unfinished.chunk
            return true
        }
        #expect(holding, "C never held an unfinished chunk: \(victim.text.suffix(500))")
        victim.process.waitUntilExit()
        #expect(victim.process.terminationReason == .uncaughtSignal)
        let orphaned = try #require(heldAtDeath.map { [$0] })
        let firstStatus = await first.exitStatus()
        let secondStatus = await second.exitStatus()
        #expect(firstStatus == 0, "A: \(first.text.suffix(800))")
        #expect(secondStatus == 0, "B: \(second.text.suffix(800))")
        #expect(first.text.contains("backfill run finished"))

        let states = try await chunks.chunks(of: run)
        #expect(states.count == 48)
        #expect(states.allSatisfy { $0.done && $0.completions == 1 }, "a chunk was not completed exactly once")
        for chunk in orphaned {
            let rescued = try #require(states.first { $0.chunk == chunk })
            #expect(rescued.claims >= 2 && rescued.token >= 2, "the killed worker's chunk \(chunk) was claimed again")
            #expect(rescued.owner != "C-1", "chunk \(chunk) was completed by a live worker")
        }

        let status = try zddm(["backfill", "status", run, "--coordinator", url, "--json"])
        #expect(status.status == 0, "\(status.error)")
        let report = try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any]
        #expect(report?["finished"] as? Bool == true)
        #expect(report?["chunksDone"] as? Int == 48)
        #expect(report?["rowsScanned"] as? Int == 24_000, "each committed batch counted once")
        #expect((report?["workersSeen"] as? Int ?? 0) >= 2)

        let verify = try zddm([
            "verify", "--from", "sqlite:\(oldPath)", "--to", url, "--table", "kv", "--to-table", newTable,
        ])
        #expect(verify.status == 0, "\(verify.output)\(verify.error)")
        #expect(verify.output.contains("0 mismatches"))
    }

    @Test(
        "Bad input is refused with an error naming it: an unknown run, a run started at another rate, conflicting options; a run with back-pressure bounds finishes"
    )
    func badInput() async throws {
        let url = try CLIPostgres.url()
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let oldPath = folder.appendingPathComponent("old.sqlite").path
        try await makeOldTable(at: oldPath, rows: 3_000)
        let newTable = "bf_bad_\(UUID().uuidString.prefix(8).lowercased())"
        let run = "bad-\(UUID().uuidString.prefix(8).lowercased())"
        let common = ["backfill", "--from", "sqlite:\(oldPath)", "--to", url, "--table", "kv", "--to-table", newTable]

        let unknown = try zddm(common + ["--join", run])
        #expect(unknown.status != 0 && unknown.error.contains("no backfill run named '\(run)'"), "\(unknown.error)")
        let status = try zddm(["backfill", "status", run, "--coordinator", url])
        #expect(status.status == 1 && status.error.contains("no backfill run named"), "\(status.error)")

        let started = try zddm(
            common + [
                "--run", run, "--workers", "2", "--chunk-rows", "400", "--max-replication-lag", "5",
                "--max-commit-latency", "30",
            ]
        )
        #expect(started.status == 0, "\(started.output)\(started.error)")
        #expect(started.output.contains("chunks 8 done, 0 in flight, 0 waiting of 8"), "\(started.output)")

        let otherRate = try zddm(common + ["--join", run, "--rate", "0.5"])
        #expect(otherRate.status != 0 && otherRate.error.contains("started at rate 1.0"), "\(otherRate.error)")
        let both = try zddm(common + ["--run", run, "--join", run])
        #expect(both.status != 0 && both.error.contains("--run or --join"), "\(both.error)")
        let sqliteLag = try zddm(
            ["backfill", "--from", "sqlite:\(oldPath)", "--to", "sqlite:\(folder.path)/new.sqlite", "--table", "kv"]
                + ["--max-replication-lag", "1"]
        )
        #expect(
            sqliteLag.status != 0 && sqliteLag.error.contains("--max-replication-lag needs New"),
            "\(sqliteLag.error)"
        )
        let inMemory = try zddm(
            ["backfill", "--from", "sqlite:\(oldPath)", "--to", "sqlite::memory:", "--table", "kv", "--workers", "2"]
        )
        #expect(inMemory.status != 0 && inMemory.error.contains("--coordinator"), "\(inMemory.error)")
        // The PostgreSQL password never appears in an error.
        let secret = try #require(CLIPostgres.environment["POSTGRES_PASSWORD"])
        #expect(!secret.isEmpty && !(unknown.error + otherRate.error + status.error).contains(secret))
    }
}
