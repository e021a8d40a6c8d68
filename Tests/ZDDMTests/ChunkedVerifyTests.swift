import Foundation
import Synchronization
import Testing
import ZDDM
import ZDDMTesting

@Suite("Chunked verify: chunks shared by workers, findings counted once, clean runs recorded")
struct ChunkedVerifyTests {
    typealias Store = InMemoryStore<String, String>

    static func key(_ index: Int) -> String { "k" + String(100_000 + index) }

    func options(workers: Int = 3, chunk: Int = 40, batch: Int = 7) -> VerifyOptions {
        var options = VerifyOptions()
        options.workers = workers
        options.chunkRows = chunk
        options.batchSize = batch
        options.retryDelay = .milliseconds(1)
        options.idlePollInterval = .milliseconds(5)
        options.runScope = "the spoilt pair"
        return options
    }

    /// Old with `count` keys (every tenth then deleted), New a fenced copy of it, then New spoilt in every way a
    /// verify finds, in several chunks: values behind Old's, tombstones where Old has a value, keys missing, and
    /// keys Old never had before Old's first key, among its keys and after its last one.
    func spoiltPair(_ count: Int) async throws -> (old: Store, new: Store, core: MigrationCore<Store, Store>) {
        let old = Store(captureChanges: true)
        for index in 0..<count { _ = try await old.writeVersioned(Self.key(index), "v\(index)") }
        for index in stride(from: 0, to: count, by: 10) { _ = try await old.deleteVersioned(Self.key(index)) }
        let new = Store()
        let core = try MigrationCore(name: "chunked-verify", old: old, new: new, gate: TrafficGate(rate: 1))
        _ = try await Backfill(core: core, checkpoints: MemoryCheckpointStore<String>()).runPass()
        for index in [11, 333, 777] {
            try await new.invalidate(Self.key(index))
            _ = try await new.writeIfNewer(Self.key(index), .value("stale", version: 0))
        }
        for index in [45, 555] {
            try await new.invalidate(Self.key(index))
            _ = try await new.writeIfNewer(Self.key(index), .tombstone(version: 0))
        }
        for index in [2, 401, count - 1] { try await new.invalidate(Self.key(index)) }
        for extra in ["a-before-first", Self.key(250) + "x", "zz-after-last"] {
            _ = try await new.writeIfNewer(extra, .value("x", version: 1))
        }
        return (old, new, core)
    }

    /// Wraps New so that `action` runs on its `n`th listing of keys, inside the call, before it reaches the store.
    /// - Returns: The wrapped store, and how many listings it has seen so far.
    func onListing(
        _ n: Int,
        of new: Store,
        _ action: @escaping @Sendable () async -> Void
    ) -> (store: FaultInjectingStore<Store>, listings: @Sendable () -> Int) {
        let listings = Mutex(0)
        let store = FaultInjectingStore(new) { operation, _ in
            guard operation == .listKeys,
                listings.withLock({
                    $0 += 1
                    return $0 == n
                })
            else { return }
            await action()
        }
        return (store, { listings.withLock { $0 } })
    }

    static let expected: [MismatchKind: Int] = [
        .differentValue: 3, .tombstoneInNew: 2, .missingInNew: 3, .extraInNew: 3,
    ]

