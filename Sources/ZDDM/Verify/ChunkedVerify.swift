import Foundation
public import ServiceLifecycle
import Synchronization

/// A verify pass split into chunks that any number of workers, in any number of processes, share through a
/// ``BackfillCoordinator``, as ``ChunkedBackfill`` shares a backfill.
///
/// The first worker of a run plans it: it walks Old's keys once, then New's keys after Old's last one, and cuts
/// them into chunks of ``VerifyOptions/chunkRows`` keys, so the chunks cover every key either store held when the
/// run was planned (keys added later between two planned keys are compared too; keys added after the last one are
/// not, as a chunked backfill does not chase them). Each worker claims a free chunk and compares it exactly as
/// ``Verify`` compares the whole key space: by versions when the stores have them (values read only where versions
/// differ or one side lacks the key; every value with ``VerifyOptions/deep``), by values otherwise, each suspect
/// read twice before it counts, and mismatches repaired through the fenced path when ``VerifyOptions/repair`` is
/// set. The chunk's lease is renewed in the background while the worker compares it; the worker completes the
/// chunk, with the number of keys it compared and of mismatches it found, only while it still holds it. A worker
/// that dies loses its chunk in hand, which another worker verifies again from the start once the lease expires
/// (a chunk's findings count once). ``VerifyOptions/maxRowsPerSecond`` is the run's shared limit, across every
/// worker on every machine. Every worker must agree with the run: its rate, its use of versions, and its scope
/// (``VerifyOptions/runScope``, the migration's name by default, with ``VerifyOptions/deep`` and
/// ``VerifyOptions/repair``). A run is verified once: a worker that finds it already finished is refused.
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
    private let scope: String
    private let state = Mutex(State())

    private struct State: Sendable {
        /// The run's settings, once ``prepare()`` found or planned it.
        var info: BackfillRunInfo?
        /// The gate's mark read before this object planned the run; `nil` when another worker planned it.
        var gateMark: UInt64?
        /// What this process's workers found in the chunks they completed.
        var report = VerifyReport<Key>()
    }

    /// Set by a chunk's lease renewal when the chunk was taken over.
    private final class LostFlag: Sendable {
        private let lost = Atomic(false)
        var isSet: Bool { lost.load(ordering: .relaxed) }
        func set() { lost.store(true, ordering: .relaxed) }
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
        try ChunkedRunSettings.validate(
            kind: "verify",
            run: run,
            workers: options.workers,
            chunkRows: options.chunkRows,
            lease: options.leaseDuration
        )
        self.pass = try Verify(core: core, options: options, equal: equal)
        self.core = core
        self.coordinator = coordinator
        self.run = run
        self.mayCreate = create
        self.options = options
        self.fleetMark = fleetMark
        self.onReport = onReport
        self.scope =
            (options.runScope ?? core.name) + (options.deep ? ", deep" : "") + (options.repair ? ", repairing" : "")
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
        let safetyMark = core.ledger.takeMark()
        let info = try await prepare()
        let prefix = options.workerName ?? ChunkedRunSettings.defaultWorkerName
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
        var (report, gateMark) = state.withLock { ($0.report, $0.gateMark) }
        report.safetyMark = safetyMark
        let status = stopping() ? nil : try? await coordinator.status(run)
        if let status, status.finished, status.rowsCopied == 0, report.mismatches == 0, info.rate >= 1,
            core.unsafeKeyCount == 0, !core.isDegraded
        {
            report.isClean = true
            if let gateMark { core.gate.recordCleanVerify(startedAt: gateMark) }
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
    /// agrees with it; ``verify()`` does this first. A run is verified once: a run that is already finished when
    /// this worker first looks at it is refused (its result stands; start a new run to verify again).
    /// - Returns: The run's settings.
    /// - Throws: As ``verify()``, and ``ZDDMError/Code/invalidArgument`` for a run that is already finished or
    ///   covers something else (another migration, or deep or repairing where this worker is not).
    @discardableResult
    public func prepare() async throws -> BackfillRunInfo {
        if let info = state.withLock({ $0.info }) { return info }
        let info: BackfillRunInfo
        if let existing = try await calls({ try await self.coordinator.runInfo(self.run) }) {
            try refuseMismatch(existing)
            if let status = try await calls({ try await self.coordinator.status(self.run) }), status.finished {
                throw ZDDMError(
                    .invalidArgument,
                    message: "verify run '\(run)' is already finished (\(status.rowsScanned) keys compared, "
                        + "\(status.rowsCopied) mismatches); a run is verified once: start a new run to verify again"
                )
            }
            info = existing
        } else {
            guard mayCreate else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "there is no verify run named '\(run)' to join; start it first (without joining)"
                )
            }
            // The barriers before anything is compared: a fall-behind during the run revokes a clean result.
            let gateMark = core.gate.newBehindMark
            var mark = fleetMark
            if mark == nil { mark = await pass.readFleetMark() }
            let plan = try await makePlan(fleetMark: mark)
            let created = try await calls { try await self.coordinator.createRun(plan) }
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
            try refuseMismatch(stored)
            if created { state.withLock { $0.gateMark = gateMark } }
            info = stored
        }
        if !mayCreate, let limit = options.maxRowsPerSecond, limit != info.maxRowsPerSecond {
            _ = try await calls { try await self.coordinator.setMaxRowsPerSecond(self.run, limit) }
        }
        state.withLock { $0.info = info }
        return info
    }

    private func refuseMismatch(_ info: BackfillRunInfo) throws {
        try info.refuseMismatch(kind: "verify", rate: core.gate.rate, usesVersions: core.usesVersions, scope: scope)
    }

    private func stopping() -> Bool { Task.isCancelled || Task.isShuttingDownGracefully }

    /// Walks Old's keys once and cuts them into chunks, then New's keys after Old's last one: the chunks cover
    /// every key either store held when the run was planned.
    private func makePlan(fleetMark: UInt64?) async throws -> BackfillRunPlan<Key> {
        var chunks: [BackfillChunkRange<Key>] = []
        for role in [StoreRole.old, .new] {
            var cursor = chunks.last?.through
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
                if chunks.isEmpty { try requireKeyOrder(probe: last) }
                chunks.append(BackfillChunkRange(after: cursor, through: last, plannedRows: keys.count))
                cursor = last
                if keys.count < limit { break }
            }
        }
        return BackfillRunPlan(
            run: run,
            rate: core.gate.rate,
            usesVersions: core.usesVersions,
            maxRowsPerSecond: options.maxRowsPerSecond,
            chunks: chunks,
            fleetMark: fleetMark,
            scope: scope
        )
    }

    /// Refuses stores that cannot compare keys in their listing order, before a run is planned for them.
    private func requireKeyOrder(probe key: Key) throws {
        for role in [StoreRole.old, .new] {
            let answer = role == .old ? core.old.listsKey(key, before: key) : core.new.listsKey(key, before: key)
            guard answer != nil else {
                throw ZDDMError(
                    .unsupported,
                    role: role,
                    operation: .listKeys,
                    message: "a chunked verify needs a store that can compare keys in its listing order"
                )
            }
        }
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
    /// The chunk's lease is renewed in the background while it is verified, so a slow page or repair does not
    /// lose it; a worker whose chunk was taken over anyway stops and drops what it found there.
    private func verify(_ claim: BackfillChunkClaim<Key>, info: BackfillRunInfo) async throws {
        let range = VerifyRange(after: claim.range.after, through: claim.range.through)
        var part = VerifyReport<Key>()
        let lost = LostFlag()
        let renewal = Task { [calls, coordinator, options, core] in
            while true {
                do {
                    try await core.clock.sleep(for: options.leaseDuration / 3)
                    let held = try await calls { try await coordinator.renew(claim, lease: options.leaseDuration) }
                    if !held {
                        lost.set()
                        return
                    }
                } catch {
                    return  // cancelled: the chunk's pass is over
                }
            }
        }
        defer { renewal.cancel() }
        do {
            try await pass.pass(&part, range: range) { keys in
                if self.stopping() { throw Interruption.stopping }
                if lost.isSet { throw Interruption.lost }
                guard info.maxRowsPerSecond != nil else { return }
                let wait = try await self.calls { try await self.coordinator.throttle(self.run, rows: keys) }
                if wait > .zero { try await self.core.clock.sleep(for: wait) }
            }
        } catch Interruption.lost {
            logTakenOver(claim)
            return
        } catch {
            // Stopping, cancelled or failed: the chunk goes back, to be verified again by any worker.
            renewal.cancel()
            await release(claim)
            if case Interruption.stopping = error { return }
            if stopping() { return }
            throw error
        }
        renewal.cancel()
        if stopping() {
            await release(claim)
            return
        }
        if lost.isSet {
            logTakenOver(claim)
            return
        }
        let (scanned, mismatches) = (part.keysInOld, part.mismatches)
        let completed = try await calls {
            try await self.coordinator.complete(claim, scanned: scanned, copied: mismatches)
        }
        guard completed else {
            logTakenOver(claim)
            return
        }
        let limit = options.sampleLimit
        state.withLock { $0.report.add(part, sampleLimit: limit) }
    }

    private func logTakenOver(_ claim: BackfillChunkClaim<Key>) {
        core.logger.warning(
            "verify chunk was taken over by another worker (this one's lease expired); its findings here are dropped",
            metadata: ["zddm.verify": "\(run)", "zddm.chunk": "\(claim.chunk)"]
        )
    }

    private func release(_ claim: BackfillChunkClaim<Key>) async {
        // Best effort: a chunk not released comes back when its lease expires.
        do {
            try await coordinator.release(claim)
        } catch {
            core.logger.warning(
                "could not release a verify chunk; it comes back when its lease expires",
                metadata: [
                    "zddm.verify": "\(run)", "zddm.chunk": "\(claim.chunk)",
                    "zddm.error": "\(ZDDMError.describe(error))",
                ]
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
