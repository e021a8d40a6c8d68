import Foundation
import Synchronization
public import ZDDM

/// A ``ZDDM/BackfillCoordinator`` in memory, for the workers of one process and for tests: the same rules as the
/// PostgreSQL coordinator (claims under growing fencing tokens, leases measured by a clock, saves and completions
/// only under the current token), nothing durable.
///
/// Lease expiry follows the clock given at creation, so a test with a ``ManualClock`` moves leases past their
/// expiry without waiting. It also counts every completion per chunk, so tests can check that no chunk was
/// completed twice, and can fail on purpose (``failCalls(_:)``), as an unreachable coordinator would.
public final class InMemoryBackfillCoordinator<Key: Codable & Sendable>: BackfillCoordinator, Sendable {
    /// What the coordinator holds about one chunk.
    public struct Chunk: Sendable {
        /// The chunk's keys.
        public var range: BackfillChunkRange<Key>
        /// Whether the chunk is done.
        public var done = false
        /// The worker that holds (or completed) the chunk.
        public var owner: String?
        /// The current fencing token.
        public var token: UInt64 = 0
        /// When the holder's lease ends, by the coordinator's clock; `nil` when nobody holds it.
        public var leaseEnds: Duration?
        /// The checkpoint.
        public var cursor: Key?
        /// Rows scanned in committed batches.
        public var rowsScanned = 0
        /// Rows copied in committed batches.
        public var rowsCopied = 0
        /// How many times it was claimed.
        public var claims = 0
        /// How many times it was completed (never above 1).
        public var completions = 0
        /// When it was last saved or completed, by the coordinator's clock.
        public var updated: Duration?
    }

    private struct Run {
        var info: BackfillRunInfo
        var chunks: [Chunk]
        var created: Duration
        var throttleNext: Duration
    }

    private struct State {
        var runs: [String: Run] = [:]
        var failuresLeft = 0
        var failure: (any Error & Sendable)?
        var failedCalls = 0
    }

    private let state = Mutex(State())
    private let now: @Sendable () -> Duration

    /// Creates an empty coordinator.
    /// - Parameter clock: The clock leases and the throttle follow; a continuous clock by default.
    public init<C: Clock>(clock: C) where C.Duration == Duration {
        let start = clock.now
        self.now = { start.duration(to: clock.now) }
    }

    /// Creates an empty coordinator on a continuous clock.
    public convenience init() {
        self.init(clock: ContinuousClock())
    }

    /// Makes the next `count` calls fail with ``ZDDM/ZDDMError/Code/connectionFailed``, as an unreachable
    /// coordinator would, or with `error`.
    public func failCalls(_ count: Int, with error: (any Error & Sendable)? = nil) {
        state.withLock {
            $0.failuresLeft = count
            $0.failure = error
        }
    }

    /// How many calls have failed on purpose so far.
    public var failedCalls: Int { state.withLock { $0.failedCalls } }

    /// The chunks of a run, for tests.
    public func chunks(of run: String) -> [Chunk] {
        state.withLock { $0.runs[run]?.chunks ?? [] }
    }

    private func withState<R>(_ body: (inout State, Duration) throws -> R) throws -> R {
        let time = now()
        return try state.withLock { state in
            if state.failuresLeft > 0 {
                state.failuresLeft -= 1
                state.failedCalls += 1
                throw state.failure
                    ?? ZDDMError(.connectionFailed, message: "the in-memory coordinator fails on purpose")
            }
            return try body(&state, time)
        }
    }

    public func createRun(_ plan: BackfillRunPlan<Key>) async throws -> Bool {
        try withState { state, time in
            guard state.runs[plan.run] == nil else { return false }
            state.runs[plan.run] = Run(
                info: BackfillRunInfo(
                    run: plan.run,
                    rate: plan.rate,
                    usesVersions: plan.usesVersions,
                    maxRowsPerSecond: plan.maxRowsPerSecond,
                    chunks: plan.chunks.count,
                    fleetMark: plan.fleetMark,
                    scope: plan.scope
                ),
                chunks: plan.chunks.map { Chunk(range: $0) },
                created: time,
                throttleNext: time
            )
            return true
        }
    }

    public func runInfo(_ run: String) async throws -> BackfillRunInfo? {
        try withState { state, _ in state.runs[run]?.info }
    }

