import Foundation
import Testing
import ZDDM
import ZDDMTesting

/// The checks every durable backfill coordinator passes (PostgreSQL's and SQLite's), on a run named "r".
enum CoordinatorChecks {
    static func plan(_ run: String, chunks: Int, limit: Double? = nil) -> BackfillRunPlan<String> {
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

    /// A run whose chunks table is dropped after planning: a worker joining it stops at its first claim with the
    /// database's error, which names the table and says retrying cannot cure it (it is not retried forever).
    static func missingTable<C: BackfillCoordinator>(
        _ coordinator: C,
        chunksTable: String,
        drop: () async throws -> Void
    ) async throws where C.Key == String {
        let old = InMemoryStore<String, String>()
        for index in 0..<50 { try await old.write("k\(1_000 + index)", "v\(index)") }
        let core = try MigrationCore(name: "missing", old: old, new: InMemoryStore(), gate: TrafficGate(rate: 1))
        var options = BackfillOptions()
        options.chunkRows = 10
        options.retryDelay = .milliseconds(1)
        try await ChunkedBackfill(core: core, coordinator: coordinator, run: "gone", options: options).prepare()
        try await drop()
        let joining = try ChunkedBackfill(
            core: core,
            coordinator: coordinator,
            run: "gone",
            create: false,
            options: options
        )
        let error = await #expect(throws: (any Error).self) { try await joining.runPass() }
        #expect(error.map(ZDDMError.isRetryable) == false, "\(String(describing: error))")
        #expect(String(describing: error).contains(chunksTable), "\(String(describing: error))")
    }

    /// A run's fleet mark is kept as given: none, and a value above `Int64.max`.
    static func fleetMark<C: BackfillCoordinator>(_ coordinator: C) async throws where C.Key == String {
        #expect(try await coordinator.createRun(plan("unmarked", chunks: 1)))
        #expect(try await coordinator.runInfo("unmarked")?.fleetMark == nil)
        var marked = plan("marked", chunks: 1)
        marked.fleetMark = UInt64(Int64.max) + 5
        #expect(try await coordinator.createRun(marked))
        #expect(try await coordinator.runInfo("marked")?.fleetMark == UInt64(Int64.max) + 5)
    }

    /// Eight workers claim 60 chunks at once: each chunk is claimed and completed by exactly one.
    static func concurrentClaims<C: BackfillCoordinator>(_ coordinator: C) async throws where C.Key == String {
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
                        let saved = try await coordinator.checkpoint(
                            claim,
                            cursor: claim.range.through,
                            scanned: 10,
                            copied: 9,
                            lease: .seconds(60)
                        )
                        #expect(saved)
                        #expect(try await coordinator.complete(claim, scanned: 0, copied: 0))
                        done.append(claim.chunk)
                    }
                    return done
                }
            }
            return try await group.reduce(into: [Int]()) { $0 += $1 }
        }
        #expect(completed.sorted() == Array(0..<60))
        let status = try #require(try await coordinator.status("r"))
        #expect(status.finished && status.rowsScanned == 600 && status.rowsCopied == 540 && status.plannedRows == 600)
        #expect(status.inFlight == 0 && status.waiting == 0 && (1...8).contains(status.workersSeen))
        #expect(try await coordinator.status("missing") == nil)
        #expect(try await coordinator.runInfo("missing") == nil)
    }

    /// A lease of 0.2 s expires by the coordinator's clock; another worker takes the chunk over under a new token.
    static func leaseExpiry<C: BackfillCoordinator>(_ coordinator: C) async throws where C.Key == String {
        #expect(try await coordinator.createRun(plan("r", chunks: 1)))
        let first = try #require(try await coordinator.claim("r", worker: "A", lease: .milliseconds(200)))
        #expect(first.range.after == nil && first.range.through == "k1000")
        #expect(try await coordinator.checkpoint(first, cursor: "k0", scanned: 4, copied: 4, lease: .milliseconds(200)))
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
        // A save repeated with the same cursor (a retry after a lost reply) counts its rows once.
        for _ in 0..<2 {
            #expect(try await coordinator.checkpoint(claim, cursor: "k5", scanned: 3, copied: 2, lease: .seconds(60)))
        }
        try await coordinator.release(claim)
        let again = try #require(try await coordinator.claim("r", worker: "C", lease: .seconds(60)))
        #expect(again.token > claim.token && again.cursor == "k5", "a released chunk keeps its checkpoint")
        #expect(try await coordinator.complete(again, scanned: 6, copied: 6))
        let status = try #require(try await coordinator.status("r"))
        #expect(status.rowsScanned == 13 && status.rowsCopied == 12 && status.finished)
    }

    /// 100 rows at 10 rows/s: the second caller waits about 10 s after the first; the limit can be lifted.
    static func sharedThrottle<C: BackfillCoordinator>(_ coordinator: C) async throws where C.Key == String {
        #expect(try await coordinator.createRun(plan("r", chunks: 1, limit: 10)))
        let first = try await coordinator.throttle("r", rows: 100)
        let second = try await coordinator.throttle("r", rows: 100)
        #expect(first < .seconds(1))
        #expect(second > .seconds(5) && second <= .seconds(20))
        #expect(try await coordinator.setMaxRowsPerSecond("r", nil))
        #expect(try await coordinator.throttle("r", rows: 1_000_000) == .zero)
        #expect(try await coordinator.runInfo("r")?.maxRowsPerSecond == nil)
        #expect(!(try await coordinator.setMaxRowsPerSecond("missing", 5)))
        await #expect(throws: ZDDMError.self) { try await coordinator.setMaxRowsPerSecond("r", 0) }
    }
}
