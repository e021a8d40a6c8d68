import Foundation
public import ServiceLifecycle
import Synchronization

/// A verify pass split into chunks that any number of workers, in any number of processes, share through a
/// ``BackfillCoordinator``, as ``ChunkedBackfill`` shares a backfill.
///
/// The first worker of a run plans it: it walks Old's keys once (New's when Old has none) and cuts the key space
/// into chunks of ``VerifyOptions/chunkRows`` keys. The first chunk starts at the first key and the last one has
/// no end, so the chunks cover every key either store holds, including keys written after the run was planned.
/// Each worker claims a free chunk and compares it exactly as ``Verify`` compares the whole key space: by versions
/// when the stores have them (values read only where versions differ or one side lacks the key; every value with
/// ``VerifyOptions/deep``), by values otherwise, each suspect read twice before it counts, and mismatches repaired
/// through the fenced path when ``VerifyOptions/repair`` is set. A worker renews its chunk's lease while it works
/// and completes the chunk, with the number of keys it compared and of mismatches it found, only while it still
/// holds it; a worker that dies loses its chunk in hand, which another worker verifies again from the start once
/// the lease expires (a chunk is never counted twice). ``VerifyOptions/maxRowsPerSecond`` is the run's shared
/// limit, across every worker on every machine.
///
/// Each process's report (``verify()``) counts what its own workers found in the chunks they completed. The run's
/// totals are the coordinator's (``status()``: keys compared in ``BackfillRunStatus/rowsScanned``, mismatches in
/// ``BackfillRunStatus/rowsCopied``). A run is clean when every chunk is done, no chunk found a mismatch, the run
/// was planned at rate 1, and this process's core holds no key in its safety memory and is not degraded; the
/// report's ``VerifyReport/isClean`` says so. A clean run is recorded like a clean ``Verify`` pass: in the gate of
/// the process that planned the run (it read the gate's mark before planning), and, when the core has a
/// ``FleetMember``, in the fleet's shared state with the fleet's barrier read before the run was planned
/// (``BackfillRunPlan/fleetMark``), so a fall-behind anywhere in the fleet during the run revokes it.
public final class ChunkedVerify<Old: KeyValueStore, New: KeyValueStore, Coordinator: BackfillCoordinator>: Service
where
    Old.Key == New.Key,
    Old.Value == New.Value,
    Old.Key: GateKey,
    Coordinator.Key == Old.Key
{
    public typealias Key = Old.Key
    public typealias Value = Old.Value

    /// The run's name.
    public let run: String
    /// Where the run's chunks live.
    public let coordinator: Coordinator
    private let core: MigrationCore<Old, New>
    private let options: VerifyOptions
    private let pass: Verify<Old, New>
    private let mayCreate: Bool
    private let fleetMark: UInt64?
    private let onReport: (@Sendable (VerifyReport<Key>) -> Void)?
    private let calls: CoordinatorRetry
    private let found = Mutex(Found())

    private struct Found: Sendable {
        var report = VerifyReport<Key>()
        var plannedHere = false
    }

    /// Why a worker stops verifying a chunk before its end.
    private enum Interruption: Error {
        case stopping
        case lost
    }

    /// Creates a chunked verify.
    /// - Parameters:
    ///   - core: The migration's stores, gate, safety memory, metrics and clock.
    ///   - coordinator: Where the run's chunks live.
    ///   - run: The run's name.
    ///   - create: Whether to plan the run when it does not exist (`false` to join an existing run only).
    ///   - options: Paging, repair, sampling, workers, chunk size and lease.
    ///   - fleetMark: The fleet's ``FleetState/behind`` read before this call, to record in a run this worker
    ///     plans when the core has no ``FleetMember`` (a tool that records the clean run itself); by default the
    ///     core's fleet is read.
    ///   - equal: How values are compared.
    ///   - onReport: Called with this process's report at the end of ``run()``.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an empty run name or an option
    ///   out of range, or ``ZDDMError/Code/unsupported`` when a store cannot list its keys in order.
    public init(
        core: MigrationCore<Old, New>,
        coordinator: Coordinator,
        run: String,
        create: Bool = true,
        options: VerifyOptions = VerifyOptions(),
        fleetMark: UInt64? = nil,
        equal: @escaping @Sendable (Value, Value) -> Bool,
        onReport: (@Sendable (VerifyReport<Key>) -> Void)? = nil
    ) throws {
        guard !run.isEmpty else { throw ZDDMError(.invalidArgument, message: "a verify run needs a name") }
        guard options.workers >= 1 else {
            throw ZDDMError(.invalidArgument, message: "workers must be at least 1, got \(options.workers)")
        }
        guard options.chunkRows >= 1 else {
            throw ZDDMError(.invalidArgument, message: "chunk rows must be at least 1, got \(options.chunkRows)")
        }
        guard options.leaseDuration > .zero else {
            throw ZDDMError(.invalidArgument, message: "a chunk's lease must be longer than zero")
        }
        self.pass = try Verify(core: core, options: options, equal: equal)
        self.core = core
        self.coordinator = coordinator
        self.run = run
        self.mayCreate = create
        self.options = options
        self.fleetMark = fleetMark
        self.onReport = onReport
        self.calls = CoordinatorRetry(
            run: run,
            kind: "verify",
            firstDelay: options.retryDelay,
            clock: core.clock,
            logger: core.logger
        )
    }

    /// Runs this process's workers until every chunk of the run is done, or until cancelled or shut down, and hands
    /// this process's report to `onReport`.
    /// - Throws: ``ZDDMError`` as ``verify()``.
    public func run() async throws {
        let report = try await verify()
        onReport?(report)
    }

    /// Runs this process's workers like ``run()``.
    /// - Returns: What this process's workers found; ``VerifyReport/isClean`` tells whether the whole run finished
    ///   clean.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for an unknown run (with `create: false`)
    ///   or one started at another rate or without (with) versions, or a store's error.
    public func verify() async throws -> VerifyReport<Key> {
        let gateMark = core.gate.newBehindMark
        let safetyMark = core.ledger.takeMark()
        found.withLock { $0 = Found() }
        let info = try await prepare()
        let prefix = options.workerName ?? ChunkedBackfill<Old, New, Coordinator>.defaultWorkerName
        core.logger.info(
            "verify workers starting",
            metadata: ["zddm.verify": "\(run)", "zddm.workers": "\(options.workers)"]
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 1...options.workers {
                group.addTask { try await self.work(as: "\(prefix)-\(index)", info: info) }
            }
            try await group.waitForAll()
        }
        var (report, plannedHere) = found.withLock { ($0.report, $0.plannedHere) }
        report.safetyMark = safetyMark
        let status = stopping() ? nil : try? await coordinator.status(run)
        if let status, status.finished, status.rowsCopied == 0, report.mismatches == 0, info.rate >= 1,
            core.unsafeKeyCount == 0, !core.isDegraded
        {
            report.isClean = true
            if plannedHere { core.gate.recordCleanVerify(startedAt: gateMark) }
            if let mark = info.fleetMark, core.fleet != nil {
                report.fleetVerifiedBehind = await pass.recordFleetPass(startedAt: mark)
            }
        } else if report.mismatches > 0 {
            core.metrics.verifyMismatches(report.counts)
        }
        core.logger.info(
            status?.finished == true ? "verify run finished" : "verify workers stopped; chunks released",
            metadata: [
                "zddm.verify": "\(run)", "zddm.mismatches": "\(report.mismatches)",
                "zddm.run_mismatches": "\(status?.rowsCopied ?? 0)", "zddm.clean": "\(report.isClean)",
            ]
        )
        return report
    }

    /// The run's progress across every worker, as the coordinator sees it: keys compared in
    /// ``BackfillRunStatus/rowsScanned``, mismatches found in ``BackfillRunStatus/rowsCopied``.
    /// - Returns: The status, or `nil` before the run exists.
    /// - Throws: When the coordinator fails.
    public func status() async throws -> BackfillRunStatus? {
        try await coordinator.status(run)
    }

    /// Finds the run, or plans and creates it (unless created with `create: false`), and checks that this worker
    /// agrees with it; ``verify()`` does this first.
    /// - Returns: The run's settings.
    /// - Throws: As ``verify()``.
    @discardableResult
    public func prepare() async throws -> BackfillRunInfo {
        let info: BackfillRunInfo
        if let existing = try await calls({ try await self.coordinator.runInfo(self.run) }) {
            info = existing
        } else {
            guard mayCreate else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "there is no verify run named '\(run)' to join; start it first (without joining)"
                )
            }
            // The fleet's barrier before anything is compared: a fall-behind during the run revokes a clean result.
            var mark = fleetMark
            if mark == nil { mark = await pass.readFleetMark() }
            let plan = try await makePlan(fleetMark: mark)
            let created = try await calls { try await self.coordinator.createRun(plan) }
            if created { found.withLock { $0.plannedHere = true } }
            core.logger.info(
                created ? "verify run planned" : "verify run was planned by another worker first",
                metadata: ["zddm.verify": "\(run)", "zddm.chunks": "\(plan.chunks.count)"]
            )
            guard let stored = try await calls({ try await self.coordinator.runInfo(self.run) }) else {
                throw ZDDMError(
                    .storeFailed,
                    message: "the coordinator lost verify run '\(run)' right after creating it"
                )
            }
            info = stored
        }
        try info.refuseMismatch(kind: "verify", rate: core.gate.rate, usesVersions: core.usesVersions)
        return info
    }

    private func stopping() -> Bool { Task.isCancelled || Task.isShuttingDownGracefully }

    /// Walks Old's keys (New's when Old has none) once and cuts them into chunks.
    private func makePlan(fleetMark: UInt64?) async throws -> BackfillRunPlan<Key> {
        var chunks = try await boundaries(of: .old)
        if chunks.isEmpty { chunks = try await boundaries(of: .new) }
        return BackfillRunPlan(
            run: run,
            rate: core.gate.rate,
            usesVersions: core.usesVersions,
            maxRowsPerSecond: options.maxRowsPerSecond,
            chunks: chunks,
            fleetMark: fleetMark
        )
    }

    private func boundaries(of role: StoreRole) async throws -> [BackfillChunkRange<Key>] {
        var chunks: [BackfillChunkRange<Key>] = []
        var cursor: Key?
        while true {
            let limit = options.chunkRows
            let keys: [Key]
            do {
                keys =
                    role == .old
                    ? try await core.old.keys(after: cursor, limit: limit)
                    : try await core.new.keys(after: cursor, limit: limit)
            } catch {
                throw ZDDMError.store(role, .listKeys, error)
            }
            guard let last = keys.last else { break }
            chunks.append(BackfillChunkRange(after: cursor, through: last, plannedRows: keys.count))
            cursor = last
            if keys.count < limit { break }
        }
        return chunks
    }

    /// One worker: claims chunks and verifies them until none is left or the run stops.
    private func work(as worker: String, info: BackfillRunInfo) async throws {
        while !stopping() {
            guard
                let claim = try await calls({
                    try await self.coordinator.claim(self.run, worker: worker, lease: self.options.leaseDuration)
                })
            else {
                let status = try await calls { try await self.coordinator.status(self.run) }
                if status?.finished ?? true { return }
                // Other workers hold the rest; one of them may die, and its chunks come back when its lease expires.
                try? await core.clock.sleep(for: options.idlePollInterval)
                continue
            }
            try await verify(claim, info: info)
        }
    }

    /// Verifies one claimed chunk from its start (a verify keeps no checkpoint inside a chunk) and completes it.
    private func verify(_ claim: BackfillChunkClaim<Key>, info: BackfillRunInfo) async throws {
        // The last chunk has no end: keys after the last one planned belong to it.
        let range = VerifyRange(
            after: claim.range.after,
            through: claim.chunk == info.chunks - 1 ? nil : claim.range.through
        )
        var part = VerifyReport<Key>()
        var renewed = core.clock.now
        let renewEvery = options.leaseDuration / 3
        do {
            try await pass.pass(&part, range: range) { keys in
                if self.stopping() { throw Interruption.stopping }
                if info.maxRowsPerSecond != nil {
                    var wait = try await self.calls { try await self.coordinator.throttle(self.run, rows: keys) }
                    while wait > .zero {
                        let step = min(wait, renewEvery)
                        try await self.core.clock.sleep(for: step)
                        wait -= step
                        if wait > .zero { try await self.renew(claim) }
                    }
                    renewed = self.core.clock.now
                }
                if self.core.clock.now - renewed >= renewEvery {
                    try await self.renew(claim)
                    renewed = self.core.clock.now
                }
            }
        } catch Interruption.lost {
            return
        } catch {
            // Stopping, cancelled or failed: the chunk goes back, to be verified again by any worker.
            await release(claim)
            if case Interruption.stopping = error { return }
            if stopping() { return }
            throw error
        }
        if stopping() {
            await release(claim)
            return
        }
        let (scanned, mismatches) = (part.keysInOld, part.mismatches)
        let completed = try await calls {
            try await self.coordinator.complete(claim, scanned: scanned, copied: mismatches)
        }
        guard completed else {
            core.logger.warning(
                "verify chunk was taken over by another worker before it could be completed; its findings are dropped",
                metadata: ["zddm.verify": "\(run)", "zddm.chunk": "\(claim.chunk)"]
            )
            return
        }
        let limit = options.sampleLimit
        found.withLock { $0.report.add(part, sampleLimit: limit) }
    }

    private func renew(_ claim: BackfillChunkClaim<Key>) async throws {
        let held = try await calls { try await self.coordinator.renew(claim, lease: self.options.leaseDuration) }
        guard held else {
            core.logger.warning(
                "verify chunk was taken over by another worker (this one's lease expired); leaving it",
                metadata: ["zddm.verify": "\(run)", "zddm.chunk": "\(claim.chunk)"]
            )
            throw Interruption.lost
        }
    }

    private func release(_ claim: BackfillChunkClaim<Key>) async {
        // Best effort: a chunk not released comes back when its lease expires.
        do {
            try await coordinator.release(claim)
        } catch {
            core.logger.warning(
                "could not release a verify chunk; it comes back when its lease expires",
                metadata: ["zddm.verify": "\(run)", "zddm.chunk": "\(claim.chunk)", "zddm.error": "\(error)"]
            )
        }
    }
}

extension ChunkedVerify where Value: Equatable {
    /// Creates a chunked verify comparing values with `==`.
    /// - Parameters:
    ///   - core: The migration's core.
    ///   - coordinator: Where the run's chunks live.
    ///   - run: The run's name.
    ///   - create: Whether to plan the run when it does not exist.
    ///   - options: Paging, repair, sampling, workers, chunk size and lease.
    ///   - fleetMark: The fleet's barrier to record in a run this worker plans, when the core has no fleet member.
    ///   - onReport: Called with this process's report at the end of ``run()``.
    /// - Throws: As ``init(core:coordinator:run:create:options:fleetMark:equal:onReport:)``.
    public convenience init(
        core: MigrationCore<Old, New>,
        coordinator: Coordinator,
        run: String,
        create: Bool = true,
        options: VerifyOptions = VerifyOptions(),
        fleetMark: UInt64? = nil,
        onReport: (@Sendable (VerifyReport<Key>) -> Void)? = nil
    ) throws {
        try self.init(
            core: core,
            coordinator: coordinator,
            run: run,
            create: create,
            options: options,
            fleetMark: fleetMark,
            equal: { $0 == $1 },
            onReport: onReport
        )
    }
}
