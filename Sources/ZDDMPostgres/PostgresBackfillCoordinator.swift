import Foundation
import PostgresNIO
public import ZDDM
public import ZDDMSQL

/// A ``ZDDM/BackfillCoordinator`` in two PostgreSQL tables that every worker of a run reaches (New's database or
/// Old's): workers on any number of machines share a run's chunks through it.
///
/// `<prefix>_runs` has one row per run (its settings, its coordination format, its creation time and the shared
/// throttle's next free slot); `<prefix>_chunks` one row per chunk:
///
/// | column | holds |
/// | --- | --- |
/// | `run`, `chunk` | the primary key |
/// | `after_key`, `through_key` | the chunk's bounds, as JSON of the key |
/// | `planned_rows` | keys in the chunk when the run was planned |
/// | `done` | whether the chunk was completed |
/// | `owner`, `token`, `lease_expires` | the worker holding it, its fencing token, and when its lease ends |
/// | `cursor_key` | the checkpoint: the last key of the last committed batch |
/// | `rows_scanned`, `rows_copied` | counts of committed batches |
/// | `claims`, `completions` | how often the chunk was claimed and completed (never more than once) |
///
/// A claim is one statement: it picks the first chunk that is not done and not under a live lease with
/// `FOR UPDATE SKIP LOCKED` (so workers never wait for each other or take the same chunk), raises its token and
/// sets the lease. Saves, renewals, completions and releases are one `UPDATE` each that matches only the claim's
/// chunk under the claim's token, while it is held. Leases are measured by the server's `clock_timestamp()`, so
/// workers on different machines agree whatever their own clocks say. The throttle is one `UPDATE` of the run's
/// row that moves its next free slot, so the limit holds across every worker of the run.
///
/// Each run records the coordination format it was written in; a run written by a newer version of this library
/// is refused with ``ZDDM/ZDDMError/Code/unsupported`` rather than misread.
public struct PostgresBackfillCoordinator<Key: Codable & Sendable>: BackfillCoordinator, CustomStringConvertible {
    /// The coordination format this version writes and reads.
    public static var format: Int { BackfillCoordination.format }

    /// The database holding the tables.
    public let database: PostgresDatabase
    /// The runs table.
    public let runsTable: SQLIdentifier
    /// The chunks table.
    public let chunksTable: SQLIdentifier
    private let sql: Statements

    /// Describes the coordinator; nothing runs until a method is called.
    /// - Parameters:
    ///   - database: The database every worker reaches.
    ///   - prefix: The tables' prefix: `<prefix>_runs` and `<prefix>_chunks`; `zddm_backfill` by default.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for an invalid prefix.
    public init(database: PostgresDatabase, prefix: String = "zddm_backfill") throws {
        self.database = database
        self.runsTable = try SQLIdentifier(prefix + "_runs", role: "backfill coordination table prefix")
        self.chunksTable = try SQLIdentifier(prefix + "_chunks", role: "backfill coordination table prefix")
        let index = try SQLIdentifier(prefix + "_chunks_free", role: "backfill coordination table prefix")
        self.sql = Statements(runs: runsTable, chunks: chunksTable, index: index)
    }

    /// Creates the tables if they do not exist.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/storeFailed`` when PostgreSQL fails.
    public func prepare() async throws {
        try await run {
            for statement in sql.create { _ = try await database.rows(statement, PostgresBindings()) }
            // Tables made before verify runs existed lack the fleet's mark and the scope. The catalog is read
            // first: adding a column takes the table's lock and ownership, which a worker does not need otherwise.
            var binds = PostgresBindings(capacity: 1)
            binds.append(runsTable.name)
            let present = Set(try await database.rows(sql.runsColumns, binds).map { try $0.decode(String.self) })
            for (column, type) in [("fleet_mark", "bigint"), ("scope", "text")] where !present.contains(column) {
                let add = "ALTER TABLE \(runsTable.quoted) ADD COLUMN IF NOT EXISTS \(column) \(type)"
                _ = try await database.rows(add, PostgresBindings())
            }
        }
    }

