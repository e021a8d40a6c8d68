public import ServiceLifecycle
import Synchronization

/// A backfill split into chunks that any number of workers, in any number of processes, share through a
/// ``BackfillCoordinator``.
///
/// The first worker of a run plans it: it walks Old's keys once (keys only) and cuts them into chunks of
/// ``BackfillOptions/chunkRows`` keys, so uneven keys still make even chunks. The last chunk ends at the last key
/// Old held then: rows added later are not chased (live traffic, read-through and the change applier bring them).
/// Each worker then claims a free chunk, copies it batch by batch as ``Backfill`` does (insert-if-absent, or with
/// versions through New's fence, only for keys the gate admits), saves the chunk's checkpoint after each batch has
/// committed (which renews its lease), and completes the chunk while it still holds it. A worker that dies loses
/// at most the batch in hand: when its lease expires, any worker claims the chunk under a new fencing token and
/// resumes it from its checkpoint, and the dead worker's token no longer counts. A worker that lost its chunk
/// that way stops working on it at its next checkpoint; the rows it wrote meanwhile are safe, since every copy
/// into New is insert-if-absent or fenced by version.
///
/// Every worker must agree with the run's plan: a run started at another gate rate, or with versions where this
/// core has none (or the reverse), is refused. On cancellation or graceful shutdown each worker finishes the batch
/// in hand, saves its checkpoint and releases its chunk. A coordinator that fails (its database unreachable, say)
/// makes workers wait and retry, without marking anything done; an error retrying cannot cure ends the run. A
/// batch that keeps failing, or Old that cannot be read, gives the chunk back at once with its checkpoint and ends
/// the run with the error.
public final class ChunkedBackfill<Old: KeyValueStore, New: KeyValueStore, Coordinator: BackfillCoordinator>: Service
where
    Old.Key == New.Key,
    Old.Value == New.Value,
    Old.Key: GateKey,
    Coordinator.Key == Old.Key
{
    public typealias Key = Old.Key

    /// The run's name.
    public let run: String
    /// Where the run's chunks live.
    public let coordinator: Coordinator
    private let core: MigrationCore<Old, New>
    private let options: BackfillOptions
    private let mayCreate: Bool
    private let onProgress: (@Sendable (BackfillProgress) -> Void)?
    private let tally: Mutex<Tally>
    /// Whether the run had a rate limit when it was last read, and when (on the core's clock).
    private let limit: Mutex<(limited: Bool, readAt: Duration)?>

    /// How long a worker trusts that the run has no rate limit, and skips the shared throttle's round trip, before it
    /// reads the run's limit again: a limit set on a running run takes effect within this time.
    static var limitRereadInterval: Duration { .seconds(1) }

    private struct Tally {
        var progress: BackfillProgress
        var started: Duration?
    }

    /// Creates a chunked backfill.
    /// - Parameters:
    ///   - core: The migration's stores, gate, safety memory, metrics and clock.
    ///   - coordinator: Where the run's chunks live.
    ///   - run: The run's name.
    ///   - create: Whether to create the run when it does not exist (`false` to join an existing run only).
    ///   - options: Batching, workers, chunk size, lease, retries; ``BackfillOptions/maxRowsPerSecond`` becomes
    ///     the run's shared limit (for every worker of the run, on every machine). While the run has no limit,
    ///     workers skip the shared throttle and read the run's limit again every second, so a limit set on a
    ///     running run takes effect within about a second.
    ///   - onProgress: Called after every batch with this process's progress.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an empty run name, a batch size,
    ///   worker count, chunk size or attempt count below 1, a lease that is not positive or a rate not above 0, or
    ///   ``ZDDMError/Code/unsupported`` when Old cannot list its keys.
    public init(
        core: MigrationCore<Old, New>,
        coordinator: Coordinator,
        run: String,
        create: Bool = true,
        options: BackfillOptions = BackfillOptions(),
        onProgress: (@Sendable (BackfillProgress) -> Void)? = nil
    ) throws {
        try ChunkedRunSettings.validate(
            kind: "backfill",
            run: run,
            workers: options.workers,
            chunkRows: options.chunkRows,
            lease: options.leaseDuration
        )
        try options.validate(old: core.old)
        self.core = core
        self.coordinator = coordinator
        self.run = run
        self.mayCreate = create
        self.options = options
        self.onProgress = onProgress
        self.tally = Mutex(
            Tally(
                progress: BackfillProgress(
                    rowsScanned: 0,
                    rowsCopied: 0,
                    rowsSkipped: 0,
                    rowsPresent: 0,
                    rowsHeldBack: 0,
                    rowsPerSecond: 0,
                    expectedTotal: options.expectedTotal,
                    elapsed: .zero,
                    finished: false
                ),
                started: nil
            )
        )
        self.limit = Mutex(nil)
    }

    /// Runs this process's workers until every chunk of the run is done, or until cancelled or shut down.
    /// - Throws: ``ZDDMError`` as ``runPass()``.
    public func run() async throws {
        _ = try await runPass()
    }

    /// Runs this process's workers like ``run()`` and returns this process's progress.
    /// - Returns: What this process's workers did; ``BackfillProgress/finished`` tells whether the whole run is done.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an unknown run (with `create: false`)
    ///   or one started with another rate or without (with) versions, ``ZDDMError/Code/unsupported`` when Old
    ///   cannot compare keys in its listing order, or the error of a batch that keeps failing.
    @discardableResult
    public func runPass() async throws -> BackfillProgress {
        let clock = core.clock
        let expected = options.expectedTotal
        tally.withLock { tally in
            tally.started = clock.now
            tally.progress = BackfillProgress(
                rowsScanned: 0,
                rowsCopied: 0,
                rowsSkipped: 0,
                rowsPresent: 0,
                rowsHeldBack: 0,
                rowsPerSecond: 0,
                expectedTotal: expected,
                elapsed: .zero,
                finished: false
            )
        }
        let info = try await prepare()
        if !mayCreate, let limit = options.maxRowsPerSecond, limit != info.maxRowsPerSecond {
            _ = try await coordinated { try await self.coordinator.setMaxRowsPerSecond(self.run, limit) }
        }
        let limited = info.maxRowsPerSecond != nil || (!mayCreate && options.maxRowsPerSecond != nil)
        let readAt = clock.now
        limit.withLock { $0 = (limited, readAt) }
        let prefix = options.workerName ?? ChunkedRunSettings.defaultWorkerName
        core.logger.info(
            "backfill workers starting",
            metadata: ["zddm.backfill": "\(run)", "zddm.workers": "\(options.workers)"]
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 1...options.workers {
                group.addTask { try await self.work(as: "\(prefix)-\(index)") }
            }
            try await group.waitForAll()
        }
        let status = try? await coordinator.status(run)
        let progress = tally.withLock { tally in
            tally.progress.finished = status?.finished ?? false
            tally.progress.elapsed = clock.now - (tally.started ?? clock.now)
            return tally.progress
        }
        onProgress?(progress)
        core.logger.info(
            progress.finished ? "backfill run finished" : "backfill workers stopped; chunks released",
            metadata: ["zddm.backfill": "\(run)", "zddm.rows_scanned": "\(progress.rowsScanned)"]
        )
        return progress
    }

    /// The run's progress across every worker, as the coordinator sees it.
    /// - Returns: The status, or `nil` before the run exists.
    /// - Throws: When the coordinator fails.
    public func status() async throws -> BackfillRunStatus? {
        try await coordinator.status(run)
    }

    private func stopping() -> Bool { Task.isCancelled || Task.isShuttingDownGracefully }

    /// Finds the run, or plans and creates it (unless created with `create: false`), and checks that this
    /// worker agrees with it; ``runPass()`` does this first.
    /// - Returns: The run's settings.
    /// - Throws: As ``runPass()``.
    @discardableResult
    public func prepare() async throws -> BackfillRunInfo {
        let info = try await prepareRun()
        try check(info)
        return info
    }

    /// The run's settings: the existing run's, or a new run's after planning it.
    private func prepareRun() async throws -> BackfillRunInfo {
        if let info = try await coordinated({ try await self.coordinator.runInfo(self.run) }) { return info }
        guard mayCreate else {
            throw ZDDMError(
                .invalidArgument,
                message: "there is no backfill run named '\(run)' to join; start it first (without joining)"
            )
        }
        let plan = try await makePlan()
        let created = try await coordinated { try await self.coordinator.createRun(plan) }
        core.logger.info(
            created ? "backfill run planned" : "backfill run was planned by another worker first",
            metadata: ["zddm.backfill": "\(run)", "zddm.chunks": "\(plan.chunks.count)"]
        )
        guard let info = try await coordinated({ try await self.coordinator.runInfo(self.run) }) else {
            throw ZDDMError(.storeFailed, message: "the coordinator lost backfill run '\(run)' right after creating it")
        }
        return info
    }

    private func check(_ info: BackfillRunInfo) throws {
        try info.refuseMismatch(
            kind: "backfill",
            rate: core.gate.rate,
            usesVersions: core.usesVersions,
            scope: options.runScope ?? core.name
        )
    }

    /// Walks Old's keys once and cuts them into chunks.
    private func makePlan() async throws -> BackfillRunPlan<Key> {
        var chunks: [BackfillChunkRange<Key>] = []
        var cursor: Key?
        while true {
            let keys = try await listKeys(after: cursor, limit: options.chunkRows)
            guard let last = keys.last else { break }
            chunks.append(BackfillChunkRange(after: cursor, through: last, plannedRows: keys.count))
            cursor = last
            if keys.count < options.chunkRows { break }
        }
        return BackfillRunPlan(
            run: run,
            rate: core.gate.rate,
            usesVersions: core.usesVersions,
            maxRowsPerSecond: options.maxRowsPerSecond,
            chunks: chunks,
            scope: options.runScope ?? core.name
        )
    }

    private func listKeys(after cursor: Key?, limit: Int) async throws -> [Key] {
        let core = core
        do {
            return try await options.retrying(core.clock) {
                try await core.storeSpan(.old, .listKeys) {
                    // With versions, keys Old deleted too: New gets their tombstones.
                    core.usesVersions
                        ? try await core.old.keysIncludingDeleted(after: cursor, limit: limit)
                        : try await core.old.keys(after: cursor, limit: limit)
                }
            }
        } catch {
            throw ZDDMError.store(.old, .listKeys, error)
        }
    }

    /// A batch of a chunk: its keys and, with versions, their records read with them.
    struct Page: Sendable {
        var keys: [Key]
        var records: [(key: Key, record: VersionedRecord<Old.Value>)]?
        var atEnd: Bool
    }

    /// The next batch of a chunk: up to a batch of keys after `cursor` that are not past the chunk's last key;
    /// with versions, their records too, in the same read.
    private func batch(after cursor: Key?, through last: Key) async throws -> Page {
        guard core.usesVersions else {
            let page = try await listKeys(after: cursor, limit: options.batchSize)
            let (end, atEnd) = try cut(page, through: last)
            return Page(keys: Array(page[..<end]), records: nil, atEnd: atEnd)
        }
        let core = core
        let limit = options.batchSize
        let rows: [(key: Key, record: VersionedRecord<Old.Value>)]
        do {
            rows = try await options.retrying(core.clock) {
                try await core.storeSpan(.old, .listKeys) {
                    try await core.old.versionedRecords(after: cursor, limit: limit)
                }
            }
        } catch {
            throw ZDDMError.store(.old, .listKeys, error)
        }
        let keys = rows.map(\.key)
        let (end, atEnd) = try cut(keys, through: last)
        return Page(keys: Array(keys[..<end]), records: end == rows.count ? rows : Array(rows[..<end]), atEnd: atEnd)
    }

    /// How much of a page belongs to the chunk ending at `last`, and whether the chunk ends with it.
    private func cut(_ page: [Key], through last: Key) throws -> (end: Int, atEnd: Bool) {
        guard let final = page.last else { return (0, true) }
        guard let pastEnd = core.old.listsKey(last, before: final) else {
            throw ZDDMError(
                .unsupported,
                role: .old,
                operation: .listKeys,
                message: "Old cannot compare keys in its listing order, which a chunked backfill needs"
            )
        }
        if !pastEnd { return (page.count, page.count < options.batchSize || final == last) }
        return (page.firstIndex { core.old.listsKey(last, before: $0) == true } ?? page.count, true)
    }

    /// One worker: claims chunks and copies them until none is left or the run stops.
    private func work(as worker: String) async throws {
        while !stopping() {
            try await waitForNewTraffic()
            if stopping() { return }
            guard
                let claim = try await coordinated({
                    try await self.coordinator.claim(self.run, worker: worker, lease: self.options.leaseDuration)
                })
            else {
                let status = try await coordinated { try await self.coordinator.status(self.run) }
                if status?.finished ?? true { return }
                // Other workers hold the rest; one of them may die, and its chunks come back when its lease expires.
                try? await core.clock.sleep(for: options.idlePollInterval)
                continue
            }
            if claim.claims > 1 {
                core.logger.info(
                    "backfill chunk claimed again",
                    metadata: [
                        "zddm.backfill": "\(run)", "zddm.chunk": "\(claim.chunk)", "zddm.claims": "\(claim.claims)",
                    ]
                )
            }
            do {
                try await copy(claim)
            } catch {
                // This worker failed (Old unreadable, New failing past its attempts): the chunk goes back at once,
                // with its checkpoint, to another worker or the next pass, instead of when its lease expires.
                await release(claim)
                throw error
            }
        }
    }

    private func waitForNewTraffic() async throws {
        while !core.isNewTrafficAllowed, !stopping() {
            try? await core.clock.sleep(for: options.pollInterval)
        }
    }

    /// Copies one claimed chunk from its checkpoint to its end, batch by batch; the next batch is read from Old
    /// (its keys, and with versions its records) while the current one is written into New.
    private func copy(_ claim: BackfillChunkClaim<Key>) async throws {
        let last = claim.range.through
        var page = try await batch(after: claim.cursor ?? claim.range.after, through: last)
        while true {
            let keys = page.keys
            guard let batchEnd = keys.last else {
                try await finish(claim)
                return
            }
            if stopping() || !core.isNewTrafficAllowed {
                await release(claim)
                return
            }
            if !(try await waitOutBackPressure(holding: claim)) { return }
            let rows = keys.count
            if try await isLimited() {
                let wait = try await coordinated { try await self.coordinator.throttle(self.run, rows: rows) }
                if wait > .zero, !(try await sleep(for: wait, holding: claim)) { return }
            }
            let following: Task<Page, any Error>? =
                page.atEnd ? nil : Task { try await self.batch(after: batchEnd, through: last) }
            let result: MigrationCore<Old, New>.BatchCopyResult
            let began = core.clock.now
            do {
                let core = core
                let batch = keys
                let records = page.records
                result = try await core.traced("zddm.backfill.batch") { span in
                    span?.attributes["zddm.batch.size"] = batch.count
                    let result = try await self.options.retrying(core.clock) {
                        if let records { try await core.copyRecords(records) } else { try await core.copyBatch(batch) }
                    }
                    span?.attributes["zddm.batch.copied"] = result.copied
                    return result
                }
            } catch {
                following?.cancel()
                throw error
            }
            let copied = result.copied + result.tombstones
            let saved = try await coordinated {
                try await self.coordinator.checkpoint(
                    claim,
                    cursor: batchEnd,
                    scanned: rows,
                    copied: copied,
                    lease: self.options.leaseDuration
                )
            }
            guard saved else {
                following?.cancel()
                core.logger.warning(
                    "backfill chunk was taken over by another worker (this one's lease expired); leaving it",
                    metadata: ["zddm.backfill": "\(run)", "zddm.chunk": "\(claim.chunk)"]
                )
                return
            }
            record(result, scanned: keys.count)
            if let threshold = options.maxNewLatency, core.clock.now - began > threshold {
                try? await core.clock.sleep(for: options.latencyPause)
            }
            guard let following else {
                try await finish(claim)
                return
            }
            page = try await following.value
        }
    }

    /// Whether the run has a rate limit, so that a batch must go through the shared throttle: a run without one
    /// is read again after ``limitRereadInterval``, a run with one throttles every batch.
    private func isLimited() async throws -> Bool {
        let now = core.clock.now
        if let known = limit.withLock({ $0 }), known.limited || now - known.readAt < Self.limitRereadInterval {
            return known.limited
        }
        let info = try await coordinated { try await self.coordinator.runInfo(self.run) }
        let limited = info?.maxRowsPerSecond != nil
        limit.withLock { $0 = (limited, now) }
        return limited
    }

    private func finish(_ claim: BackfillChunkClaim<Key>) async throws {
        let completed = try await coordinated { try await self.coordinator.complete(claim, scanned: 0, copied: 0) }
        if !completed {
            core.logger.warning(
                "backfill chunk was taken over by another worker before it could be completed",
                metadata: ["zddm.backfill": "\(run)", "zddm.chunk": "\(claim.chunk)"]
            )
        }
    }

    private func release(_ claim: BackfillChunkClaim<Key>) async {
        // Best effort: a chunk not released comes back when its lease expires.
        do {
            try await coordinator.release(claim)
        } catch {
            core.logger.warning(
                "could not release a backfill chunk; it comes back when its lease expires",
                metadata: [
                    "zddm.backfill": "\(run)", "zddm.chunk": "\(claim.chunk)",
                    "zddm.error": "\(ZDDMError.describe(error))",
                ]
            )
        }
    }

    /// Pauses while New asks for it (``BackfillOptions/backPressure``), keeping the chunk.
    /// - Returns: `false` when the chunk was taken over, or the run stopped (the chunk was released).
    private func waitOutBackPressure(holding claim: BackfillChunkClaim<Key>) async throws -> Bool {
        guard let backPressure = options.backPressure else { return true }
        var logged = false
        while (try? await backPressure()) == true {
            if stopping() {
                await release(claim)
                return false
            }
            if !logged {
                logged = true
                core.logger.notice(
                    "backfill pausing: New asks for back-pressure",
                    metadata: ["zddm.backfill": "\(run)"]
                )
            }
            if !(try await sleep(for: options.latencyPause, holding: claim)) { return false }
            let held = try await coordinated {
                try await self.coordinator.renew(claim, lease: self.options.leaseDuration)
            }
            if !held { return false }
        }
        return true
    }

    /// Sleeps for a throttle's wait, renewing the claim's lease meanwhile.
    /// - Returns: `false` when the chunk was taken over, or the run stopped (the chunk was released).
    private func sleep(for wait: Duration, holding claim: BackfillChunkClaim<Key>) async throws -> Bool {
        var left = wait
        let slice = options.leaseDuration / 3
        while left > .zero {
            let step = min(left, slice)
            do {
                try await core.clock.sleep(for: step)
            } catch {
                await release(claim)
                return false
            }
            left -= step
            if left > .zero {
                let held = try await coordinated {
                    try await self.coordinator.renew(claim, lease: self.options.leaseDuration)
                }
                if !held { return false }
            }
        }
        return true
    }

    private func record(_ result: MigrationCore<Old, New>.BatchCopyResult, scanned: Int) {
        let now = core.clock.now
        let progress = tally.withLock { tally in
            tally.progress.rowsScanned += scanned
            tally.progress.rowsCopied += result.copied
            tally.progress.deletionsCopied += result.tombstones
            tally.progress.rowsSkipped += result.skipped
            tally.progress.rowsPresent += result.present
            tally.progress.rowsHeldBack += result.heldBack
            tally.progress.elapsed = now - (tally.started ?? now)
            let seconds =
                Double(tally.progress.elapsed.components.seconds)
                + Double(tally.progress.elapsed.components.attoseconds) / 1e18
            tally.progress.rowsPerSecond = seconds > 0 ? Double(tally.progress.rowsScanned) / seconds : 0
            return tally.progress
        }
        onProgress?(progress)
    }

    /// Runs a coordinator call, retrying failures with a delay that doubles up to 5 seconds, for as long as the
    /// run is not stopped: a coordinator that is unreachable for a while makes workers wait, not fail.
    private func coordinated<R: Sendable>(_ body: @Sendable () async throws -> R) async throws -> R {
        try await CoordinatorRetry(
            run: run,
            kind: "backfill",
            firstDelay: options.retryDelay,
            clock: core.clock,
            logger: core.logger
        )(body)
    }
}
