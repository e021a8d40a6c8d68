/// One chunk of a backfill run: the keys after ``after`` (from the first key when `nil`) up to and including
/// ``through``, in the order Old lists its keys.
public struct BackfillChunkRange<Key: Sendable>: Sendable {
    /// The last key of the chunk before, or `nil` for the first chunk.
    public var after: Key?
    /// The chunk's last key.
    public var through: Key
    /// How many keys the chunk held when the run was planned.
    public var plannedRows: Int

    /// Creates a chunk range.
    public init(after: Key?, through: Key, plannedRows: Int) {
        self.after = after
        self.through = through
        self.plannedRows = plannedRows
    }
}

/// What a run was started with; every worker that joins must agree with it.
public struct BackfillRunPlan<Key: Sendable>: Sendable {
    /// The run's name.
    public var run: String
    /// The gate's rate the run copies for.
    public var rate: Double
    /// Whether the run copies with versions (fenced writes).
    public var usesVersions: Bool
    /// The most rows per second for the whole run, shared by every worker; `nil` for no limit.
    public var maxRowsPerSecond: Double?
    /// The chunks, in key order, each starting after the one before ends.
    public var chunks: [BackfillChunkRange<Key>]
    /// For a verify run in a fleet: the fleet's ``FleetState/behind`` read before the run was planned, which a
    /// clean run records as the start of its pass; `nil` otherwise.
    public var fleetMark: UInt64?
    /// What the run covers (by default the migration's name; for a verify run also whether it is deep and
    /// repairs): a worker whose scope differs is refused. `nil` accepts every worker.
    public var scope: String?

    /// Creates a plan.
    public init(
        run: String,
        rate: Double,
        usesVersions: Bool,
        maxRowsPerSecond: Double?,
        chunks: [BackfillChunkRange<Key>],
        fleetMark: UInt64? = nil,
        scope: String? = nil
    ) {
        self.run = run
        self.rate = rate
        self.usesVersions = usesVersions
        self.maxRowsPerSecond = maxRowsPerSecond
        self.chunks = chunks
        self.fleetMark = fleetMark
        self.scope = scope
    }
}

/// What a coordinator knows of a run's settings.
public struct BackfillRunInfo: Sendable, Equatable {
    /// The run's name.
    public var run: String
    /// The gate's rate the run copies for.
    public var rate: Double
    /// Whether the run copies with versions.
    public var usesVersions: Bool
    /// The shared limit of rows per second, if any.
    public var maxRowsPerSecond: Double?
    /// How many chunks the run has.
    public var chunks: Int
    /// The plan's ``BackfillRunPlan/fleetMark``.
    public var fleetMark: UInt64?
    /// The plan's ``BackfillRunPlan/scope``.
    public var scope: String?

    /// Creates run information.
    public init(
        run: String,
        rate: Double,
        usesVersions: Bool,
        maxRowsPerSecond: Double?,
        chunks: Int,
        fleetMark: UInt64? = nil,
        scope: String? = nil
    ) {
        self.run = run
        self.rate = rate
        self.usesVersions = usesVersions
        self.maxRowsPerSecond = maxRowsPerSecond
        self.chunks = chunks
        self.fleetMark = fleetMark
        self.scope = scope
    }
}

/// A chunk a worker holds: its range, where it got to, and the fencing token that proves the worker still owns it.
public struct BackfillChunkClaim<Key: Sendable>: Sendable {
    /// The run's name.
    public var run: String
    /// The chunk's number, from 0 in key order.
    public var chunk: Int
    /// The chunk's keys.
    public var range: BackfillChunkRange<Key>
    /// The last key of the chunk's last committed batch, or `nil` when none was committed yet.
    public var cursor: Key?
    /// The fencing token: it grows with every claim of the chunk, and only its holder may save or complete it.
    public var token: UInt64
    /// How many times the chunk was claimed, this claim included (above 1: it was released or rescued).
    public var claims: Int

    /// Creates a claim.
    public init(
        run: String,
        chunk: Int,
        range: BackfillChunkRange<Key>,
        cursor: Key?,
        token: UInt64,
        claims: Int
    ) {
        self.run = run
        self.chunk = chunk
        self.range = range
        self.cursor = cursor
        self.token = token
        self.claims = claims
    }
}