    @Test(
        "Three workers verify every chunk once: each kind of mismatch is found once, in the first and the last chunk too, and the run's totals agree"
    )
    func findsEverythingOnce() async throws {
        let (_, _, core) = try await spoiltPair(1_000)
        let single = try await Verify(core: core).verify()
        #expect(single.counts == Self.expected, "\(single)")

        let coordinator = InMemoryBackfillCoordinator<String>()
        let verify = try ChunkedVerify(core: core, coordinator: coordinator, run: "v1", options: options())
        let report = try await verify.verify()
        #expect(report.counts == Self.expected, "\(report)")
        #expect(report.keysInOld == single.keysInOld && report.keysInNew == single.keysInNew)
        #expect(report.comparedByVersion == single.comparedByVersion)
        #expect(report.comparedByValue == single.comparedByValue && report.comparedByValue < 20)
        #expect(!report.isClean && report.repaired == 0)
        let chunks = coordinator.chunks(of: "v1")
        #expect(chunks.count == 24)  // 900 keys Old holds, in chunks of 40; then New's key after Old's last
        #expect(chunks.allSatisfy { $0.done && $0.completions == 1 })
        let status = try #require(try await verify.status())
        #expect(status.finished)
        #expect(status.rowsScanned == report.keysInOld, "keys compared, across the run")
        #expect(status.rowsCopied == 11, "mismatches found, across the run")
    }

    @Test("Without versions, and with deep, a chunked run finds what a single pass finds")
    func byValues() async throws {
        let old = Store(["b": "1", "c": "2", "d": "3", "f": "5", "g": "6", "h": "7"])
        let new = Store()
        for (key, value) in [("a", "x"), ("b", "1"), ("c", "stale"), ("e", "x"), ("f", "5"), ("h", "7"), ("z", "x")] {
            try await new.write(key, value)
        }
        try await new.writeTombstone("g")
        let core = try MigrationCore(
            name: "chunked-values",
            old: old,
            new: new,
            gate: TrafficGate(rate: 1),
            options: MigrationOptions(usesVersions: false)
        )
        #expect(!core.usesVersions)
        let single = try await Verify(core: core, options: options(batch: 2)).verify()
        let coordinator = InMemoryBackfillCoordinator<String>()
        let chunked = try await ChunkedVerify(
            core: core,
            coordinator: coordinator,
            run: "values",
            options: options(workers: 2, chunk: 2, batch: 2)
        )
        .verify()
        let expected: [MismatchKind: Int] = [.extraInNew: 3, .differentValue: 1, .missingInNew: 1, .tombstoneInNew: 1]
        #expect(single.counts == expected)
        #expect(chunked.counts == expected, "\(chunked)")
        #expect(chunked.keysInOld == 6 && chunked.keysInNew == 7 && chunked.comparedByVersion == 0)
        #expect(coordinator.chunks(of: "values").count == 4)  // three of Old's keys, then New's "z" after them

        let versioned = try await spoiltPair(1_000)
        var deep = options()
        deep.deep = true
        let deepReport = try await ChunkedVerify(
            core: versioned.core,
            coordinator: coordinator,
            run: "deep",
            options: deep
        )
        .verify()
        #expect(deepReport.comparedByVersion == 0 && deepReport.comparedByValue == 900)
        #expect(deepReport.counts == Self.expected, "\(deepReport)")
    }

    @Test("Repair through the fence: a repairing run fixes every mismatch, and the next run is clean and recorded")
    func repairsThenClean() async throws {
        let (old, new, core) = try await spoiltPair(600)
        let coordinator = InMemoryBackfillCoordinator<String>()
        var repairing = options()
        repairing.repair = true
        let first = try await ChunkedVerify(core: core, coordinator: coordinator, run: "fix", options: repairing)
            .verify()
        #expect(first.mismatches == 11 && first.repaired == 11 && !first.isClean)
        #expect(!core.gate.isRampdownPermitted)
        #expect(try await new.readVersioned(Self.key(333)) == old.readVersioned(Self.key(333)))
        #expect(try await new.read("zz-after-last") == nil)
        let checking = try ChunkedVerify(core: core, coordinator: coordinator, run: "check", options: options())
        try await checking.prepare()
        let second = try await checking.verify()
        #expect(second.mismatches == 0 && second.isClean, "\(second)")
        #expect(core.gate.isRampdownPermitted, "the clean run is recorded in the gate of the process that planned it")
    }