    public func createRun(_ plan: BackfillRunPlan<Key>) async throws -> Bool {
        let encoder = JSONEncoder()
        let chunks = try plan.chunks.enumerated().map { index, chunk in
            (
                index: Int32(index),
                after: try chunk.after.map { try BackfillCoordination.encode($0, encoder) },
                through: try BackfillCoordination.encode(chunk.through, encoder),
                planned: Int64(chunk.plannedRows)
            )
        }
        guard chunks.count <= Int(Int32.max) else {
            throw ZDDMError(.invalidArgument, message: "a backfill run holds at most \(Int32.max) chunks")
        }
        let sql = sql
        let logger = database.logger
        return try await run {
            try await database.withTransaction { connection in
                var binds = PostgresBindings(capacity: 8)
                binds.append(plan.run)
                binds.append(Self.format)
                binds.append(plan.rate)
                binds.append(plan.usesVersions)
                binds.append(plan.maxRowsPerSecond)
                binds.append(Int32(chunks.count))
                binds.append(plan.fleetMark.map { Int64(bitPattern: $0) })
                binds.append(plan.scope)
                let created = try await connection.query(
                    PostgresQuery(unsafeSQL: sql.insertRun, binds: binds),
                    logger: logger
                ).collect()
                guard !created.isEmpty else { return false }
                var start = 0
                while start < chunks.count {
                    let part = chunks[start..<min(chunks.count, start + 5_000)]
                    var binds = PostgresBindings(capacity: 5)
                    binds.append(plan.run)
                    binds.append(part.map(\.index))
                    // JSON is never empty: an empty text stands for the first chunk's missing lower bound.
                    binds.append(part.map { $0.after ?? "" })
                    binds.append(part.map(\.through))
                    binds.append(part.map(\.planned))
                    try await connection.query(PostgresQuery(unsafeSQL: sql.insertChunks, binds: binds), logger: logger)
                    start += part.count
                }
                return true
            }
        }
    }

    public func runInfo(_ run: String) async throws -> BackfillRunInfo? {
        try await self.run {
            guard let row = try await database.rows(sql.selectRun, Self.binds(run)).first else { return nil }
            let (format, rate, versions, limit, chunks, mark, scope) = try row.decode(
                (Int, Double, Bool, Double?, Int32, Int64?, String?).self
            )
            try BackfillCoordination.check(format: format, run: run)
            return BackfillRunInfo(
                run: run,
                rate: rate,
                usesVersions: versions,
                maxRowsPerSecond: limit,
                chunks: Int(chunks),
                fleetMark: mark.map { UInt64(bitPattern: $0) },
                scope: scope
            )
        }
    }

    public func claim(_ run: String, worker: String, lease: Duration) async throws -> BackfillChunkClaim<Key>? {
        var binds = Self.binds(run)
        binds.append(worker)
        binds.append(BackfillCoordination.seconds(lease))
        return try await self.run {
            guard let row = try await database.rows(sql.claim, binds).first else { return nil }
            let (chunk, after, through, planned, cursor, token, claims) = try row.decode(
                (Int32, String?, String, Int64, String?, Int64, Int32).self
            )
            let decoder = JSONDecoder()
            return BackfillChunkClaim(
                run: run,
                chunk: Int(chunk),
                range: BackfillChunkRange(
                    after: try after.map { try BackfillCoordination.decode($0, decoder) },
                    through: try BackfillCoordination.decode(through, decoder),
                    plannedRows: Int(planned)
                ),
                cursor: try cursor.map { try BackfillCoordination.decode($0, decoder) },
                token: UInt64(bitPattern: token),
                claims: Int(claims)
            )
        }
    }

    public func checkpoint(
        _ claim: BackfillChunkClaim<Key>,
        cursor: Key,
        scanned: Int,
        copied: Int,
        lease: Duration
    ) async throws -> Bool {
        var binds = Self.binds(claim)
        binds.append(try BackfillCoordination.encode(cursor, JSONEncoder()))
        binds.append(Int64(scanned))
        binds.append(Int64(copied))
        binds.append(BackfillCoordination.seconds(lease))
        return try await run { !(try await unflushed(sql.checkpoint, binds)).isEmpty }
    }

