import Foundation
import GRDB
public import ZDDM
public import ZDDMSQL

/// A ``ZDDM/BackfillCoordinator`` in two tables of an SQLite database: a run's workers on one machine (processes
/// sharing the file, or tasks of one process) share its chunks through it. For workers on several machines, use
/// PostgreSQL's coordinator.
///
/// The tables hold what the PostgreSQL coordinator's do (`<prefix>_runs`, `<prefix>_chunks`; keys as JSON). Every
/// method is one write transaction, and SQLite runs one at a time, so a claim (the first chunk that is neither done
/// nor under a live lease, its token raised) never hands a chunk to two workers. Leases are measured by the
/// database's clock (`julianday('now')`).
public struct SQLiteBackfillCoordinator<Key: Codable & Sendable>: BackfillCoordinator, CustomStringConvertible {
    /// The coordination format this version writes and reads.
    public static var format: Int { BackfillCoordination.format }

    /// The database holding the tables.
    public let database: SQLiteDatabase
    /// The runs table.
    public let runsTable: SQLIdentifier
    /// The chunks table.
    public let chunksTable: SQLIdentifier

    /// Describes the coordinator; nothing runs until a method is called.
    /// - Parameters:
    ///   - database: The database.
    ///   - prefix: The tables' prefix: `<prefix>_runs` and `<prefix>_chunks`; `zddm_backfill` by default.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for an invalid prefix.
    public init(database: SQLiteDatabase, prefix: String = "zddm_backfill") throws {
        self.database = database
        self.runsTable = try SQLIdentifier(prefix + "_runs", role: "backfill coordination table prefix")
        self.chunksTable = try SQLIdentifier(prefix + "_chunks", role: "backfill coordination table prefix")
    }

    private var r: String { runsTable.quoted }
    private var c: String { chunksTable.quoted }
    private static var now: String { "((julianday('now') - 2440587.5) * 86400.0)" }

    /// Creates the tables if they do not exist.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/storeFailed`` when SQLite fails.
    public func prepare() async throws {
        let (r, c, runs) = (r, c, runsTable.name)
        try await write { db in
            try db.execute(
                sql: """
                    CREATE TABLE IF NOT EXISTS \(r) (run TEXT NOT NULL PRIMARY KEY, format INTEGER NOT NULL, \
                    rate REAL NOT NULL, uses_versions INTEGER NOT NULL, max_rows_per_second REAL, \
                    chunks INTEGER NOT NULL, created_at REAL NOT NULL, throttle_next REAL NOT NULL, fleet_mark INTEGER, \
                    scope TEXT)
                    """
            )
            // Tables made before verify runs existed lack the fleet's mark and the scope.
            let columns = Set(try db.columns(in: runs).map(\.name))
            for (column, type) in [("fleet_mark", "INTEGER"), ("scope", "TEXT")] where !columns.contains(column) {
                try db.execute(sql: "ALTER TABLE \(r) ADD COLUMN \(column) \(type)")
            }
            try db.execute(
                sql: """
                    CREATE TABLE IF NOT EXISTS \(c) (run TEXT NOT NULL, chunk INTEGER NOT NULL, after_key TEXT, \
                    through_key TEXT NOT NULL, planned_rows INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0, \
                    owner TEXT, token INTEGER NOT NULL DEFAULT 0, lease_expires REAL, cursor_key TEXT, \
                    rows_scanned INTEGER NOT NULL DEFAULT 0, rows_copied INTEGER NOT NULL DEFAULT 0, \
                    claims INTEGER NOT NULL DEFAULT 0, completions INTEGER NOT NULL DEFAULT 0, updated_at REAL, \
                    PRIMARY KEY (run, chunk))
                    """
            )
        }
    }

    public func createRun(_ plan: BackfillRunPlan<Key>) async throws -> Bool {
        let encoder = JSONEncoder()
        let chunks = try plan.chunks.map { chunk in
            (
                after: try chunk.after.map { try BackfillCoordination.encode($0, encoder) },
                through: try BackfillCoordination.encode(chunk.through, encoder),
                planned: chunk.plannedRows
            )
        }
        let (r, c) = (r, c)
        return try await write { db in
            guard try Row.fetchOne(db, sql: "SELECT 1 FROM \(r) WHERE run = ?", arguments: [plan.run]) == nil else {
                return false
            }
            try db.execute(
                sql: """
                    INSERT INTO \(r) (run, format, rate, uses_versions, max_rows_per_second, chunks, created_at, \
                    throttle_next, fleet_mark, scope) VALUES (?, ?, ?, ?, ?, ?, \(Self.now), \(Self.now), ?, ?)
                    """,
                arguments: [
                    plan.run, Self.format, plan.rate, plan.usesVersions, plan.maxRowsPerSecond, chunks.count,
                    plan.fleetMark.map { Int64(bitPattern: $0) }, plan.scope,
                ]
            )
            let insert = try db.makeStatement(
                sql: "INSERT INTO \(c) (run, chunk, after_key, through_key, planned_rows) VALUES (?, ?, ?, ?, ?)"
            )
            for (index, chunk) in chunks.enumerated() {
                try insert.execute(arguments: [plan.run, index, chunk.after, chunk.through, chunk.planned])
            }
            return true
        }
    }