    @Test(
        "A worker that died holding a chunk: its lease expires, another worker verifies the chunk again, and no finding is counted twice"
    )
    func rescuesDeadWorkersChunk() async throws {
        let (_, _, core) = try await spoiltPair(400)
        let coordinator = InMemoryBackfillCoordinator<String>()
        var planning = options(workers: 1)
        planning.leaseDuration = .milliseconds(200)
        let planner = try ChunkedVerify(core: core, coordinator: coordinator, run: "r", options: planning)
        let info = try await planner.prepare()
        #expect(info.chunks == 10)
        let dead = try #require(try await coordinator.claim("r", worker: "dead", lease: .milliseconds(200)))
        let survivor = try ChunkedVerify(
            core: core,
            coordinator: coordinator,
            run: "r",
            create: false,
            options: options(workers: 2)
        )
        let report = try await survivor.verify()
        let chunks = coordinator.chunks(of: "r")
        #expect(chunks.allSatisfy { $0.done && $0.completions == 1 })
        #expect(chunks[dead.chunk].claims >= 2 && chunks[dead.chunk].owner != "dead")
        #expect(!(try await coordinator.complete(dead, scanned: 1, copied: 1)), "the dead worker's token is void")
        let single = try await Verify(core: core).verify()
        #expect(report.counts == single.counts, "\(report)")
        #expect(try await coordinator.status("r")?.rowsCopied == single.mismatches)
    }

    @Test("Stopping releases the chunks in hand; a joining process finishes the run; each chunk's findings count once")
    func stopAndJoin() async throws {
        let (_, _, core) = try await spoiltPair(800)
        let coordinator = InMemoryBackfillCoordinator<String>()
        // New stalls on its fourth listing, while workers hold chunks; the run is stopped there.
        let stalled = AsyncSignal()
        let resume = AsyncSignal()
        let slowNew = onListing(4, of: core.new) {
            stalled.signal()
            await resume.wait()
        }.store
        let slowCore = try MigrationCore(name: "stop", old: core.old, new: slowNew, gate: TrafficGate(rate: 1))
        let first = try ChunkedVerify(core: slowCore, coordinator: coordinator, run: "s", options: options(workers: 2))
        let task = Task { try await first.verify() }
        await stalled.wait()
        task.cancel()
        resume.signal()
        let stopped = try await task.value
        #expect(!stopped.isClean)
        let status = try #require(try await coordinator.status("s"))
        #expect(!status.finished && status.inFlight == 0, "every chunk in hand was released")
        let rest = try await ChunkedVerify(
            core: core,
            coordinator: coordinator,
            run: "s",
            create: false,
            options: options(workers: 2)
        )
        .verify()
        #expect(coordinator.chunks(of: "s").allSatisfy { $0.done && $0.completions == 1 })
        let total = stopped.counts.merging(rest.counts, uniquingKeysWith: +)
        #expect(total == Self.expected, "\(stopped) + \(rest)")
        #expect(try await coordinator.status("s")?.rowsCopied == 11)
    }