/// One progress line for a whole run, across every worker on every machine.
public struct BackfillRunStatus: Sendable, Codable, Equatable {
    /// The run's name.
    public var run: String
    /// The gate's rate the run copies for.
    public var rate: Double
    /// Chunks in the run.
    public var chunks: Int
    /// Chunks completed.
    public var done: Int
    /// Chunks held by a worker whose lease has not expired.
    public var inFlight: Int
    /// Chunks waiting for a worker (never claimed, released, or held under an expired lease).
    public var waiting: Int
    /// Rows the chunks held when the run was planned.
    public var plannedRows: Int
    /// Rows read from Old in committed batches.
    public var rowsScanned: Int
    /// Rows copied into New in committed batches; in a verify run (``ChunkedVerify``), mismatches found.
    public var rowsCopied: Int
    /// Distinct workers that hold or completed a chunk.
    public var workersSeen: Int
    /// Seconds from the run's creation to now, or to its last completion once finished, by the coordinator's clock.
    public var elapsedSeconds: Double

    /// Creates a status.
    public init(
        run: String,
        rate: Double,
        chunks: Int,
        done: Int,
        inFlight: Int,
        waiting: Int,
        plannedRows: Int,
        rowsScanned: Int,
        rowsCopied: Int,
        workersSeen: Int,
        elapsedSeconds: Double
    ) {
        self.run = run
        self.rate = rate
        self.chunks = chunks
        self.done = done
        self.inFlight = inFlight
        self.waiting = waiting
        self.plannedRows = plannedRows
        self.rowsScanned = rowsScanned
        self.rowsCopied = rowsCopied
        self.workersSeen = workersSeen
        self.elapsedSeconds = elapsedSeconds
    }

    /// Whether every chunk is done.
    public var finished: Bool { done == chunks }

    /// Rows scanned per second since the run was created.
    public var rowsPerSecond: Double { elapsedSeconds > 0 ? Double(rowsScanned) / elapsedSeconds : 0 }

    /// Seconds left at the run's average speed, or `nil` before any row was scanned.
    public var etaSeconds: Double? {
        if finished { return 0 }
        guard rowsPerSecond > 0 else { return nil }
        return Double(max(0, plannedRows - rowsScanned)) / rowsPerSecond
    }

    /// The progress line `zddm backfill status` prints.
    public var line: String {
        let eta = etaSeconds.map { Self.seconds($0) } ?? "unknown"
        let percent = plannedRows > 0 ? min(100, Double(rowsScanned) * 100 / Double(plannedRows)) : 100
        return "run \(run): \(rowsScanned)/\(plannedRows) rows (\(Self.fixed(percent, 1))%), "
            + "\(rowsCopied) copied, \(Self.fixed(rowsPerSecond, 0)) rows/s, ETA \(eta); chunks \(done) done, "
            + "\(inFlight) in flight, \(waiting) waiting of \(chunks); \(workersSeen) workers seen"
            + (finished ? "; finished" : "")
    }

    /// The progress line `zddm verify status` prints for a verify run (``ChunkedVerify``): keys compared (of
    /// the keys Old held when the run was planned) and mismatches found.
    public var verifyLine: String {
        let eta = etaSeconds.map { Self.seconds($0) } ?? "unknown"
        let percent = plannedRows > 0 ? min(100, Double(rowsScanned) * 100 / Double(plannedRows)) : 100
        return "run \(run): \(rowsScanned)/\(plannedRows) keys compared (\(Self.fixed(percent, 1))%), "
            + "\(rowsCopied) mismatches, \(Self.fixed(rowsPerSecond, 0)) keys/s, ETA \(eta); chunks \(done) done, "
            + "\(inFlight) in flight, \(waiting) waiting of \(chunks); \(workersSeen) workers seen"
            + (finished ? "; finished" : "")
    }

    private static func fixed(_ value: Double, _ digits: Int) -> String {
        guard value.isFinite else { return "0" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        return digits == 0 ? String(Int(rounded)) : String(rounded)
    }

    private static func seconds(_ value: Double) -> String {
        let total = Int(value.rounded())
        if total < 60 { return "\(total)s" }
        if total < 3600 { return "\(total / 60)m\(total % 60)s" }
        return "\(total / 3600)h\((total % 3600) / 60)m"
    }
}

/// Where a chunked backfill's runs and chunks live, shared by every worker of a run (see ``ChunkedBackfill``).
///
/// Implementations must make each method atomic: two workers never hold the same chunk under the same token, a
/// chunk's token grows with every claim, and ``checkpoint(_:cursor:scanned:copied:lease:)``,
/// ``complete(_:scanned:copied:)`` and ``release(_:)`` change a chunk only while it is still held under the claim's
/// token. A worker whose lease expired may be overtaken: another worker claims the chunk under a new token and the
/// old holder's next save fails, so a chunk is completed at most once. PostgreSQL's `PostgresBackfillCoordinator`
/// claims with `FOR UPDATE SKIP LOCKED`; `InMemoryBackfillCoordinator` (in ZDDMTesting) serves one process.
public protocol BackfillCoordinator<Key>: Sendable {
    /// The key type of the chunks' bounds.
    associatedtype Key: Codable & Sendable

