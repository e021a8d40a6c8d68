import Foundation
import Synchronization
import Testing
import ZDDM
import ZDDMTesting

@Suite("Chunked backfill: chunks, leases, fencing tokens, shared throttle")
struct ChunkedBackfillTests {
    typealias Store = InMemoryStore<String, String>

    static func key(_ index: Int) -> String { "k" + String(100_000 + index) }

    func options(workers: Int = 3, chunk: Int = 40, batch: Int = 7) -> BackfillOptions {
        var options = BackfillOptions()
        options.workers = workers
        options.chunkRows = chunk
        options.batchSize = batch
        options.retryDelay = .milliseconds(1)
        options.idlePollInterval = .milliseconds(5)
        options.pollInterval = .milliseconds(5)
        return options
    }

    /// Old with `count` keys, every tenth then deleted (with versions Old remembers the deletion).
    func oldStore(_ count: Int) async throws -> Store {
        let old = Store(captureChanges: true)
        for index in 0..<count { _ = try await old.writeVersioned(Self.key(index), "v\(index)") }
        for index in stride(from: 0, to: count, by: 10) { _ = try await old.deleteVersioned(Self.key(index)) }
        return old
    }

    /// Whether New holds exactly Old's records and versions for every key Old lists (deleted ones as tombstones).
    func agree(_ old: Store, _ new: Store) async throws -> Bool {
        var cursor: String?
        while true {
            let keys = try await old.keysIncludingDeleted(after: cursor, limit: 100)
            guard let last = keys.last else { return true }
            let expected = try await old.readManyVersioned(keys)
            let found = try await new.readManyVersioned(keys)
            for key in keys where expected[key]?.version != found[key]?.version || expected[key] != found[key] {
                return false
            }
            cursor = last
        }
    }

    @Test("Three workers copy every key and deletion once; the chunks cover Old and each is completed exactly once")
    func copiesEverything() async throws {
        let old = try await oldStore(1_000)
        let new = Store()
        let core = try MigrationCore(name: "chunks", old: old, new: new, gate: TrafficGate(rate: 1))
        let coordinator = InMemoryBackfillCoordinator<String>()
        let backfill = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r1", options: options())
        let progress = try await backfill.runPass()
        #expect(progress.finished)
        #expect(progress.rowsScanned == 1_000)
        #expect(progress.rowsCopied == 900)
        #expect(progress.deletionsCopied == 100)
        #expect(try await agree(old, new))
        let chunks = coordinator.chunks(of: "r1")
        #expect(chunks.count == 25)
        #expect(chunks.allSatisfy { $0.done && $0.completions == 1 })
        #expect(chunks.reduce(0) { $0 + $1.rowsScanned } == 1_000)
        // Each chunk starts right after the one before.
        #expect(zip(chunks, chunks.dropFirst()).allSatisfy { $0.range.through == $1.range.after })
        let status = try #require(try await backfill.status())
        #expect(status.finished && status.done == 25 && status.inFlight == 0 && status.waiting == 0)
        #expect(status.rowsScanned == 1_000 && status.plannedRows == 1_000)
        #expect((1...3).contains(status.workersSeen))
        #expect(status.line.contains("1000/1000 rows") && status.line.contains("25 done"))
        // A second pass over a finished run does nothing.
        let again = try await backfill.runPass()
        #expect(again.finished && again.rowsScanned == 0)
    }

