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
    func plan(_ run: String, chunks: Int, limit: Double? = nil) -> BackfillRunPlan<String> {
        BackfillRunPlan(
            run: run,
            rate: 1,
            usesVersions: true,
            maxRowsPerSecond: limit,
            chunks: (0..<chunks).map { index in
                BackfillChunkRange(
                    after: index == 0 ? nil : "k\(1_000 + index - 1)",
                    through: "k\(1_000 + index)",
                    plannedRows: 10
                )
            }
        )
    }

    @Test("Eight workers claiming at once: every chunk is claimed and completed exactly once, never by two workers")
    func concurrentClaims() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("bf"))
            try await coordinator.prepare()
            #expect(try await coordinator.createRun(plan("r", chunks: 60)))
            #expect(!(try await coordinator.createRun(plan("r", chunks: 3))), "a second creation changes nothing")
            let info = try #require(try await coordinator.runInfo("r"))
            #expect(info.chunks == 60 && info.rate == 1 && info.usesVersions && info.maxRowsPerSecond == nil)
            let completed = try await withThrowingTaskGroup(of: [Int].self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        var done: [Int] = []
                        while let claim = try await coordinator.claim("r", worker: "w\(worker)", lease: .seconds(60)) {
                            #expect(claim.cursor == nil && claim.claims == 1 && claim.token == 1)
                            #expect(
                                try await coordinator.checkpoint(
                                    claim,
                                    cursor: claim.range.through,
                                    scanned: 10,
                                    copied: 9,
                                    lease: .seconds(60)
                                )
                            )
                            #expect(try await coordinator.complete(claim, scanned: 0, copied: 0))
                            done.append(claim.chunk)
                        }
                        return done
                    }
                }
                return try await group.reduce(into: [Int]()) { $0 += $1 }
            }
            #expect(completed.sorted() == Array(0..<60))
            let counts = try await coordinator.chunks(of: "r")
            #expect(counts.count == 60 && counts.allSatisfy { $0.completions == 1 && $0.claims == 1 })
            let status = try #require(try await coordinator.status("r"))
            #expect(
                status.finished && status.rowsScanned == 600 && status.rowsCopied == 540 && status.plannedRows == 600
            )
            #expect(status.inFlight == 0 && status.waiting == 0 && (1...8).contains(status.workersSeen))
            #expect(try await coordinator.status("missing") == nil)
            // The back-pressure signal: this server has no replica, so there is no lag to wait for.
            #expect(try await database.replicationLag() == nil)
            #expect(try await coordinator.runInfo("missing") == nil)
        }
    }

    @Test(
        "An expired lease is rescued under a new token from the checkpoint; the old holder can no longer save or complete"
    )
    func leaseExpiry() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("bf"))
            try await coordinator.prepare()
            #expect(try await coordinator.createRun(plan("r", chunks: 1)))
            let first = try #require(try await coordinator.claim("r", worker: "A", lease: .milliseconds(200)))
            #expect(first.range.after == nil && first.range.through == "k1000")
            #expect(
                try await coordinator.checkpoint(first, cursor: "k0", scanned: 4, copied: 4, lease: .milliseconds(200))
            )
            var rescued: BackfillChunkClaim<String>?
            let deadline = ContinuousClock.now + .seconds(60)
            while rescued == nil, ContinuousClock.now < deadline {
                rescued = try await coordinator.claim("r", worker: "B", lease: .seconds(60))
                if rescued == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            let claim = try #require(rescued)
            #expect(claim.token > first.token && claim.claims == 2 && claim.cursor == "k0")
            #expect(!(try await coordinator.checkpoint(first, cursor: "k9", scanned: 1, copied: 1, lease: .seconds(1))))
            #expect(!(try await coordinator.renew(first, lease: .seconds(1))))
            #expect(!(try await coordinator.complete(first, scanned: 1, copied: 1)))
            #expect(try await coordinator.renew(claim, lease: .seconds(60)))
            try await coordinator.release(claim)
            let again = try #require(try await coordinator.claim("r", worker: "C", lease: .seconds(60)))
            #expect(again.token > claim.token && again.cursor == "k0", "a released chunk keeps its checkpoint")
            #expect(try await coordinator.complete(again, scanned: 6, copied: 6))
            let counts = try await coordinator.chunks(of: "r")
            #expect(counts.map(\.completions) == [1] && counts.map(\.claims) == [3])
            let status = try #require(try await coordinator.status("r"))
            #expect(status.rowsScanned == 10 && status.finished)
        }
    }

    @Test("The throttle is one budget for the whole run; it can be changed while the run goes on")
    func sharedThrottle() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: uniqueTableName("bf"))
            try await coordinator.prepare()
            #expect(try await coordinator.createRun(plan("r", chunks: 1, limit: 10)))
            let first = try await coordinator.throttle("r", rows: 100)
            let second = try await coordinator.throttle("r", rows: 100)
            #expect(first < .seconds(1))
            // 100 rows at 10 rows/s: the second caller waits about 10 s after the first (less the time between).
            #expect(second > .seconds(5) && second <= .seconds(20))
            #expect(try await coordinator.setMaxRowsPerSecond("r", nil))
            #expect(try await coordinator.throttle("r", rows: 1_000_000) == .zero)
            #expect(try await coordinator.runInfo("r")?.maxRowsPerSecond == nil)
            #expect(!(try await coordinator.setMaxRowsPerSecond("missing", 5)))
            await #expect(throws: ZDDMError.self) { try await coordinator.setMaxRowsPerSecond("r", 0) }
        }
    }

    @Test("A run written by a newer version is refused with an error naming the format, not misread")
    func newerFormat() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let prefix = uniqueTableName("bf")
            let coordinator = try PostgresBackfillCoordinator<String>(database: database, prefix: prefix)
            try await coordinator.prepare()
            #expect(try await coordinator.createRun(plan("r", chunks: 2)))
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