    public func renew(_ claim: BackfillChunkClaim<Key>, lease: Duration) async throws -> Bool {
        var binds = Self.binds(claim)
        binds.append(BackfillCoordination.seconds(lease))
        return try await run { !(try await unflushed(sql.renew, binds)).isEmpty }
    }

    public func complete(_ claim: BackfillChunkClaim<Key>, scanned: Int, copied: Int) async throws -> Bool {
        var binds = Self.binds(claim)
        binds.append(Int64(scanned))
        binds.append(Int64(copied))
        return try await run { !(try await unflushed(sql.complete, binds)).isEmpty }
    }

    public func release(_ claim: BackfillChunkClaim<Key>) async throws {
        let binds = Self.binds(claim)
        try await run { _ = try await unflushed(sql.release, binds) }
    }

    public func status(_ run: String) async throws -> BackfillRunStatus? {
        try await self.run {
            guard let row = try await database.rows(sql.status, Self.binds(run)).first else { return nil }
            let (format, rate, chunks, done, inFlight, planned, scanned, copied, workers, elapsed) = try row.decode(
                (Int, Double, Int32, Int64, Int64, Int64, Int64, Int64, Int64, Double).self
            )
            try BackfillCoordination.check(format: format, run: run)
            return BackfillRunStatus(
                run: run,
                rate: rate,
                chunks: Int(chunks),
                done: Int(done),
                inFlight: Int(inFlight),
                waiting: Int(chunks) - Int(done) - Int(inFlight),
                plannedRows: Int(planned),
                rowsScanned: Int(scanned),
                rowsCopied: Int(copied),
                workersSeen: Int(workers),
                elapsedSeconds: elapsed
            )
        }
    }

    public func throttle(_ run: String, rows: Int) async throws -> Duration {
        var binds = Self.binds(run)
        binds.append(Double(rows))
        return try await self.run {
            guard let row = try await unflushed(sql.throttle, binds).first else { return .zero }
            let wait = try row.decode(Double.self)
            guard wait.isFinite, wait > 0 else { return .zero }
            return .milliseconds(Int64(min(wait, 86_400) * 1000))
        }
    }

    public func setMaxRowsPerSecond(_ run: String, _ maxRowsPerSecond: Double?) async throws -> Bool {
        if let maxRowsPerSecond, !(maxRowsPerSecond > 0) {
            throw ZDDMError(.invalidArgument, message: "max rows per second must be above 0, got \(maxRowsPerSecond)")
        }
        var binds = Self.binds(run)
        binds.append(maxRowsPerSecond)
        return try await self.run { !(try await database.rows(sql.setLimit, binds)).isEmpty }
    }

    /// What the coordinator holds about one chunk, for operators' queries and tests.
    public struct ChunkState: Sendable, Equatable {
        /// The chunk's number, from 0 in key order.
        public var chunk: Int
        /// Whether it was completed.
        public var done: Bool
        /// The worker holding it, or that held it last.
        public var owner: String?
        /// Its current fencing token.
        public var token: UInt64
        /// Whether a worker holds it under a lease that has not expired (by the server's clock).
        public var held: Bool
        /// How many times it was claimed.
        public var claims: Int
        /// How many times it was completed: never more than 1.
        public var completions: Int
        /// Keys in the chunk when the run was planned.
        public var plannedRows: Int
        /// Rows scanned in its committed batches.
        public var rowsScanned: Int
    }

    /// Every chunk of a run, in order.
    /// - Parameter run: The run's name.
    /// - Returns: One entry per chunk; none for an unknown run.
    /// - Throws: When PostgreSQL fails.
    public func chunks(of run: String) async throws -> [ChunkState] {
        try await self.run {
            try await database.rows(sql.chunkStates, Self.binds(run)).map { row in
                let (chunk, done, owner, token, held, claims, completions, planned, scanned) = try row.decode(
                    (Int32, Bool, String?, Int64, Bool, Int32, Int32, Int64, Int64).self
                )
                return ChunkState(
                    chunk: Int(chunk),
                    done: done,
                    owner: owner,
                    token: UInt64(bitPattern: token),
                    held: held,
                    claims: Int(claims),
                    completions: Int(completions),
                    plannedRows: Int(planned),
                    rowsScanned: Int(scanned)
                )
            }
        }
    }