    @Test(
        "A claim is fenced: once its lease expired and another worker claimed the chunk, the first can neither save nor complete it"
    )
    func fencingTokens() async throws {
        let clock = ManualClock()
        let coordinator = InMemoryBackfillCoordinator<String>(clock: clock)
        let plan = BackfillRunPlan(
            run: "r",
            rate: 1,
            usesVersions: true,
            maxRowsPerSecond: nil,
            chunks: [
                BackfillChunkRange(after: nil, through: "b", plannedRows: 2),
                BackfillChunkRange(after: "b", through: "d", plannedRows: 2),
            ]
        )
        #expect(try await coordinator.createRun(plan))
        #expect(!(try await coordinator.createRun(plan)))
        let first = try #require(try await coordinator.claim("r", worker: "A", lease: .seconds(10)))
        let second = try #require(try await coordinator.claim("r", worker: "B", lease: .seconds(10)))
        #expect(first.chunk == 0 && second.chunk == 1)
        #expect(try await coordinator.claim("r", worker: "C", lease: .seconds(10)) == nil)
        #expect(try await coordinator.checkpoint(first, cursor: "a", scanned: 1, copied: 1, lease: .seconds(10)))
        // Saved again with the same cursor (a retry after a lost reply): its rows count once.
        #expect(try await coordinator.checkpoint(first, cursor: "a", scanned: 1, copied: 1, lease: .seconds(10)))
        clock.advance(by: .seconds(11))
        // A's lease expired: C rescues the chunk from A's checkpoint under a new token.
        let rescued = try #require(try await coordinator.claim("r", worker: "C", lease: .seconds(10)))
        #expect(rescued.chunk == 0 && rescued.token > first.token && rescued.claims == 2 && rescued.cursor == "a")
        #expect(!(try await coordinator.checkpoint(first, cursor: "b", scanned: 1, copied: 1, lease: .seconds(10))))
        #expect(!(try await coordinator.complete(first, scanned: 1, copied: 1)))
        #expect(!(try await coordinator.renew(first, lease: .seconds(10))))
        #expect(try await coordinator.complete(rescued, scanned: 1, copied: 1))
        #expect(!(try await coordinator.complete(rescued, scanned: 1, copied: 1)))
        let chunk = try #require(coordinator.chunks(of: "r").first)
        #expect(chunk.completions == 1 && chunk.rowsScanned == 2 && chunk.owner == "C")
        // B's lease expired too, but nobody took its chunk: B still holds it and may finish it.
        #expect(try await coordinator.complete(second, scanned: 2, copied: 2))
        let status = try #require(try await coordinator.status("r"))
        #expect(status.finished && status.rowsScanned == 4 && status.workersSeen == 2)
    }

