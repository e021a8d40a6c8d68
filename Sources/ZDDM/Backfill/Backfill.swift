public import ServiceLifecycle

/// Copies cold keys (never read or written through the proxy) from Old into New, as a long-running `Service`.
///
/// It walks Old's keys in the store's order, in batches, and copies each batch with insert-if-absent, so it never
/// overwrites what live traffic wrote and never resurrects a tombstone. It copies only the keys the proxy's gate
/// admits when their batch is processed; keys admitted later (after the rate goes up) are copied by read-through,
/// or by running the backfill again: a checkpoint made at a lower rate is not resumed, the pass starts over (copies
/// are idempotent). While the killswitch is on it waits, touching nothing.
///
/// After every batch (with all batches before it) it saves a checkpoint; a run that crashed or was stopped resumes
/// from there. On cancellation or graceful shutdown it stops reading new batches, finishes the batches in hand,
/// saves the checkpoint and returns. Failed batches are retried with backoff; a batch that keeps failing ends the
/// run with the error (the checkpoint stays at the last complete batch).
///
/// Batches go through the migration's safety memory like read-through fills, so a backfill built on the same
/// ``MigrationCore`` as the service's proxy is safe against every race the proxy handles. A backfill in another process is safe against
/// writes that go to New; run verify afterwards if the rate went down or the killswitch was used meanwhile.
public final class Backfill<Old: KeyValueStore, New: KeyValueStore, Checkpoints: BackfillCheckpointStore>: Service
where
    Old.Key == New.Key,
    Old.Value == New.Value,
    Old.Key: GateKey,
    Old.Key: Codable,
    Checkpoints.Key == Old.Key
{
    public typealias Key = Old.Key

    /// The checkpoint's name.
    public let name: String
    private let core: MigrationCore<Old, New>
    private let checkpoints: Checkpoints
    private let options: BackfillOptions
    private let onProgress: (@Sendable (BackfillProgress) -> Void)?

    /// Creates a backfill.
    /// - Parameters:
    ///   - core: The migration's stores, gate, safety memory, metrics and clock (``MigrationProxy/core`` when the
    ///     process also serves traffic).
    ///   - checkpoints: Where checkpoints are kept.
    ///   - name: The checkpoint's name; by default the migration's name.
    ///   - options: Batching, throttling and retries.
    ///   - onProgress: Called after every batch and at the end.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for a batch size, concurrency, rate or
    ///   attempt count below 1, or ``ZDDMError/Code/unsupported`` when Old cannot list its keys.
    public init(
        core: MigrationCore<Old, New>,
        checkpoints: Checkpoints,
        name: String? = nil,
        options: BackfillOptions = BackfillOptions(),
        onProgress: (@Sendable (BackfillProgress) -> Void)? = nil
    ) throws {
        try options.validate(old: core.old)
        self.core = core
        self.checkpoints = checkpoints
        self.name = name ?? core.name
        self.options = options
        self.onProgress = onProgress
    }

    /// Creates a backfill sharing a proxy's core (its stores, gate and safety memory).
    /// - Parameters:
    ///   - proxy: The migration's proxy.
    ///   - checkpoints: Where checkpoints are kept.
    ///   - name: The checkpoint's name; by default the migration's name.
    ///   - options: Batching, throttling and retries.
    ///   - onProgress: Called after every batch and at the end.
    /// - Throws: As ``init(core:checkpoints:name:options:onProgress:)``.
    public convenience init(
        proxy: MigrationProxy<Old, New>,
        checkpoints: Checkpoints,
        name: String? = nil,
        options: BackfillOptions = BackfillOptions(),
        onProgress: (@Sendable (BackfillProgress) -> Void)? = nil
    ) throws {
        try self.init(core: proxy.core, checkpoints: checkpoints, name: name, options: options, onProgress: onProgress)
    }

    private struct Completed: Sendable {
        var sequence: Int
        var lastKey: Key
        var scanned: Int
        var result: MigrationCore<Old, New>.BatchCopyResult
    }

    /// Runs the backfill to the end of Old's keys, or until cancelled or shut down gracefully.
    /// - Throws: ``ZDDMError`` when a batch keeps failing or a checkpoint cannot be saved.
    public func run() async throws {
        _ = try await runPass()
    }

    /// Runs the backfill like ``run()`` and returns the final progress.
    /// - Returns: The progress at the end; ``BackfillProgress/finished`` tells whether the pass completed.
    /// - Throws: ``ZDDMError`` when a batch keeps failing or a checkpoint cannot be saved.
    @discardableResult
    public func runPass() async throws -> BackfillProgress {
        let gate = core.gate
        let startRate = gate.rate
        var checkpoint = try await checkpoints.load(name: name)
        if options.restart { checkpoint = nil }
        if let previous = checkpoint, previous.rate < startRate {
            core.logger.info(
                "rate went up since the last backfill pass; starting over",
                metadata: ["zddm.backfill": "\(name)"]
            )
            checkpoint = nil
        }
        var state =
            checkpoint
            ?? BackfillCheckpoint(cursor: nil, rate: startRate, rowsScanned: 0, rowsCopied: 0, finished: false)
        var progress = BackfillProgress(
            rowsScanned: state.rowsScanned,
            rowsCopied: state.rowsCopied,
            rowsSkipped: 0,
            rowsPresent: 0,
            rowsHeldBack: 0,
            rowsPerSecond: 0,
            expectedTotal: options.expectedTotal,
            elapsed: .zero,
            finished: state.finished
        )
        if state.finished {
            onProgress?(progress)
            return progress
        }
        core.logger.info("backfill starting", metadata: ["zddm.backfill": "\(name)"])
        let clock = core.clock
        let started = clock.now
        let scannedAtStart = state.rowsScanned
        let limiter = options.maxRowsPerSecond.map { RateLimiter(unitsPerSecond: $0, clock: clock) }
        let options = self.options
        let core = self.core

        func stopping() -> Bool { Task.isCancelled || Task.isShuttingDownGracefully }

        try await withThrowingTaskGroup(of: Completed.self) { group in
            var cursor = state.cursor
            var sequence = 0
            var committed = 0
            var inFlight = 0
            var pending: [Int: Completed] = [:]
            var endOfKeys = false

            func absorb(_ done: Completed) async throws {
                inFlight -= 1
                pending[done.sequence] = done
                progress.rowsSkipped += done.result.skipped
                progress.rowsPresent += done.result.present
                progress.rowsHeldBack += done.result.heldBack
                progress.rowsCopied += done.result.copied
                progress.deletionsCopied += done.result.tombstones
                while let next = pending.removeValue(forKey: committed + 1) {
                    committed += 1
                    state.cursor = next.lastKey
                    state.rowsScanned += next.scanned
                    state.rowsCopied += next.result.copied
                }
                state.finished = endOfKeys && inFlight == 0 && pending.isEmpty
                try await checkpoints.save(state, name: name)
                progress.rowsScanned = state.rowsScanned
                progress.elapsed = clock.now - started
                let seconds =
                    Double(progress.elapsed.components.seconds)
                    + Double(progress.elapsed.components.attoseconds) / 1e18
                progress.rowsPerSecond = seconds > 0 ? Double(state.rowsScanned - scannedAtStart) / seconds : 0
                progress.finished = state.finished
                onProgress?(progress)
            }

            while !endOfKeys, !stopping() {
                while !core.isNewTrafficAllowed, !stopping() {
                    try? await clock.sleep(for: options.pollInterval)
                }
                if stopping() { break }
                let keys: [Key]
                do {
                    keys = try await options.retrying(clock) {
                        try await core.storeSpan(.old, .listKeys) {
                            // With versions, keys Old deleted too: New gets their tombstones.
                            core.usesVersions
                                ? try await core.old.keysIncludingDeleted(after: cursor, limit: options.batchSize)
                                : try await core.old.keys(after: cursor, limit: options.batchSize)
                        }
                    }
                } catch {
                    if stopping() { break }
                    throw ZDDMError.store(.old, .listKeys, error)
                }
                guard let last = keys.last else {
                    endOfKeys = true
                    break
                }
                if keys.count < options.batchSize { endOfKeys = true }
                do {
                    try await limiter?.acquire(keys.count)
                } catch is CancellationError {
                    break
                }
                if let backPressure = options.backPressure {
                    while (try? await backPressure()) == true, !stopping() {
                        try? await clock.sleep(for: options.latencyPause)
                    }
                }
                if inFlight >= options.batchesInFlight, let done = try await group.next() {
                    try await absorb(done)
                }
                sequence += 1
                inFlight += 1
                let batch = sequence
                group.addTask {
                    let began = clock.now
                    let result = try await core.traced("zddm.backfill.batch") { span in
                        span?.attributes["zddm.batch.size"] = keys.count
                        let result = try await options.retrying(clock) { try await core.copyBatch(keys) }
                        span?.attributes["zddm.batch.copied"] = result.copied
                        return result
                    }
                    if let threshold = options.maxNewLatency, clock.now - began > threshold {
                        try? await clock.sleep(for: options.latencyPause)
                    }
                    return Completed(sequence: batch, lastKey: last, scanned: keys.count, result: result)
                }
                cursor = last
            }
            while let done = try await group.next() {
                try await absorb(done)
            }
            if endOfKeys, !state.finished {
                // An empty Old, or a last page that was exactly full: nothing left in flight.
                state.finished = true
                try await checkpoints.save(state, name: name)
            }
        }
        progress.finished = state.finished
        progress.rowsScanned = state.rowsScanned
        progress.elapsed = clock.now - started
        onProgress?(progress)
        core.logger.info(
            state.finished ? "backfill finished" : "backfill stopped; checkpoint saved",
            metadata: ["zddm.backfill": "\(name)", "zddm.rows_scanned": "\(state.rowsScanned)"]
        )
        return progress
    }
}