    public var description: String {
        "PostgresBackfillCoordinator(tables \(runsTable), \(chunksTable) on \(database.location))"
    }

    // MARK: Helpers

    private static func binds(_ run: String) -> PostgresBindings {
        var binds = PostgresBindings(capacity: 8)
        binds.append(run)
        return binds
    }

    private static func binds(_ claim: BackfillChunkClaim<Key>) -> PostgresBindings {
        var binds = binds(claim.run)
        binds.append(Int32(clamping: claim.chunk))
        binds.append(Int64(bitPattern: claim.token))
        return binds
    }

    /// Runs one statement in a transaction that commits without waiting for its WAL to reach the disk
    /// (`synchronous_commit = off` for that transaction only), for saves that a crash of the server may undo
    /// harmlessly: a checkpoint, a renewal, a completion, a release or the throttle's slot. A crash loses at most
    /// the last moments of them; the chunk is then copied again from an earlier checkpoint, and every copy into New
    /// is idempotent. Claims stay durable, so a fencing token is never handed out twice.
    private func unflushed(_ statement: String, _ binds: PostgresBindings) async throws -> [PostgresRow] {
        let logger = database.logger
        return try await database.withTransaction { connection in
            try await connection.query("SET LOCAL synchronous_commit TO off", logger: logger)
            return try await connection.query(PostgresQuery(unsafeSQL: statement, binds: binds), logger: logger)
                .collect()
        }
    }

    private func run<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            if let passed = PostgresErrors.passedThrough(error) { throw passed }
            var message = "backfill coordination tables \(runsTable), \(chunksTable) on \(database.server)"
            if let hint = PostgresErrors.hint(for: error) { message += ": " + hint }
            throw ZDDMError(.storeFailed, message: message, underlying: PostgresErrors.sanitized(error))
        }
    }
}

extension PostgresBackfillCoordinator {
    /// The SQL, built once from validated, quoted names.
    struct Statements: Sendable {
        let create: [String]
        let insertRun: String
        let insertChunks: String
        let selectRun: String
        let claim: String
        let checkpoint: String
        let renew: String
        let complete: String
        let release: String
        let status: String
        let throttle: String
        let setLimit: String
        let chunkStates: String
        let runsColumns = """
            SELECT column_name::text FROM information_schema.columns \
            WHERE table_schema = current_schema() AND table_name = $1
            """