    /// Creates a run with its chunks, unless a run of that name exists.
    /// - Parameter plan: The run's settings and chunks.
    /// - Returns: `true` when this call created the run, `false` when it existed (nothing is changed).
    /// - Throws: When the coordinator fails.
    func createRun(_ plan: BackfillRunPlan<Key>) async throws -> Bool

    /// Reads a run's settings.
    /// - Parameter run: The run's name.
    /// - Returns: The settings, or `nil` when there is no such run.
    /// - Throws: When the coordinator fails, or the run was written by a newer version of this library.
    func runInfo(_ run: String) async throws -> BackfillRunInfo?

    /// Claims a chunk that is waiting, or whose holder's lease expired, for a worker.
    /// - Parameters:
    ///   - run: The run's name.
    ///   - worker: The worker's name, recorded as the chunk's owner.
    ///   - lease: How long the claim holds without a checkpoint.
    /// - Returns: The claim, or `nil` when no chunk is free.
    /// - Throws: When the coordinator fails.
    func claim(_ run: String, worker: String, lease: Duration) async throws -> BackfillChunkClaim<Key>?

    /// Saves a chunk's checkpoint after a batch committed, and renews the lease.
    /// - Parameters:
    ///   - claim: The claim.
    ///   - cursor: The batch's last key.
    ///   - scanned: Rows the batch read from Old.
    ///   - copied: Rows the batch copied into New.
    ///   - lease: The renewed lease's length.
    /// - Returns: `false` when the chunk is no longer held under the claim's token (nothing is saved).
    /// - Throws: When the coordinator fails.
    func checkpoint(
        _ claim: BackfillChunkClaim<Key>,
        cursor: Key,
        scanned: Int,
        copied: Int,
        lease: Duration
    ) async throws -> Bool

    /// Renews a claim's lease without saving anything.
    /// - Parameters:
    ///   - claim: The claim.
    ///   - lease: The renewed lease's length.
    /// - Returns: `false` when the chunk is no longer held under the claim's token.
    /// - Throws: When the coordinator fails.
    func renew(_ claim: BackfillChunkClaim<Key>, lease: Duration) async throws -> Bool

    /// Marks a chunk done, adding the last batch's counts.
    /// - Parameters:
    ///   - claim: The claim.
    ///   - scanned: Rows scanned since the last checkpoint.
    ///   - copied: Rows copied since the last checkpoint.
    /// - Returns: `false` when the chunk is no longer held under the claim's token (it is not marked done).
    /// - Throws: When the coordinator fails.
    func complete(_ claim: BackfillChunkClaim<Key>, scanned: Int, copied: Int) async throws -> Bool

    /// Gives a chunk back (it keeps its checkpoint) so that any worker may claim it at once.
    /// - Parameter claim: The claim.
    /// - Throws: When the coordinator fails.
    func release(_ claim: BackfillChunkClaim<Key>) async throws

    /// Reads a run's progress.
    /// - Parameter run: The run's name.
    /// - Returns: The progress, or `nil` when there is no such run.
    /// - Throws: When the coordinator fails.
    func status(_ run: String) async throws -> BackfillRunStatus?

    /// Takes `rows` from the run's shared budget of rows per second.
    /// - Parameters:
    ///   - run: The run's name.
    ///   - rows: Rows about to be copied.
    /// - Returns: How long to wait before copying them (zero when the run has no limit).
    /// - Throws: When the coordinator fails.
    func throttle(_ run: String, rows: Int) async throws -> Duration

    /// Changes a run's shared limit of rows per second.
    /// - Parameters:
    ///   - run: The run's name.
    ///   - maxRowsPerSecond: The new limit, or `nil` for none.
    /// - Returns: `false` when there is no such run.
    /// - Throws: When the coordinator fails.
    func setMaxRowsPerSecond(_ run: String, _ maxRowsPerSecond: Double?) async throws -> Bool
}