/// How a ``Backfill`` runs.
public struct BackfillOptions: Sendable {
    /// Keys per batch.
    public var batchSize: Int = 500
    /// Batches copied at the same time.
    public var batchesInFlight: Int = 2
    /// The most rows scanned per second, or `nil` for no limit.
    public var maxRowsPerSecond: Double?
    /// When a batch's copy into New takes longer than this, pause for ``latencyPause`` before the next.
    public var maxNewLatency: Duration?
    /// The pause after a slow batch.
    public var latencyPause: Duration = .seconds(1)
    /// Back-pressure from New: asked before every batch; while it answers `true` the backfill pauses (for
    /// ``latencyPause`` at a time, keeping its chunk), for example while New's replicas lag too far behind
    /// (`PostgresDatabase.replicationLag()`). An error counts as `false`: the signal is advisory.
    public var backPressure: (@Sendable () async throws -> Bool)?
    /// Attempts per batch before the run fails. An error that says retrying cannot cure it (a missing table or
    /// permission, see ``RetryableError``) fails the run at its first attempt.
    public var maxAttempts: Int = 5
    /// The first retry's delay; it doubles with each attempt.
    public var retryDelay: Duration = .milliseconds(100)
    /// The expected number of rows, for progress and ETA.
    public var expectedTotal: Int?
    /// Start a new pass from the first key even when the checkpoint says the last one finished (or stopped).
    public var restart = false
    /// How often a backfill waiting for New traffic to come back on looks again.
    public var pollInterval: Duration = .milliseconds(100)

