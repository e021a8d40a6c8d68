/// A type-erased backfill coordinator, for choosing where a run's chunks live at run time (PostgreSQL or SQLite,
/// say) where a concrete type is needed.
public struct AnyBackfillCoordinator<Key: Codable & Sendable>: BackfillCoordinator {
    /// The wrapped coordinator.
    public let base: any BackfillCoordinator<Key>

    /// Wraps a coordinator.
    /// - Parameter base: The coordinator.
    public init(_ base: any BackfillCoordinator<Key>) {
        self.base = base
    }

    public func createRun(_ plan: BackfillRunPlan<Key>) async throws -> Bool {
        try await base.createRun(plan)
    }

    public func runInfo(_ run: String) async throws -> BackfillRunInfo? {
        try await base.runInfo(run)
    }

    public func claim(_ run: String, worker: String, lease: Duration) async throws -> BackfillChunkClaim<Key>? {
        try await base.claim(run, worker: worker, lease: lease)
    }

    public func checkpoint(
        _ claim: BackfillChunkClaim<Key>,
        cursor: Key,
        scanned: Int,
        copied: Int,
        lease: Duration
    ) async throws -> Bool {
        try await base.checkpoint(claim, cursor: cursor, scanned: scanned, copied: copied, lease: lease)
    }

    public func renew(_ claim: BackfillChunkClaim<Key>, lease: Duration) async throws -> Bool {
        try await base.renew(claim, lease: lease)
    }

    public func complete(_ claim: BackfillChunkClaim<Key>, scanned: Int, copied: Int) async throws -> Bool {
        try await base.complete(claim, scanned: scanned, copied: copied)
    }

    public func release(_ claim: BackfillChunkClaim<Key>) async throws {
        try await base.release(claim)
    }

    public func status(_ run: String) async throws -> BackfillRunStatus? {
        try await base.status(run)
    }

    public func throttle(_ run: String, rows: Int) async throws -> Duration {
        try await base.throttle(run, rows: rows)
    }

    public func setMaxRowsPerSecond(_ run: String, _ maxRowsPerSecond: Double?) async throws -> Bool {
        try await base.setMaxRowsPerSecond(run, maxRowsPerSecond)
    }
}