    public func runInfo(_ run: String) async throws -> BackfillRunInfo? {
        let r = r
        return try await write { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT format, rate, uses_versions, max_rows_per_second, chunks, fleet_mark, scope FROM \(r) \
                        WHERE run = ?
                        """,
                    arguments: [run]
                )
            else { return nil }
            try BackfillCoordination.check(format: row[0], run: run)
            return BackfillRunInfo(
                run: run,
                rate: row[1],
                usesVersions: row[2],
                maxRowsPerSecond: row[3],
                chunks: row[4],
                fleetMark: (row[5] as Int64?).map { UInt64(bitPattern: $0) },
                scope: row[6]
            )
        }
    }

    public func claim(_ run: String, worker: String, lease: Duration) async throws -> BackfillChunkClaim<Key>? {
        let c = c
        let seconds = BackfillCoordination.seconds(lease)
        let found = try await write { db -> ClaimedRow? in
            guard
                let chunk = try Int.fetchOne(
                    db,
                    sql: """
                        SELECT chunk FROM \(c) WHERE run = ? AND done = 0 \
                        AND (lease_expires IS NULL OR lease_expires < \(Self.now)) ORDER BY chunk LIMIT 1
                        """,
                    arguments: [run]
                )
            else { return nil }
            try db.execute(
                sql: """
                    UPDATE \(c) SET owner = ?, token = token + 1, claims = claims + 1, \
                    lease_expires = \(Self.now) + ? WHERE run = ? AND chunk = ?
                    """,
                arguments: [worker, seconds, run, chunk]
            )
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT chunk, after_key, through_key, planned_rows, cursor_key, token, claims FROM \(c) \
                        WHERE run = ? AND chunk = ?
                        """,
                    arguments: [run, chunk]
                )
            else { return nil }
            return ClaimedRow(
                chunk: row[0],
                after: row[1],
                through: row[2],
                planned: row[3],
                cursor: row[4],
                token: row[5],
                claims: row[6]
            )
        }
        guard let found else { return nil }
        let decoder = JSONDecoder()
        return BackfillChunkClaim(
            run: run,
            chunk: found.chunk,
            range: BackfillChunkRange(
                after: try found.after.map { try BackfillCoordination.decode($0, decoder) },
                through: try BackfillCoordination.decode(found.through, decoder),
                plannedRows: found.planned
            ),
            cursor: try found.cursor.map { try BackfillCoordination.decode($0, decoder) },
            token: UInt64(bitPattern: found.token),
            claims: found.claims
        )
    }

    private struct ClaimedRow: Sendable {
        var chunk: Int
        var after: String?
        var through: String
        var planned: Int
        var cursor: String?
        var token: Int64
        var claims: Int
    }

    /// Changes the claim's chunk only while it is held under the claim's token.
    private func held(
        _ claim: BackfillChunkClaim<Key>,
        set assignments: String,
        _ arguments: StatementArguments
    ) async throws -> Bool {
        let c = c
        return try await write { db in
            try db.execute(
                sql: """
                    UPDATE \(c) SET \(assignments) WHERE run = ? AND chunk = ? AND token = ? AND done = 0 \
                    AND lease_expires IS NOT NULL
                    """,
                arguments: arguments + [claim.run, claim.chunk, Int64(bitPattern: claim.token)]
            )
            return db.changesCount > 0
        }
    }

    public func checkpoint(
        _ claim: BackfillChunkClaim<Key>,
        cursor: Key,
        scanned: Int,
        copied: Int,
        lease: Duration
    ) async throws -> Bool {
        let encoded = try BackfillCoordination.encode(cursor, JSONEncoder())
        return try await held(
            claim,
            // A save repeated with the same cursor (a retry after a lost reply) does not count its rows again.
            set: """
                rows_scanned = rows_scanned + (CASE WHEN cursor_key IS ? THEN 0 ELSE ? END), \
                rows_copied = rows_copied + (CASE WHEN cursor_key IS ? THEN 0 ELSE ? END), cursor_key = ?, \
                lease_expires = \(Self.now) + ?, updated_at = \(Self.now)
                """,
            [encoded, scanned, encoded, copied, encoded, BackfillCoordination.seconds(lease)]
        )
    }

    public func renew(_ claim: BackfillChunkClaim<Key>, lease: Duration) async throws -> Bool {
        try await held(claim, set: "lease_expires = \(Self.now) + ?", [BackfillCoordination.seconds(lease)])
    }

    public func complete(_ claim: BackfillChunkClaim<Key>, scanned: Int, copied: Int) async throws -> Bool {
        try await held(
            claim,
            set: """
                done = 1, completions = completions + 1, cursor_key = through_key, rows_scanned = rows_scanned + ?, \
                rows_copied = rows_copied + ?, lease_expires = NULL, updated_at = \(Self.now)
                """,
            [scanned, copied]
        )
    }

    public func release(_ claim: BackfillChunkClaim<Key>) async throws {
        _ = try await held(claim, set: "lease_expires = NULL", [])
    }

    public func status(_ run: String) async throws -> BackfillRunStatus? {
        let (r, c) = (r, c)
        return try await write { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT r.format, r.rate, r.chunks, \
                        COALESCE(sum(c.done), 0), \
                        COALESCE(sum(c.done = 0 AND c.lease_expires >= \(Self.now)), 0), \
                        COALESCE(sum(c.planned_rows), 0), COALESCE(sum(c.rows_scanned), 0), \
                        COALESCE(sum(c.rows_copied), 0), count(DISTINCT c.owner), \
                        CASE WHEN COALESCE(min(c.done), 1) = 1 THEN COALESCE(max(c.updated_at), r.created_at) \
                        ELSE \(Self.now) END - r.created_at \
                        FROM \(r) AS r LEFT JOIN \(c) AS c ON c.run = r.run WHERE r.run = ? GROUP BY r.run
                        """,
                    arguments: [run]
                )
            else { return nil }
            try BackfillCoordination.check(format: row[0], run: run)
            let chunks: Int = row[2]
            let done: Int = row[3]
            let inFlight: Int = row[4]
            return BackfillRunStatus(
                run: run,
                rate: row[1],
                chunks: chunks,
                done: done,
                inFlight: inFlight,
                waiting: chunks - done - inFlight,
                plannedRows: row[5],
                rowsScanned: row[6],
                rowsCopied: row[7],
                workersSeen: row[8],
                elapsedSeconds: row[9]
            )
        }
    }

    public func throttle(_ run: String, rows: Int) async throws -> Duration {
        let r = r
        let wait = try await write { db -> Double in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql:
                        "SELECT max_rows_per_second, max(throttle_next, \(Self.now)), \(Self.now) FROM \(r) WHERE run = ?",
                    arguments: [run]
                ),
                let limit = row[0] as Double?, limit > 0
            else { return 0 }
            let start: Double = row[1]
            let now: Double = row[2]
            try db.execute(
                sql: "UPDATE \(r) SET throttle_next = ? WHERE run = ?",
                arguments: [start + Double(rows) / limit, run]
            )
            return start - now
        }
        guard wait.isFinite, wait > 0 else { return .zero }
        return .milliseconds(Int64(min(wait, 86_400) * 1000))
    }

    public func setMaxRowsPerSecond(_ run: String, _ maxRowsPerSecond: Double?) async throws -> Bool {
        if let maxRowsPerSecond, !(maxRowsPerSecond > 0) {
            throw ZDDMError(.invalidArgument, message: "max rows per second must be above 0, got \(maxRowsPerSecond)")
        }
        let r = r
        return try await write { db in
            try db.execute(
                sql: "UPDATE \(r) SET max_rows_per_second = ? WHERE run = ?",
                arguments: [maxRowsPerSecond, run]
            )
            return db.changesCount > 0
        }
    }

    public var description: String {
        "SQLiteBackfillCoordinator(tables \(runsTable), \(chunksTable) in \(database.url))"
    }

    // MARK: Helpers

    private func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await database.writer.write(body)
        } catch let error as ZDDMError {
            throw error
        } catch {
            throw SQLiteErrors.wrap(error, operation: .prepare, table: chunksTable, database: database.url)
        }
    }
}