        init(runs: SQLIdentifier, chunks: SQLIdentifier, index: SQLIdentifier) {
            let r = runs.quoted
            let c = chunks.quoted
            let i = index.quoted
            create = [
                """
                CREATE TABLE IF NOT EXISTS \(r) (run text PRIMARY KEY, format integer NOT NULL, \
                rate float8 NOT NULL, uses_versions boolean NOT NULL, max_rows_per_second float8, \
                chunks integer NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp(), \
                throttle_next timestamptz NOT NULL DEFAULT clock_timestamp(), fleet_mark bigint, scope text)
                """,
                """
                CREATE TABLE IF NOT EXISTS \(c) (run text NOT NULL REFERENCES \(r) (run) ON DELETE CASCADE, \
                chunk integer NOT NULL, after_key text, through_key text NOT NULL, planned_rows bigint NOT NULL, \
                done boolean NOT NULL DEFAULT false, owner text, token bigint NOT NULL DEFAULT 0, \
                lease_expires timestamptz, cursor_key text, rows_scanned bigint NOT NULL DEFAULT 0, \
                rows_copied bigint NOT NULL DEFAULT 0, claims integer NOT NULL DEFAULT 0, \
                completions integer NOT NULL DEFAULT 0, updated_at timestamptz, PRIMARY KEY (run, chunk))
                """,
                "CREATE INDEX IF NOT EXISTS \(i) ON \(c) (run, chunk) WHERE NOT done",
            ]
            insertRun = """
                INSERT INTO \(r) (run, format, rate, uses_versions, max_rows_per_second, chunks, fleet_mark, scope) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (run) DO NOTHING RETURNING run
                """
            insertChunks = """
                INSERT INTO \(c) (run, chunk, after_key, through_key, planned_rows) \
                SELECT $1, chunk, NULLIF(after_key, ''), through_key, planned_rows \
                FROM unnest($2::int4[], $3::text[], $4::text[], $5::int8[]) \
                AS batch(chunk, after_key, through_key, planned_rows)
                """
            selectRun = """
                SELECT format, rate, uses_versions, max_rows_per_second, chunks, fleet_mark, scope FROM \(r) \
                WHERE run = $1
                """
            let lease = "clock_timestamp() + make_interval(secs => $%d::float8)"
            claim = """
                WITH next AS (SELECT chunk FROM \(c) WHERE run = $1 AND NOT done \
                AND (lease_expires IS NULL OR lease_expires < clock_timestamp()) \
                ORDER BY chunk LIMIT 1 FOR UPDATE SKIP LOCKED) \
                UPDATE \(c) AS c SET owner = $2, token = c.token + 1, claims = c.claims + 1, \
                lease_expires = \(lease.replacingOccurrences(of: "%d", with: "3")) \
                FROM next WHERE c.run = $1 AND c.chunk = next.chunk \
                RETURNING c.chunk, c.after_key, c.through_key, c.planned_rows, c.cursor_key, c.token, c.claims
                """
            let held = "run = $1 AND chunk = $2 AND token = $3 AND NOT done AND lease_expires IS NOT NULL"
            // A save repeated with the same cursor (a retry after a lost reply) does not count its rows again.
            checkpoint = """
                UPDATE \(c) SET cursor_key = $4, \
                rows_scanned = rows_scanned + CASE WHEN cursor_key IS NOT DISTINCT FROM $4 THEN 0 ELSE $5 END, \
                rows_copied = rows_copied + CASE WHEN cursor_key IS NOT DISTINCT FROM $4 THEN 0 ELSE $6 END, \
                updated_at = clock_timestamp(), lease_expires = \(lease.replacingOccurrences(of: "%d", with: "7")) WHERE \(held) RETURNING chunk
                """
            renew = """
                UPDATE \(c) SET lease_expires = \(lease.replacingOccurrences(of: "%d", with: "4")) \
                WHERE \(held) RETURNING chunk
                """
            complete = """
                UPDATE \(c) SET done = true, completions = completions + 1, cursor_key = through_key, \
                rows_scanned = rows_scanned + $4, rows_copied = rows_copied + $5, lease_expires = NULL, \
                updated_at = clock_timestamp() \
                WHERE \(held) RETURNING chunk
                """
            release = "UPDATE \(c) SET lease_expires = NULL WHERE \(held)"
            status = """
                SELECT r.format, r.rate, r.chunks, count(c.chunk) FILTER (WHERE c.done), \
                count(c.chunk) FILTER (WHERE NOT c.done AND c.lease_expires >= clock_timestamp()), \
                COALESCE(sum(c.planned_rows), 0)::int8, COALESCE(sum(c.rows_scanned), 0)::int8, \
                COALESCE(sum(c.rows_copied), 0)::int8, count(DISTINCT c.owner), \
                EXTRACT(EPOCH FROM CASE WHEN bool_and(c.done) THEN max(c.updated_at) ELSE clock_timestamp() END \
                - r.created_at)::float8 \
                FROM \(r) AS r LEFT JOIN \(c) AS c ON c.run = r.run WHERE r.run = $1 \
                GROUP BY r.run, r.format, r.rate, r.chunks, r.created_at
                """
            let step = "make_interval(secs => $2::float8 / max_rows_per_second)"
            throttle = """
                UPDATE \(r) SET throttle_next = GREATEST(throttle_next, clock_timestamp()) + \(step) \
                WHERE run = $1 AND max_rows_per_second IS NOT NULL \
                RETURNING EXTRACT(EPOCH FROM throttle_next - \(step) - clock_timestamp())::float8
                """
            setLimit = "UPDATE \(r) SET max_rows_per_second = $2 WHERE run = $1 RETURNING run"
            chunkStates = """
                SELECT chunk, done, owner, token, \
                COALESCE(NOT done AND lease_expires >= clock_timestamp(), false), claims, completions, planned_rows, \
                rows_scanned \
                FROM \(c) WHERE run = $1 ORDER BY chunk
                """
        }
    }
}