    public func claim(_ run: String, worker: String, lease: Duration) async throws -> BackfillChunkClaim<Key>? {
        try withState { state, time in
            guard var entry = state.runs[run] else { return nil }
            let free = entry.chunks.indices.first { index in
                let chunk = entry.chunks[index]
                return !chunk.done && (chunk.leaseEnds.map { $0 < time } ?? true)
            }
            guard let index = free else { return nil }
            entry.chunks[index].token += 1
            entry.chunks[index].claims += 1
            entry.chunks[index].owner = worker
            entry.chunks[index].leaseEnds = time + lease
            let chunk = entry.chunks[index]
            state.runs[run] = entry
            return BackfillChunkClaim(
                run: run,
                chunk: index,
                range: chunk.range,
                cursor: chunk.cursor,
                token: chunk.token,
                claims: chunk.claims
            )
        }
    }

    /// Changes the chunk only while the claim's token still holds it.
    private func held(
        _ claim: BackfillChunkClaim<Key>,
        _ change: (inout Chunk, Duration) -> Void
    ) throws -> Bool {
        try withState { state, time in
            guard var entry = state.runs[claim.run], entry.chunks.indices.contains(claim.chunk) else { return false }
            let chunk = entry.chunks[claim.chunk]
            guard !chunk.done, chunk.token == claim.token, chunk.leaseEnds != nil else { return false }
            change(&entry.chunks[claim.chunk], time)
            state.runs[claim.run] = entry
            return true
        }
    }

    public func checkpoint(
        _ claim: BackfillChunkClaim<Key>,
        cursor: Key,
        scanned: Int,
        copied: Int,
        lease: Duration
    ) async throws -> Bool {
        // A save repeated with the same cursor (a retry after a lost reply) does not count its rows again.
        let encoder = JSONEncoder()
        let repeated = { (previous: Key?) in
            previous.flatMap { try? encoder.encode($0) } == (try? encoder.encode(cursor))
        }
        return try held(claim) { chunk, time in
            if !repeated(chunk.cursor) {
                chunk.rowsScanned += scanned
                chunk.rowsCopied += copied
            }
            chunk.cursor = cursor
            chunk.leaseEnds = time + lease
            chunk.updated = time
        }
    }

    public func renew(_ claim: BackfillChunkClaim<Key>, lease: Duration) async throws -> Bool {
        try held(claim) { chunk, time in chunk.leaseEnds = time + lease }
    }

    public func complete(_ claim: BackfillChunkClaim<Key>, scanned: Int, copied: Int) async throws -> Bool {
        try held(claim) { chunk, time in
            chunk.updated = time
            chunk.done = true
            chunk.completions += 1
            chunk.rowsScanned += scanned
            chunk.rowsCopied += copied
            chunk.cursor = chunk.range.through
            chunk.leaseEnds = nil
        }
    }

    public func release(_ claim: BackfillChunkClaim<Key>) async throws {
        _ = try held(claim) { chunk, _ in chunk.leaseEnds = nil }
    }

    public func status(_ run: String) async throws -> BackfillRunStatus? {
        try withState { state, time in
            guard let entry = state.runs[run] else { return nil }
            let chunks = entry.chunks
            let done = chunks.filter(\.done).count
            let inFlight = chunks.filter { !$0.done && ($0.leaseEnds.map { $0 >= time } ?? false) }.count
            let end = done == chunks.count ? (chunks.compactMap(\.updated).max() ?? entry.created) : time
            let elapsed = end - entry.created
            return BackfillRunStatus(
                run: run,
                rate: entry.info.rate,
                chunks: chunks.count,
                done: done,
                inFlight: inFlight,
                waiting: chunks.count - done - inFlight,
                plannedRows: chunks.reduce(0) { $0 + $1.range.plannedRows },
                rowsScanned: chunks.reduce(0) { $0 + $1.rowsScanned },
                rowsCopied: chunks.reduce(0) { $0 + $1.rowsCopied },
                workersSeen: Set(chunks.compactMap(\.owner)).count,
                elapsedSeconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            )
        }
    }

    public func throttle(_ run: String, rows: Int) async throws -> Duration {
        try withState { state, time in
            guard var entry = state.runs[run], let limit = entry.info.maxRowsPerSecond else { return .zero }
            let start = max(time, entry.throttleNext)
            entry.throttleNext = start + .nanoseconds(Int64(Double(rows) / limit * 1e9))
            state.runs[run] = entry
            return start - time
        }
    }

    public func setMaxRowsPerSecond(_ run: String, _ maxRowsPerSecond: Double?) async throws -> Bool {
        try withState { state, _ in
            guard state.runs[run] != nil else { return false }
            state.runs[run]?.info.maxRowsPerSecond = maxRowsPerSecond
            return true
        }
    }
}