    /// A chunked run (``ChunkedBackfill``): workers in this process, each copying one chunk at a time.
    public var workers: Int = 1
    /// A chunked run: keys per chunk when the run is planned (many more chunks than workers let work spread evenly
    /// and lose little when a worker dies).
    public var chunkRows: Int = 10_000
    /// A chunked run: how long a claimed chunk stays a worker's without a checkpoint; after that any worker may
    /// rescue it. Each committed batch renews it.
    public var leaseDuration: Duration = .seconds(30)
    /// A chunked run: this process's workers' names are this name followed by `-1`, `-2`, …; by default the host
    /// name and process identifier.
    public var workerName: String?
    /// A chunked run: how often a worker with no chunk to claim looks again while other workers finish theirs.
    public var idlePollInterval: Duration = .seconds(1)
    /// A chunked run: what it covers, recorded when it is planned (``BackfillRunPlan/scope``); a worker whose scope
    /// differs is refused. By default the migration's name.
    public var runScope: String?

    /// Creates options with the defaults.
    public init() {}
}

extension BackfillOptions {
    /// Checks the options every backfill uses, and that Old can list its keys in order.
    func validate(old: some KeyValueStore) throws {
        guard batchSize >= 1 else {
            throw ZDDMError(.invalidArgument, message: "batch size must be at least 1, got \(batchSize)")
        }
        guard batchesInFlight >= 1 else {
            throw ZDDMError(.invalidArgument, message: "batches in flight must be at least 1")
        }
        if let rate = maxRowsPerSecond, !(rate > 0) {
            throw ZDDMError(.invalidArgument, message: "max rows per second must be above 0, got \(rate)")
        }
        guard maxAttempts >= 1 else {
            throw ZDDMError(.invalidArgument, message: "max attempts must be at least 1")
        }
        guard old.capabilities.contains(.orderedKeys) else {
            throw ZDDMError(.unsupported, role: .old, operation: .listKeys, message: "backfill needs ordered keys")
        }
    }

    /// Runs `body`, retrying failures with a delay that doubles, up to ``maxAttempts`` attempts; an error that
    /// says it is not retryable (``RetryableError``) is thrown at once.
    func retrying<R: Sendable>(_ clock: MigrationClock, _ body: () async throws -> R) async throws -> R {
        var delay = retryDelay
        var attempt = 1
        while true {
            do {
                return try await body()
            } catch {
                if attempt >= maxAttempts || Task.isCancelled || !ZDDMError.isRetryable(error) { throw error }
                attempt += 1
                try await clock.sleep(for: delay)
                delay *= 2
            }
        }
    }
}
