import Foundation
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMTesting

@Suite(
    "PostgreSQL backfill coordinator: SKIP LOCKED claims, leases, fencing tokens, shared runs",
    .postgres,
    .serialized
)
struct PostgresBackfillCoordinatorTests {
    @Test("Eight workers claiming at once: every chunk is claimed and completed exactly once, never by two workers")
    func concurrentClaims() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("bf"))
            try await coordinator.prepare()
            try await CoordinatorChecks.concurrentClaims(coordinator)
            let counts = try await coordinator.chunks(of: "r")
            #expect(counts.count == 60 && counts.allSatisfy { $0.completions == 1 && $0.claims == 1 })
            // The back-pressure signal: this server has no replica, so there is no lag to wait for.
            #expect(try await database.replicationLag() == nil)
        }
    }

    @Test(
        "An expired lease is rescued under a new token from the checkpoint; the old holder can no longer save or complete"
    )
    func leaseExpiry() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("bf"))
            try await coordinator.prepare()
            try await CoordinatorChecks.leaseExpiry(coordinator)
            let counts = try await coordinator.chunks(of: "r")
            #expect(counts.map(\.completions) == [1] && counts.map(\.claims) == [3])
        }
    }

    @Test(
        "A coordination table dropped mid-run: the joining worker stops at once with PostgreSQL's error naming it (42P01)",
        .timeLimit(.minutes(2))
    )
    func missingTable() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let prefix = uniqueTableName("bf")
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: prefix)
            try await coordinator.prepare()
            try await CoordinatorChecks.missingTable(coordinator, chunksTable: prefix + "_chunks") {
                try await database.execute("DROP TABLE \"\(prefix)_chunks\"")
            }
        }
    }

    @Test("The throttle is one budget for the whole run; it can be changed while the run goes on")
    func sharedThrottle() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("bf"))
            try await coordinator.prepare()
            try await CoordinatorChecks.sharedThrottle(coordinator)
        }
    }

    @Test("A verify run's fleet mark is kept; runs tables made before it existed gain its column")
    func fleetMark() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("bf"))
            try await coordinator.prepare()
            try await CoordinatorChecks.fleetMark(coordinator)
            let prefix = uniqueTableName("older")
            try await database.execute(
                """
                CREATE TABLE "\(prefix)_runs" (run text PRIMARY KEY, format integer NOT NULL, rate float8 NOT NULL, \
                uses_versions boolean NOT NULL, max_rows_per_second float8, chunks integer NOT NULL, \
                created_at timestamptz NOT NULL DEFAULT clock_timestamp(), \
                throttle_next timestamptz NOT NULL DEFAULT clock_timestamp())
                """
            )
            let older = try PostgresBackfillCoordinator<String>(database: database, prefix: prefix)
            try await older.prepare()
            try await older.prepare()
            try await CoordinatorChecks.fleetMark(older)
        }
    }

    @Test(
        "Three verify workers sharing a run over PostgreSQL find every mismatch once, repair it through the fence, then finish clean"
    )
    func sharedVerifyRun() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let old = try await capturedKeyValueStore(String.self, database: database)
            let new = try PostgresStore<String, String>(
                database: database,
                table: uniqueTableName("new"),
                versionColumn: "zddm_version",
                codec: JSONValueCodec<String>()
            )
            try await new.prepare()
            for index in 0..<1_200 { _ = try await old.writeVersioned("k\(10_000 + index)", "v\(index)") }
            for index in stride(from: 0, to: 1_200, by: 11) { _ = try await old.deleteVersioned("k\(10_000 + index)") }
            let core = try MigrationCore(name: "verify-shared", old: old, new: new, gate: TrafficGate(rate: 1))
            _ = try await Backfill(core: core, checkpoints: MemoryCheckpointStore<String>()).runPass()
            // New goes wrong in three chunks and past Old's last key.
            try await new.invalidate("k10005")
            _ = try await new.writeIfNewer("k10005", .value("stale", version: 0))
            try await new.invalidate("k10600")
            try await new.invalidate("k11101")
            _ = try await new.writeIfNewer("k11101", .tombstone(version: 0))
            _ = try await new.writeIfNewer("zz", .value("extra", version: 1))
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("vf"))
            try await coordinator.prepare()
            var options = VerifyOptions()
            options.workers = 2
            options.chunkRows = 100
            options.batchSize = 37
            options.idlePollInterval = .milliseconds(20)
            func shared(_ run: String, repair: Bool) async throws -> [VerifyReport<String>] {
                options.repair = repair
                try await ChunkedVerify(core: core, coordinator: coordinator, run: run, options: options).prepare()
                return try await withThrowingTaskGroup(of: VerifyReport<String>.self) { group in
                    for index in 0..<3 {
                        options.workerName = "process\(index)"
                        let each = options
                        group.addTask {
                            try await ChunkedVerify(
                                core: core,
                                coordinator: coordinator,
                                run: run,
                                create: false,
                                options: each
                            ).verify()
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            let found = try await shared("find", repair: false)
            let counts = found.reduce(into: [MismatchKind: Int]()) { $0.merge($1.counts, uniquingKeysWith: +) }
            #expect(counts == [.differentValue: 1, .missingInNew: 1, .tombstoneInNew: 1, .extraInNew: 1], "\(found)")
            #expect(found.reduce(0) { $0 + $1.keysInOld } == 1_200 - 110)
            let chunks = try await coordinator.chunks(of: "find")
            // 11 chunks of Old's keys, then one of New's after them ("zz").
            #expect(chunks.count == 12 && chunks.allSatisfy { $0.done && $0.completions == 1 })
            let status = try #require(try await coordinator.status("find"))
            #expect(status.rowsCopied == 4 && status.rowsScanned == 1_090)

            let repaired = try await shared("repair", repair: true)
            #expect(repaired.reduce(0) { $0 + $1.repaired } == 4)
            let clean = try await shared("clean", repair: false)
            #expect(clean.allSatisfy { $0.mismatches == 0 } && clean.contains { $0.isClean })
            #expect(try await new.readVersioned("k11101") == old.readVersioned("k11101"))
        }
    }

    @Test("A run written by a newer version is refused with an error naming the format, not misread")
    func newerFormat() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let prefix = uniqueTableName("bf")
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: prefix)
            try await coordinator.prepare()
            #expect(try await coordinator.createRun(CoordinatorChecks.plan("r", chunks: 2)))
            try await database.execute("UPDATE \"\(prefix)_runs\" SET format = 99")
            let error = await #expect(throws: ZDDMError.self) { try await coordinator.runInfo("r") }
            #expect(error?.code == .unsupported && error?.message.contains("format 99") == true)
            await #expect(throws: ZDDMError.self) { try await coordinator.status("r") }
            #expect(throws: ZDDMError.self) {
                try PostgresBackfillCoordinator<String>(database: database, prefix: "bad name; DROP")
            }
        }
    }

    @Test(
        "Three backfills sharing a run (as three processes would) copy PostgreSQL to PostgreSQL with versions, each chunk once"
    )
    func sharedRun() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let old = try await capturedKeyValueStore(String.self, database: database)
            let new = try PostgresStore<String, String>(
                database: database,
                table: uniqueTableName("new"),
                versionColumn: "zddm_version",
                codec: JSONValueCodec<String>()
            )
            try await new.prepare()
            for index in 0..<1_500 { _ = try await old.writeVersioned("k\(10_000 + index)", "v\(index)") }
            for index in stride(from: 0, to: 1_500, by: 7) { _ = try await old.deleteVersioned("k\(10_000 + index)") }
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("bf"))
            try await coordinator.prepare()
            var options = BackfillOptions()
            options.workers = 2
            options.chunkRows = 100
            options.batchSize = 37
            options.idlePollInterval = .milliseconds(20)
            let core = try MigrationCore(name: "shared", old: old, new: new, gate: TrafficGate(rate: 1))
            #expect(core.usesVersions)
            try await ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options).prepare()
            try await withThrowingTaskGroup(of: BackfillProgress.self) { group in
                for index in 0..<3 {
                    options.workerName = "process\(index)"
                    let each = options
                    group.addTask {
                        try await ChunkedBackfill(
                            core: core,
                            coordinator: coordinator,
                            run: "r",
                            create: false,
                            options: each
                        ).runPass()
                    }
                }
                var scanned = 0
                for try await progress in group {
                    #expect(progress.finished)
                    scanned += progress.rowsScanned
                }
                #expect(scanned == 1_500, "no batch was scanned by two processes")
            }
            let counts = try await coordinator.chunks(of: "r")
            #expect(counts.count == 15 && counts.allSatisfy { $0.completions == 1 })
            var cursor: String?
            var compared = 0
            while true {
                let keys = try await old.keysIncludingDeleted(after: cursor, limit: 500)
                guard let last = keys.last else { break }
                let expected = try await old.readManyVersioned(keys)
                let found = try await new.readManyVersioned(keys)
                #expect(expected == found)
                compared += keys.count
                cursor = last
            }
            #expect(compared == 1_500)
        }
    }
}