    @Test(
        "A worker that died holding a chunk: its lease expires, another worker resumes the chunk from its checkpoint, and the run finishes"
    )
    func rescuesDeadWorkersChunk() async throws {
        let old = try await oldStore(400)
        let new = Store()
        let core = try MigrationCore(name: "rescue", old: old, new: new, gate: TrafficGate(rate: 1))
        let coordinator = InMemoryBackfillCoordinator<String>()
        // Plan the run, then let a worker that will die claim the first chunk and save one batch.
        var planOptions = options(workers: 1)
        planOptions.leaseDuration = .milliseconds(300)
        let planner = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: planOptions)
        let info = try await planner.prepare()
        #expect(info.chunks == 10)
        let dead = try #require(try await coordinator.claim("r", worker: "dead", lease: .milliseconds(300)))
        var runOptions = options(workers: 2)
        runOptions.leaseDuration = .seconds(30)
        let survivor = try ChunkedBackfill(
            core: core,
            coordinator: coordinator,
            run: "r",
            create: false,
            options: runOptions
        )
        let progress = try await survivor.runPass()
        #expect(progress.finished)
        #expect(try await agree(old, new))
        let chunks = coordinator.chunks(of: "r")
        #expect(chunks.allSatisfy { $0.done && $0.completions == 1 })
        #expect(chunks[dead.chunk].claims >= 2)
        #expect(chunks[dead.chunk].owner != "dead")
        #expect(chunks.reduce(0) { $0 + $1.rowsScanned } == 400)
    }

    @Test(
        "Stopping releases the chunks with their checkpoints; the next pass resumes without copying a committed batch again"
    )
    func stopAndResume() async throws {
        let old = try await oldStore(600)
        let new = Store()
        let core = try MigrationCore(name: "resume", old: old, new: new, gate: TrafficGate(rate: 1))
        let coordinator = InMemoryBackfillCoordinator<String>()
        let batches = Mutex(0)
        let enough = AsyncSignal()
        let first = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options()) { _ in
            if batches.withLock({ count in
                count += 1
                return count == 10
            }) {
                enough.signal()
            }
        }
        let task = Task { try await first.runPass() }
        await enough.wait()
        task.cancel()
        let stopped = try await task.value
        #expect(!stopped.finished)
        let status = try #require(try await coordinator.status("r"))
        #expect(!status.finished)
        #expect(status.inFlight == 0, "every chunk in hand was released")
        #expect(status.rowsScanned == stopped.rowsScanned)
        let second = try ChunkedBackfill(
            core: core,
            coordinator: coordinator,
            run: "r",
            create: false,
            options: options()
        )
        let rest = try await second.runPass()
        #expect(rest.finished)
        #expect(stopped.rowsScanned + rest.rowsScanned == 600, "no committed batch was scanned twice")
        #expect(try await agree(old, new))
        #expect(coordinator.chunks(of: "r").allSatisfy { $0.completions == 1 })
    }

    @Test("Only rows that existed when the run was planned are chased; keys added after the last one are not")
    func onlyRowsAtStart() async throws {
        let old = try await oldStore(200)
        let new = Store()
        let core = try MigrationCore(name: "start", old: old, new: new, gate: TrafficGate(rate: 1))
        let coordinator = InMemoryBackfillCoordinator<String>()
        let added = Mutex(false)
        let backfill = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options()) { _ in
            guard
                added.withLock({ done in
                    defer { done = true }
                    return !done
                })
            else { return }
            Task { for index in 0..<50 { _ = try await old.writeVersioned("z\(index)", "late") } }
        }
        let progress = try await backfill.runPass()
        #expect(progress.finished)
        #expect(progress.rowsScanned == 200)
        #expect(try await new.read("z0") == nil)
        #expect(coordinator.chunks(of: "r").last?.range.through == Self.key(199))
    }

    @Test(
        "Joining an unknown run, or a run started at another rate or without versions, is refused with an error naming why"
    )
    func refusesMismatchedRuns() async throws {
        let old = try await oldStore(50)
        let coordinator = InMemoryBackfillCoordinator<String>()
        let core = try MigrationCore(name: "m", old: old, new: Store(), gate: TrafficGate(rate: 1))
        let join = try ChunkedBackfill(core: core, coordinator: coordinator, run: "nope", create: false)
        let unknown = await #expect(throws: ZDDMError.self) { try await join.runPass() }
        #expect(unknown?.code == .invalidArgument && unknown?.message.contains("'nope'") == true)
        _ = try await ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options()).runPass()

        let half = try MigrationCore(name: "m", old: old, new: Store(), gate: TrafficGate(rate: 0.5))
        let atHalf = try ChunkedBackfill(core: half, coordinator: coordinator, run: "r", create: false)
        let rate = await #expect(throws: ZDDMError.self) { try await atHalf.runPass() }
        #expect(rate?.code == .invalidArgument && rate?.message.contains("rate 1.0") == true)

        let plain = try MigrationCore(
            name: "m",
            old: old,
            new: Store(),
            gate: TrafficGate(rate: 1),
            options: MigrationOptions(usesVersions: false)
        )
        let unversioned = try ChunkedBackfill(core: plain, coordinator: coordinator, run: "r", create: false)
        let versions = await #expect(throws: ZDDMError.self) { try await unversioned.runPass() }
        #expect(versions?.code == .invalidArgument && versions?.message.contains("with versions") == true)

        var bad = BackfillOptions()
        bad.workers = 0
        #expect(throws: ZDDMError.self) {
            try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: bad)
        }
        #expect(throws: ZDDMError.self) { try ChunkedBackfill(core: core, coordinator: coordinator, run: "") }
    }

    @Test(
        "An unreachable coordinator makes workers wait and resume; no chunk is marked done before its rows were copied"
    )
    func coordinatorOutage() async throws {
        let old = try await oldStore(300)
        let new = Store()
        let core = try MigrationCore(name: "outage", old: old, new: new, gate: TrafficGate(rate: 1))
        let coordinator = InMemoryBackfillCoordinator<String>()
        let outage = Mutex(false)
        let backfill = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options()) { _ in
            let start = outage.withLock { started in
                defer { started = true }
                return !started
            }
            if start { coordinator.failCalls(25) }
        }
        let progress = try await backfill.runPass()
        #expect(progress.finished)
        #expect(try await agree(old, new))
        let chunks = coordinator.chunks(of: "r")
        #expect(chunks.allSatisfy { $0.done && $0.completions == 1 })
        #expect(chunks.reduce(0) { $0 + $1.rowsScanned } == 300)
    }

    @Test(
        "A coordinator error retrying cannot cure (a missing table) ends the run at its first failure, naming it; an outage before it is waited out",
        .timeLimit(.minutes(2))
    )
    func permanentCoordinatorError() async throws {
        let old = try await oldStore(300)
        let new = Store()
        let core = try MigrationCore(name: "permanent", old: old, new: new, gate: TrafficGate(rate: 1))
        let coordinator = InMemoryBackfillCoordinator<String>()
        let failures = Mutex(0)
        let backfill = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options()) { _ in
            // After the first checkpoint: three retryable failures, then one that is not, for every call after.
            let first = failures.withLock { count in
                defer { count += 1 }
                return count == 0
            }
            if first { coordinator.failCalls(3) }
            if coordinator.failedCalls == 3 {
                coordinator.failCalls(1_000, with: ZDDMError(.storeFailed, message: "", underlying: PermanentFault()))
            }
        }
        let error = await #expect(throws: ZDDMError.self) { try await backfill.runPass() }
        #expect(error?.underlying is PermanentFault, "\(String(describing: error))")
        // Thrown by the first call that met it (one per worker at most), not retried; each worker then tries once
        // to give its chunk back (which fails too).
        #expect(
            coordinator.failedCalls >= 4 && coordinator.failedCalls <= 3 + 3 * 2,
            "\(coordinator.failedCalls) calls"
        )
        #expect(!coordinator.chunks(of: "r").allSatisfy { $0.done })
        // Nothing was marked done that was not copied.
        for (index, chunk) in coordinator.chunks(of: "r").enumerated() where chunk.done {
            var keys: [String] = []
            var cursor = chunk.range.after
            while true {
                let page = try await old.keysIncludingDeleted(after: cursor, limit: 100)
                let inside = page.filter { $0 <= chunk.range.through }
                keys += inside
                guard inside.count == page.count, let last = page.last else { break }
                cursor = last
            }
            let copied = try await new.readManyVersioned(keys)
            #expect(copied.count == keys.count, "chunk \(index) marked done without its rows")
        }
    }

    @Test(
        "A worker that fails (Old unreadable past its attempts) gives its chunk back at once with its checkpoint; the next pass resumes it without copying a committed batch again"
    )
    func failureReleasesChunk() async throws {
        let old = try await oldStore(300)
        let new = Store()
        // Old's pages fail for good after the plan (8 pages) and 6 batches.
        let reads = Mutex(0)
        let failing = FaultInjectingStore(old) { operation, _ in
            guard operation == .listKeys else { return }
            let count = reads.withLock {
                $0 += 1
                return $0
            }
            if count > 14, count < 1_000 { throw InjectedFault(operation: operation, applied: false) }
        }
        let core = try MigrationCore(name: "failing", old: failing, new: new, gate: TrafficGate(rate: 1))
        let coordinator = InMemoryBackfillCoordinator<String>()
        let backfill = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options())
        await #expect(throws: ZDDMError.self) { try await backfill.runPass() }
        let chunks = coordinator.chunks(of: "r")
        #expect(chunks.contains { !$0.done })
        #expect(chunks.allSatisfy { $0.leaseEnds == nil }, "every chunk not done was given back")
        #expect(chunks.contains { !$0.done && $0.cursor != nil }, "a chunk given back keeps its checkpoint")
        let scannedBefore = chunks.reduce(0) { $0 + $1.rowsScanned }

        reads.withLock { $0 = 1_000 }
        let resumed = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options())
        let progress = try await resumed.runPass()
        #expect(progress.finished)
        #expect(progress.rowsScanned == 300 - scannedBefore, "no committed batch was copied again")
        #expect(try await agree(old, new))
        #expect(coordinator.chunks(of: "r").allSatisfy { $0.done && $0.completions == 1 })
    }

    @Test("The throttle is shared by every worker of a run: rows per second across all of them")
    func sharedThrottle() async throws {
        let clock = ManualClock()
        let coordinator = InMemoryBackfillCoordinator<String>(clock: clock)
        let plan = BackfillRunPlan<String>(run: "r", rate: 1, usesVersions: true, maxRowsPerSecond: 100, chunks: [])
        #expect(try await coordinator.createRun(plan))
        // Two workers (say on two machines) ask for 100 rows each: the second waits a second, the third two.
        #expect(try await coordinator.throttle("r", rows: 100) == .zero)
        #expect(try await coordinator.throttle("r", rows: 100) == .seconds(1))
        #expect(try await coordinator.throttle("r", rows: 50) == .seconds(2))
        clock.advance(by: .seconds(10))
        #expect(try await coordinator.throttle("r", rows: 100) == .zero)
        #expect(try await coordinator.setMaxRowsPerSecond("r", nil))
        #expect(try await coordinator.throttle("r", rows: 1_000_000) == .zero)
        #expect(!(try await coordinator.setMaxRowsPerSecond("missing", 5)))
    }

    @Test(
        "Live traffic through three instances' proxies during a three-worker backfill (writes, deletes, new keys): after the applier catches up New equals Old, versions included, with 0 mismatches"
    )
    func liveTraffic() async throws {
        let fleet = try InProcessFleet(count: 3, viewLease: .seconds(1))
        for index in 0..<3_000 { _ = try await fleet.oldBase.writeVersioned(Self.key(index), "seed\(index)") }
        try await fleet.control(FleetControlChange(stage: .live, rate: 1))
        try await fleet.refreshAll()
        #expect(try await fleet.catchUp())
        let coordinator = InMemoryBackfillCoordinator<String>()
        var options = options(workers: 1, chunk: 150, batch: 25)
        options.leaseDuration = .seconds(30)
        let started = AsyncSignal()
        let traffic = Task {
            var random = SplitMix64(seed: 42)
            var operations = 0
            while !Task.isCancelled || operations < 600 {
                let instance = fleet.instances[Int(random.next() % 3)]
                let roll = random.next() % 10
                let key = roll < 2 ? "new\(random.next() % 500)" : Self.key(Int(random.next() % 3_000))
                do {
                    if roll < 7 {
                        try await instance.proxy.write(key, "w\(operations)")
                    } else if roll < 9 {
                        try await instance.proxy.delete(key)
                    } else {
                        _ = try await instance.proxy.read(key)
                    }
                } catch {
                    Issue.record("a proxy call failed: \(error)")
                }
                operations += 1
                if operations == 100 { started.signal() }
                if operations >= 20_000 { break }
                if operations.isMultiple(of: 50) { await Task.yield() }
            }
            return operations
        }
        await started.wait()
        try await withThrowingTaskGroup(of: BackfillProgress.self) { group in
            for (index, instance) in fleet.instances.enumerated() {
                var each = options
                each.workerName = "instance\(index)"
                let worker = each
                group.addTask {
                    try await ChunkedBackfill(
                        core: instance.core,
                        coordinator: coordinator,
                        run: "live",
                        options: worker
                    )
                    .runPass()
                }
            }
            for try await progress in group { #expect(progress.finished) }
        }
        traffic.cancel()
        let operations = await traffic.value
        #expect(operations >= 600)
        #expect(try await fleet.catchUp())
        #expect(coordinator.chunks(of: "live").allSatisfy { $0.completions == 1 })
        // Every key Old has a version for: New holds the same record at the same version (none older than Old's).
        var cursor: String?
        var checked = 0
        while true {
            let keys = try await fleet.oldBase.keysIncludingDeleted(after: cursor, limit: 500)
            guard let last = keys.last else { break }
            let old = try await fleet.oldBase.readManyVersioned(keys)
            let new = try await fleet.newBase.readManyVersioned(keys)
            for key in keys {
                let expected = old[key]
                let found = new[key]
                if expected?.value == nil, found?.value == nil { continue }
                #expect(
                    found == expected,
                    "key \(key): New \(String(describing: found)), Old \(String(describing: expected))"
                )
            }
            checked += keys.count
            cursor = last
        }
        #expect(checked >= 3_000)
        let report = try await Verify(core: fleet.instances[0].core).verify()
        #expect(report.mismatches == 0, "\(report)")
        #expect(fleet.divergentKeys().isEmpty)
    }

    @Test("Back-pressure from New pauses every worker before its next batch, keeping its chunk, until New recovers")
    func backPressure() async throws {
        let old = try await oldStore(300)
        let new = Store()
        let core = try MigrationCore(name: "pressure", old: old, new: new, gate: TrafficGate(rate: 1))
        let coordinator = InMemoryBackfillCoordinator<String>()
        let asked = Mutex(0)
        let askedAtFirstBatch = Mutex<Int?>(nil)
        var options = options(workers: 2)
        options.latencyPause = .milliseconds(1)
        // New says "too far behind" for its first 20 answers, then recovers; errors count as no pressure.
        options.backPressure = {
            asked.withLock { count in
                count += 1
                return count <= 20
            }
        }
        let backfill = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options) { _ in
            let count = asked.withLock { $0 }
            askedAtFirstBatch.withLock { $0 = $0 ?? count }
        }
        let progress = try await backfill.runPass()
        #expect(progress.finished)
        #expect(try await agree(old, new))
        #expect((askedAtFirstBatch.withLock { $0 } ?? 0) > 20, "no batch was copied while New asked for a pause")
        #expect(coordinator.chunks(of: "r").allSatisfy { $0.completions == 1 && $0.claims == 1 })
    }

    @Test(
        "Without a rate limit workers skip the shared throttle; a limit set while the run goes is read again within a second and throttles every batch after it; a run with a limit throttles every batch"
    )
    func throttleOnlyWithALimit() async throws {
        let old = try await oldStore(300)
        var options = options(workers: 1, chunk: 40, batch: 7)
        // A pass that runs alone: the limit is the run's, set at creation or while it goes.
        for (run, created, setAtCheckpoint) in [
            ("none", nil as Double?, nil as Int?), ("later", nil, 10), ("limited", 1e9, nil),
        ] {
            let clock = ManualClock()
            let new = Store()
            let core = try MigrationCore(name: "throttle", old: old, new: new, gate: TrafficGate(rate: 1), clock: clock)
            let coordinator = ThrottleCountingCoordinator(InMemoryBackfillCoordinator<String>(), clock: clock)
            coordinator.setLimitAtCheckpoint = setAtCheckpoint
            options.maxRowsPerSecond = created
            let backfill = try ChunkedBackfill(core: core, coordinator: coordinator, run: run, options: options)
            let progress = try await backfill.runPass()
            #expect(progress.finished && progress.rowsScanned == 300)
            #expect(try await agree(old, new))
            let (throttles, checkpoints) = coordinator.counts
            switch run {
            case "none": #expect(throttles == 0)
            case "later": #expect(throttles > 0 && throttles == checkpoints - 10, "\(throttles) of \(checkpoints)")
            default: #expect(throttles == checkpoints && checkpoints > 40)
            }
        }
    }
}