    @Test(
        "A coordinator error retrying cannot cure ends the run at its first failure, naming it, and is not retried",
        .timeLimit(.minutes(2))
    )
    func permanentCoordinatorError() async throws {
        let (_, _, core) = try await spoiltPair(1_000)
        let coordinator = InMemoryBackfillCoordinator<String>()
        let new = onListing(30, of: core.new) { coordinator.failCalls(1_000, with: PermanentFault()) }.store
        let failingCore = try MigrationCore(name: "permanent", old: core.old, new: new, gate: TrafficGate(rate: 1))
        await #expect(throws: PermanentFault.self) {
            try await ChunkedVerify(core: failingCore, coordinator: coordinator, run: "p", options: options()).verify()
        }
        #expect(coordinator.failedCalls >= 1 && coordinator.failedCalls <= 3, "\(coordinator.failedCalls) calls")
    }

    @Test(
        "A coordinator that fails for a while mid-run makes workers wait and retry; the run finishes with every finding"
    )
    func coordinatorOutage() async throws {
        let (_, _, core) = try await spoiltPair(1_000)
        let coordinator = InMemoryBackfillCoordinator<String>()
        // The coordinator starts failing once the workers are well into the run (New's 30th listing).
        let (new, listings) = onListing(30, of: core.new) { coordinator.failCalls(12) }
        let outageCore = try MigrationCore(name: "outage", old: core.old, new: new, gate: TrafficGate(rate: 1))
        let report = try await ChunkedVerify(core: outageCore, coordinator: coordinator, run: "o", options: options())
            .verify()
        #expect(listings() > 30, "the outage began mid-run")
        #expect(report.counts == Self.expected)
        #expect(coordinator.chunks(of: "o").allSatisfy { $0.done && $0.completions == 1 })
        #expect(try await coordinator.status("o")?.rowsCopied == 11)
    }

    @Test(
        "A worker stalled past its lease loses its chunk: another worker verifies it, the stalled one drops what it found there, and nothing counts twice"
    )
    func lostLeaseDropsFindings() async throws {
        let (_, _, core) = try await spoiltPair(1_000)
        // Leases expire only when the test moves the coordinator's clock.
        let clock = ManualClock()
        let coordinator = InMemoryBackfillCoordinator<String>(clock: clock)
        let stalled = AsyncSignal()
        let resume = AsyncSignal()
        // The first listing is the plan's (New's keys after Old's last); the second is the first chunk's.
        let slowNew = onListing(2, of: core.new) {
            stalled.signal()
            await resume.wait()
        }.store
        let slowCore = try MigrationCore(name: "slow", old: core.old, new: slowNew, gate: TrafficGate(rate: 1))
        var slowOptions = options(workers: 1, chunk: 100, batch: 30)
        slowOptions.workerName = "slow"
        slowOptions.leaseDuration = .seconds(60)
        let slow = try ChunkedVerify(core: slowCore, coordinator: coordinator, run: "l", options: slowOptions)
        let slowTask = Task { try await slow.verify() }
        await stalled.wait()
        clock.advance(by: .seconds(61))
        var fastOptions = slowOptions
        fastOptions.workers = 2
        fastOptions.workerName = "fast"
        let fast = try await ChunkedVerify(
            core: core,
            coordinator: coordinator,
            run: "l",
            create: false,
            options: fastOptions
        )
        .verify()
        resume.signal()
        let slowReport = try await slowTask.value
        let chunks = coordinator.chunks(of: "l")
        #expect(chunks.allSatisfy { $0.done && $0.completions == 1 })
        #expect(chunks[0].claims == 2 && chunks[0].owner?.hasPrefix("fast") == true, "the stalled chunk was taken over")
        #expect(slowReport.mismatches == 0 && slowReport.keysInOld == 0, "the stalled worker's findings were dropped")
        #expect(fast.counts == Self.expected, "\(fast)")
        #expect(try await coordinator.status("l")?.rowsCopied == 11)
    }

    @Test("A throttled run whose chunks outlast their lease keeps them: the lease is renewed while a chunk is verified")
    func throttledRunKeepsLeases() async throws {
        let (_, _, core) = try await spoiltPair(400)
        let coordinator = InMemoryBackfillCoordinator<String>()
        var throttled = options(workers: 2, chunk: 200, batch: 20)
        throttled.maxRowsPerSecond = 100
        throttled.leaseDuration = .seconds(2)
        let report = try await ChunkedVerify(core: core, coordinator: coordinator, run: "t", options: throttled)
            .verify()
        let chunks = coordinator.chunks(of: "t")
        #expect(chunks.count == 3)  // two of Old's keys, one for New's keys after Old's last
        #expect(chunks.allSatisfy { $0.done && $0.completions == 1 && $0.claims == 1 }, "no chunk was taken over")
        #expect(report.mismatches == (try await Verify(core: core).verify()).mismatches)
    }

    @Test("A chunk's pages stop at its last key: a chunk of one page is one read a side")
    func noReadPastChunkEnd() async throws {
        let old = Store(captureChanges: true)
        for index in 0..<400 { _ = try await old.writeVersioned(Self.key(index), "v\(index)") }
        let new = Store()
        let core = try MigrationCore(name: "pages", old: old, new: new, gate: TrafficGate(rate: 1))
        _ = try await Backfill(core: core, checkpoints: MemoryCheckpointStore<String>()).runPass()
        let counted = (old: FaultInjectingStore(old), new: FaultInjectingStore(new))
        let countedCore = try MigrationCore(
            name: "pages",
            old: counted.old,
            new: counted.new,
            gate: TrafficGate(rate: 1)
        )
        let report = try await ChunkedVerify(
            core: countedCore,
            coordinator: InMemoryBackfillCoordinator<String>(),
            run: "p",
            options: options(workers: 2, chunk: 40, batch: 40)
        )
        .verify()
        #expect(report.isClean && report.comparedByVersion == 400)
        // Old: 11 listings to plan 10 chunks, then one page a chunk; New: one listing after Old's last key, then
        // one page a chunk.
        #expect(counted.old.calls == 21, "\(counted.old.calls)")
        #expect(counted.new.calls == 11, "\(counted.new.calls)")
    }

    @Test("Bad input: an unknown run to join, a run at another rate or without versions, and options out of range")
    func badInput() async throws {
        let (old, new, core) = try await spoiltPair(100)
        let coordinator = InMemoryBackfillCoordinator<String>()
        await #expect(throws: ZDDMError.self) {
            try await ChunkedVerify(core: core, coordinator: coordinator, run: "nope", create: false).verify()
        }
        try await ChunkedVerify(core: core, coordinator: coordinator, run: "r", options: options()).prepare()
        let halfCore = try MigrationCore(name: "half", old: old, new: new, gate: TrafficGate(rate: 0.5))
        let rate = await #expect(throws: ZDDMError.self) {
            try await ChunkedVerify(core: halfCore, coordinator: coordinator, run: "r").verify()
        }
        #expect(rate?.message.contains("rate 1.0") == true)
        let plainCore = try MigrationCore(
            name: "plain",
            old: old,
            new: new,
            gate: TrafficGate(rate: 1),
            options: MigrationOptions(usesVersions: false)
        )
        let versions = await #expect(throws: ZDDMError.self) {
            try await ChunkedVerify(core: plainCore, coordinator: coordinator, run: "r").verify()
        }
        #expect(versions?.message.contains("with versions") == true)
        for change in [
            { (o: inout VerifyOptions) in o.workers = 0 }, { $0.chunkRows = 0 }, { $0.leaseDuration = .zero },
            { $0.batchSize = 0 },
        ] {
            var bad = options()
            change(&bad)
            #expect(throws: ZDDMError.self) {
                try ChunkedVerify(core: core, coordinator: coordinator, run: "b", options: bad)
            }
        }
        #expect(throws: ZDDMError.self) { try ChunkedVerify(core: core, coordinator: coordinator, run: "") }
        // Another scope: a deep or repairing worker in a plain run, or another migration.
        for change in [{ (o: inout VerifyOptions) in o.deep = true }, { $0.repair = true }, { $0.runScope = "other" }] {
            var other = options()
            change(&other)
            let refused = await #expect(throws: ZDDMError.self) {
                try await ChunkedVerify(core: core, coordinator: coordinator, run: "r", options: other).verify()
            }
            #expect(refused?.message.contains("verify run 'r' covers the spoilt pair, but this worker") == true)
        }
        // A run is verified once.
        _ = try await ChunkedVerify(core: core, coordinator: coordinator, run: "r", options: options()).verify()
        let finished = await #expect(throws: ZDDMError.self) {
            try await ChunkedVerify(core: core, coordinator: coordinator, run: "r", options: options()).verify()
        }
        #expect(finished?.message.contains("verify run 'r' is already finished (90 keys compared") == true)
    }

    @Test("Empty stores: a run of no chunks finishes at once and is clean")
    func emptyStores() async throws {
        let core = try MigrationCore(name: "empty", old: Store(), new: Store(), gate: TrafficGate(rate: 1))
        let coordinator = InMemoryBackfillCoordinator<String>()
        let report = try await ChunkedVerify(core: core, coordinator: coordinator, run: "e").verify()
        #expect(report.isClean && report.keysInOld == 0)
        #expect(try await coordinator.status("e")?.chunks == 0)
        // Only New holds keys: the run is planned from New's and finds them.
        let newOnly = Store(["a": "1", "b": "2", "c": "3"])
        let extraCore = try MigrationCore(name: "extra", old: Store(), new: newOnly, gate: TrafficGate(rate: 1))
        let extra = try await ChunkedVerify(
            core: extraCore,
            coordinator: coordinator,
            run: "x",
            options: options(chunk: 2)
        )
        .verify()
        #expect(extra.counts == [.extraInNew: 3] && !extra.isClean)
        #expect(coordinator.chunks(of: "x").count == 2)
    }

    // MARK: In a fleet

    private func liveFleet() async throws -> InProcessFleet {
        let fleet = try InProcessFleet(count: 2)
        try await fleet.control(FleetControlChange(stage: .live, rate: 1))
        try await fleet.refreshAll()
        for index in 0..<200 { try await fleet.instances[index % 2].proxy.write(Self.key(index), "v\(index)") }
        #expect(try await fleet.catchUp())
        return fleet
    }

    @Test(
        "In a fleet: two instances share a clean run, which records the fleet's barrier read before the run was planned and permits rampdown"
    )
    func cleanRunRecordedInFleet() async throws {
        let fleet = try await liveFleet()
        let before = try await fleet.state.state(of: InProcessFleet.migration)
        let coordinator = InMemoryBackfillCoordinator<String>()
        let reports = try await withThrowingTaskGroup(of: VerifyReport<String>.self) { group in
            for (index, instance) in fleet.instances.enumerated() {
                var each = options(workers: 2, chunk: 20)
                each.workerName = "instance\(index)"
                let worker = each
                group.addTask {
                    try await ChunkedVerify(core: instance.core, coordinator: coordinator, run: "f", options: worker)
                        .verify()
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(reports.reduce(0) { $0 + $1.mismatches } == 0)
        #expect(reports.reduce(0) { $0 + $1.keysInOld } == 200)
        #expect(reports.contains { $0.isClean && $0.fleetVerifiedBehind == before.behind })
        let after = try await fleet.state.state(of: InProcessFleet.migration)
        #expect(after.verifiedBehind == before.behind && after.permitsRampdown, "\(after)")
    }

    @Test("In a fleet: a fall-behind after the run was planned is not covered by the run's clean result")
    func fallBehindDuringRunRevokes() async throws {
        let fleet = try await liveFleet()
        let coordinator = InMemoryBackfillCoordinator<String>()
        let core = fleet.instances[0].core
        let verify = try ChunkedVerify(core: core, coordinator: coordinator, run: "late", options: options())
        let info = try await verify.prepare()
        let planned = try #require(info.fleetMark)
        // New falls behind somewhere in the fleet while the run is under way, and catches up again.
        _ = try await fleet.state.markBehind(InProcessFleet.migration)
        #expect(try await fleet.catchUp())
        let report = try await verify.verify()
        #expect(report.isClean && report.fleetVerifiedBehind == planned)
        let state = try await fleet.state.state(of: InProcessFleet.migration)
        #expect(state.behind > planned && !state.permitsRampdown, "\(state)")
    }
}
