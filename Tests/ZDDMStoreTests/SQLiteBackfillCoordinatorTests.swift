import Foundation
import Testing
import ZDDM
import ZDDMSQL
import ZDDMSQLite
import ZDDMTesting

@Suite("SQLite backfill coordinator: claims, leases, fencing tokens, shared runs on one machine")
struct SQLiteBackfillCoordinatorTests {
    /// A coordinator in a fresh database file (a file, so that its connections share it as processes would).
    func withCoordinator(_ body: (SQLiteBackfillCoordinator<String>, SQLiteDatabase) async throws -> Void) async throws
    {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let database = try SQLiteDatabase.open(url: "sqlite:\(directory.file("coordination"))")
        let coordinator = try SQLiteBackfillCoordinator<String>(database: database)
        try await coordinator.prepare()
        try await coordinator.prepare()  // twice: nothing changes
        do {
            try await body(coordinator, database)
            try database.close()
        } catch {
            try? database.close()
            throw error
        }
    }

    @Test("Eight workers claiming at once: every chunk is claimed and completed exactly once, never by two workers")
    func concurrentClaims() async throws {
        try await withCoordinator { coordinator, _ in try await CoordinatorChecks.concurrentClaims(coordinator) }
    }

    @Test(
        "An expired lease is rescued under a new token from the checkpoint; the old holder can no longer save or complete"
    )
    func leaseExpiry() async throws {
        try await withCoordinator { coordinator, _ in try await CoordinatorChecks.leaseExpiry(coordinator) }
    }

    @Test(
        "A coordination table dropped mid-run: the joining worker stops at once with SQLite's error naming it",
        .timeLimit(.minutes(2))
    )
    func missingTable() async throws {
        try await withCoordinator { coordinator, database in
            try await CoordinatorChecks.missingTable(coordinator, chunksTable: "zddm_backfill_chunks") {
                try await database.execute("DROP TABLE \"zddm_backfill_chunks\"")
            }
        }
    }

    @Test("The throttle is one budget for the whole run; it can be changed while the run goes on")
    func sharedThrottle() async throws {
        try await withCoordinator { coordinator, _ in try await CoordinatorChecks.sharedThrottle(coordinator) }
    }

    @Test("A verify run's fleet mark is kept; runs tables made before it existed gain its column")
    func fleetMark() async throws {
        try await withCoordinator { coordinator, database in
            try await CoordinatorChecks.fleetMark(coordinator)
            try await database.execute(
                """
                CREATE TABLE "older_runs" (run TEXT NOT NULL PRIMARY KEY, format INTEGER NOT NULL, rate REAL NOT NULL, \
                uses_versions INTEGER NOT NULL, max_rows_per_second REAL, chunks INTEGER NOT NULL, \
                created_at REAL NOT NULL, throttle_next REAL NOT NULL)
                """
            )
            let older = try SQLiteBackfillCoordinator<String>(database: database, prefix: "older")
            try await older.prepare()
            try await older.prepare()
            try await CoordinatorChecks.fleetMark(older)
        }
    }

    @Test("A run written by a newer version is refused with an error naming the format, not misread")
    func newerFormat() async throws {
        try await withCoordinator { coordinator, database in
            #expect(try await coordinator.createRun(CoordinatorChecks.plan("r", chunks: 2)))
            try await database.execute("UPDATE zddm_backfill_runs SET format = 99")
            let error = await #expect(throws: ZDDMError.self) { try await coordinator.runInfo("r") }
            #expect(error?.code == .unsupported && error?.message.contains("format 99") == true)
            await #expect(throws: ZDDMError.self) { try await coordinator.status("r") }
            #expect(throws: ZDDMError.self) {
                try SQLiteBackfillCoordinator<String>(database: database, prefix: "bad name; DROP")
            }
            // A worker is refused at once, not retried as if the coordinator were unreachable.
            let core = try MigrationCore(
                name: "m",
                old: InMemoryStore<String, String>(),
                new: InMemoryStore<String, String>(),
                gate: TrafficGate(rate: 1)
            )
            let worker = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", create: false)
            let refused = await #expect(throws: ZDDMError.self) { try await worker.runPass() }
            #expect(refused?.code == .unsupported)
        }
    }

    @Test("Two backfills sharing a run copy SQLite to SQLite with versions, each chunk once, everything copied")
    func sharedRun() async throws {
        try await withCoordinator { coordinator, database in
            let old = try SQLiteStore<String, String>(
                database: database,
                table: "old",
                changeCapture: true,
                codec: JSONValueCodec()
            )
            try await old.prepare()
            let new = try SQLiteStore<String, String>(
                database: database,
                table: "new",
                versionColumn: "zddm_version",
                codec: JSONValueCodec()
            )
            try await new.prepare()
            for index in 0..<600 { _ = try await old.writeVersioned("k\(10_000 + index)", "v\(index)") }
            for index in stride(from: 0, to: 600, by: 9) { _ = try await old.deleteVersioned("k\(10_000 + index)") }
            let core = try MigrationCore(name: "shared", old: old, new: new, gate: TrafficGate(rate: 1))
            var options = BackfillOptions()
            options.workers = 2
            options.chunkRows = 50
            options.batchSize = 13
            options.idlePollInterval = .milliseconds(10)
            try await ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options).prepare()
            async let first = ChunkedBackfill(
                core: core,
                coordinator: coordinator,
                run: "r",
                create: false,
                options: options
            )
            .runPass()
            async let second = ChunkedBackfill(
                core: core,
                coordinator: coordinator,
                run: "r",
                create: false,
                options: options
            )
            .runPass()
            let (a, b) = try await (first, second)
            #expect(a.finished && b.finished && a.rowsScanned + b.rowsScanned == 600)
            let status = try #require(try await coordinator.status("r"))
            #expect(status.finished && status.chunks == 12 && status.rowsScanned == 600)
            let keys = try await old.keysIncludingDeleted(after: nil, limit: 1_000)
            #expect(keys.count == 600)
            #expect(try await old.readManyVersioned(keys) == new.readManyVersioned(keys))
            // Verify by versions agrees, reading no value.
            let report = try await Verify(core: core).verify()
            #expect(report.mismatches == 0 && report.comparedByValue == 0 && report.comparedByVersion == 600)
        }
    }
}