/// A coordinator that counts the throttle's calls and the checkpoints, and can set the run's limit at a checkpoint
/// (then moving the clock past the time a worker trusts that the run has none).
final class ThrottleCountingCoordinator: BackfillCoordinator, Sendable {
    typealias Key = String
    let base: InMemoryBackfillCoordinator<String>
    let clock: ManualClock
    private let state = Mutex<(throttles: Int, checkpoints: Int, setAt: Int?)>((0, 0, nil))

    init(_ base: InMemoryBackfillCoordinator<String>, clock: ManualClock) {
        self.base = base
        self.clock = clock
    }

    var setLimitAtCheckpoint: Int? {
        get { state.withLock { $0.setAt } }
        set { state.withLock { $0.setAt = newValue } }
    }

    var counts: (throttles: Int, checkpoints: Int) { state.withLock { ($0.throttles, $0.checkpoints) } }

    func createRun(_ plan: BackfillRunPlan<String>) async throws -> Bool { try await base.createRun(plan) }
    func runInfo(_ run: String) async throws -> BackfillRunInfo? { try await base.runInfo(run) }
    func claim(_ run: String, worker: String, lease: Duration) async throws -> BackfillChunkClaim<String>? {
        try await base.claim(run, worker: worker, lease: lease)
    }
    func checkpoint(
        _ claim: BackfillChunkClaim<String>,
        cursor: String,
        scanned: Int,
        copied: Int,
        lease: Duration
    ) async throws -> Bool {
        let (count, setAt) = state.withLock { state in
            state.checkpoints += 1
            return (state.checkpoints, state.setAt)
        }
        if count == setAt {
            _ = try await base.setMaxRowsPerSecond(claim.run, 1e9)
            clock.advance(by: .seconds(2))
        }
        return try await base.checkpoint(claim, cursor: cursor, scanned: scanned, copied: copied, lease: lease)
    }
    func renew(_ claim: BackfillChunkClaim<String>, lease: Duration) async throws -> Bool {
        try await base.renew(claim, lease: lease)
    }
    func complete(_ claim: BackfillChunkClaim<String>, scanned: Int, copied: Int) async throws -> Bool {
        try await base.complete(claim, scanned: scanned, copied: copied)
    }
    func release(_ claim: BackfillChunkClaim<String>) async throws { try await base.release(claim) }
    func status(_ run: String) async throws -> BackfillRunStatus? { try await base.status(run) }
    func throttle(_ run: String, rows: Int) async throws -> Duration {
        state.withLock { $0.throttles += 1 }
        return try await base.throttle(run, rows: rows)
    }
    func setMaxRowsPerSecond(_ run: String, _ maxRowsPerSecond: Double?) async throws -> Bool {
        try await base.setMaxRowsPerSecond(run, maxRowsPerSecond)
    }
}
