import Foundation
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL

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

    @Test("The throttle is one budget for the whole run; it can be changed while the run goes on")
    func sharedThrottle() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("bf"))
            try await coordinator.prepare()
            try await CoordinatorChecks.sharedThrottle(coordinator)
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
