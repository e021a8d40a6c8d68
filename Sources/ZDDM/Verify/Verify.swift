public import ServiceLifecycle

/// Compares Old and New key by key, reports mismatches, and can repair them from Old; also a `Service`.
///
/// With versions (and without ``VerifyOptions/deep``), one streaming pass: Old's and New's keys with their
/// versions (``KeyValueStore/keyVersions(after:limit:)``), in pages merged in key order; values are read only for
/// keys whose versions differ or that one side lacks. Otherwise two streaming passes: Old's keys in pages, each
/// page read from New in one batch (missing in New, different values, tombstones where Old has a value), then New's
/// keys in pages, each read from Old (extra in New). Either way memory does not grow with the number of keys, and a
/// key that seems to differ is read again before it is counted, so a write in flight is not reported. Keys the gate does not admit are not expected in New: their absence is not a
/// mismatch.
///
/// Repair makes New agree with Old without ever writing a value older than Old's: each mismatched key is invalidated
/// in New (registered with the migration's safety memory like a write, which also clears a mark the memory held for
/// it), then copied from Old with insert-if-absent, like a backfill batch. The report counts only what the pass did:
/// keys repaired, keys held back (an operation in flight, New traffic off) and keys whose repair failed; a failure
/// of New does not stop the pass. A verify pass needs no proxy: build it on the migration's
/// ``MigrationCore`` (the proxy's ``MigrationProxy/core`` when the process also serves traffic).
///
/// A clean pass (``VerifyReport/isClean``) permits `rampdown`: the gate records it, and so, when the core has a
/// ``FleetMember``, does the fleet's shared state (``FleetStateStore/recordCleanVerify(_:startedAt:)``, with the
/// value of ``FleetState/behind`` read before the pass began), which permits `rampdown` fleet-wide until New falls
/// behind again. A shared state that cannot be read or written does not fail the pass: it is logged, and the
/// report's ``VerifyReport/fleetVerifiedBehind`` stays `nil`.
public final class Verify<Old: KeyValueStore, New: KeyValueStore>: Service
where Old.Key == New.Key, Old.Value == New.Value, Old.Key: GateKey {
    public typealias Key = Old.Key
    public typealias Value = Old.Value

    private let core: MigrationCore<Old, New>
    private let options: VerifyOptions
    private let equal: @Sendable (Value, Value) -> Bool
    private let onReport: (@Sendable (VerifyReport<Key>) -> Void)?

    /// Creates a verify pass.
    /// - Parameters:
    ///   - core: The migration's stores, gate, safety memory, metrics and clock.
    ///   - options: Paging, repair and sampling.
    ///   - equal: How values are compared.
    ///   - onReport: Called with the report at the end of ``run()``.
    /// - Throws: ``ZDDMError`` when a store cannot list its keys or an option is out of range.
    public init(
        core: MigrationCore<Old, New>,
        options: VerifyOptions = VerifyOptions(),
        equal: @escaping @Sendable (Value, Value) -> Bool,
        onReport: (@Sendable (VerifyReport<Key>) -> Void)? = nil
    ) throws {
        guard options.batchSize >= 1 else {
            throw ZDDMError(.invalidArgument, message: "batch size must be at least 1, got \(options.batchSize)")
        }
        if let rate = options.maxRowsPerSecond, !(rate > 0) {
            throw ZDDMError(.invalidArgument, message: "max rows per second must be above 0, got \(rate)")
        }
        guard core.old.capabilities.contains(.orderedKeys) else {
            throw ZDDMError(.unsupported, role: .old, operation: .listKeys, message: "verify needs ordered keys")
        }
        guard core.new.capabilities.contains(.orderedKeys) else {
            throw ZDDMError(.unsupported, role: .new, operation: .listKeys, message: "verify needs ordered keys")
        }
        self.core = core
        self.options = options
        self.equal = equal
        self.onReport = onReport
    }

    /// Runs one pass and hands the report to `onReport`.
    public func run() async throws {
        let report = try await verify()
        onReport?(report)
    }

    /// Runs one pass.
    /// - Returns: The report.
    /// - Throws: ``ZDDMError`` when a store fails.
    public func verify() async throws -> VerifyReport<Key> {
        var report = VerifyReport<Key>()
        // In a fleet: the shared barrier before anything is compared, so a fall-behind during the pass revokes it.
        let fleetMark = await readFleetMark()
        report.safetyMark = core.ledger.takeMark()
        let mark = core.gate.newBehindMark
        let rateAtStart = core.gate.rate
        let limiter = options.maxRowsPerSecond.map { RateLimiter(unitsPerSecond: $0, clock: core.clock) }
        try await pass(&report, range: VerifyRange()) { try await limiter?.acquire($0) }
        if report.mismatches > 0 {
            core.metrics.verifyMismatches(report.counts)
        } else if !Task.isCancelled, rateAtStart >= 1, core.unsafeKeyCount == 0, !core.isDegraded {
            // A complete, clean pass at rate 1: New holds what Old holds, unless something happened meanwhile.
            report.isClean = true
            core.gate.recordCleanVerify(startedAt: mark)
            if let fleetMark { report.fleetVerifiedBehind = await recordFleetPass(startedAt: fleetMark) }
        }
        core.logger.info(
            "verify finished",
            metadata: ["zddm.mismatches": "\(report.mismatches)", "zddm.repaired": "\(report.repaired)"]
        )
        return report
    }

    /// Compares the keys of `range`, adding what it finds to `report`; `pace` is called with the number of keys
    /// about to be compared, before each page: a throttle, and in a chunked run where a stop or a chunk taken over
    /// interrupts the pass (by throwing).
    func pass(
        _ report: inout VerifyReport<Key>,
        range: VerifyRange<Key>,
        pace: (Int) async throws -> Void
    ) async throws {
        if core.usesVersions, !options.deep {
            try await versionPass(&report, range: range, pace: pace)
        } else {
            try await valuePasses(&report, range: range, pace: pace)
        }
    }

    /// A page of keys cut at the range's end, and whether the range ends with it.
    private func cut(_ keys: [Key], _ range: VerifyRange<Key>, _ role: StoreRole) throws -> (keys: [Key], atEnd: Bool) {
        guard let through = range.through, let last = keys.last, try isPast(through, last, role) else {
            // A page that ends at the range's last key ends the range: no read past it.
            return (keys, keys.count < options.batchSize || keys.last == range.through)
        }
        let end = try keys.firstIndex { try isPast(through, $0, role) } ?? keys.count
        return (Array(keys[..<end]), true)
    }

    private func isPast(_ bound: Key, _ key: Key, _ role: StoreRole) throws -> Bool {
        role == .old ? try Self.past(bound, key, in: core.old, role) : try Self.past(bound, key, in: core.new, role)
    }

    /// Whether `key` comes after `bound` in `store`'s listing order.
    static func past(
        _ bound: Key,
        _ key: Key,
        in store: some KeyValueStore<Key, Value>,
        _ role: StoreRole
    ) throws -> Bool {
        guard let after = store.listsKey(bound, before: key) else {
            throw ZDDMError(
                .unsupported,
                role: role,
                operation: .listKeys,
                message: "a chunked verify needs a store that can compare keys in its listing order"
            )
        }
        return after
    }

    /// The pass without versions (or deep): Old's keys against New with their values, then New's keys against Old.
    private func valuePasses(
        _ report: inout VerifyReport<Key>,
        range: VerifyRange<Key>,
        pace: (Int) async throws -> Void
    ) async throws {
        let old = core.old
        let new = core.new
        // Pass 1: Old's keys against New.
        var cursor = range.after
        while !Task.isCancelled {
            let (keys, atEnd) = try cut(
                try await Self.store(.old, .listKeys) { try await old.keys(after: cursor, limit: options.batchSize) },
                range,
                .old
            )
            guard let last = keys.last else { break }
            try await pace(keys.count)
            report.keysInOld += keys.count
            report.comparedByValue += keys.count
            let suspects = try await core.traced("zddm.verify.batch") { span in
                span?.attributes["zddm.batch.size"] = keys.count
                var suspects = try await classify(keys)
                if !suspects.isEmpty { suspects = try await classify(suspects.map(\.key)) }
                span?.attributes["zddm.batch.mismatches"] = suspects.count
                return suspects
            }
            for suspect in suspects { record(suspect.key, suspect.kind, in: &report) }
            if options.repair, !suspects.isEmpty {
                if core.isNewTrafficAllowed {
                    let outcome = await repair(suspects.map(\.key))
                    report.repaired += outcome.repaired
                    report.notRepaired += outcome.notRepaired
                    report.repairFailed += outcome.failed
                } else {
                    report.notRepaired += suspects.count
                }
            }
            if atEnd { break }
            cursor = last
        }
        // Pass 2: New's keys against Old, for values Old no longer has.
        cursor = range.after
        while !Task.isCancelled {
            let (keys, atEnd) = try cut(
                try await Self.store(.new, .listKeys) { try await new.keys(after: cursor, limit: options.batchSize) },
                range,
                .new
            )
            guard let last = keys.last else { break }
            try await pace(keys.count)
            report.keysInNew += keys.count
            var extra = try await extraInNew(keys)
            if !extra.isEmpty { extra = try await extraInNew(extra) }
            for key in extra { record(key, .extraInNew, in: &report) }
            if options.repair {
                for key in extra {
                    guard core.isNewTrafficAllowed else {
                        report.notRepaired += 1
                        continue
                    }
                    do {
                        try await core.invalidateForRepair(key)
                        report.repaired += 1
                    } catch {
                        report.repairFailed += 1
                    }
                }
            }
            if atEnd { break }
            cursor = last
        }
    }

    /// The pass by versions: Old's and New's (key, version) lists merged in key order; values are read only for
    /// keys whose versions differ or that one side lacks, and read twice before a mismatch is counted.
    private func versionPass(
        _ report: inout VerifyReport<Key>,
        range: VerifyRange<Key>,
        pace: (Int) async throws -> Void
    ) async throws {
        var oldSide = VersionStream(role: .old, limit: options.batchSize, after: range.after) {
            [core] cursor, limit in
            try await core.old.keyVersions(after: cursor, limit: limit)
        }
        var newSide = VersionStream(role: .new, limit: options.batchSize, after: range.after) {
            [core] cursor, limit in
            try await core.new.keyVersions(after: cursor, limit: limit)
        }
        if let through = range.through {
            oldSide.isPast = { [core] key in try Self.past(through, key, in: core.old, .old) }
            newSide.isPast = { [core] key in try Self.past(through, key, in: core.new, .new) }
            oldSide.isLast = { $0 == through }
            newSide.isLast = { $0 == through }
        }
        var suspects: [Key] = []
        var compared = 0
        while !Task.isCancelled {
            let oldHead = try await oldSide.head()
            let newHead = try await newSide.head()
            guard oldHead != nil || newHead != nil else { break }
            if let old = oldHead, let new = newHead, old.key == new.key {
                oldSide.advance()
                newSide.advance()
                if !old.isTombstone { report.keysInOld += 1 }
                if !new.isTombstone { report.keysInNew += 1 }
                report.comparedByVersion += 1
                if old.version != new.version || old.isTombstone != new.isTombstone {
                    if !(old.isTombstone && new.isTombstone) { suspects.append(old.key) }
                }
            } else if let old = oldHead, newHead.map({ core.old.listsKey(old.key, before: $0.key) ?? true }) ?? true {
                // Only in Old: missing in New, unless Old holds a deletion, or the gate keeps the key out of New.
                oldSide.advance()
                if !old.isTombstone {
                    report.keysInOld += 1
                    if core.gate.admits(old.key) { suspects.append(old.key) }
                }
            } else if let new = newHead {
                // Only in New: extra, unless New holds a tombstone.
                newSide.advance()
                if !new.isTombstone {
                    report.keysInNew += 1
                    suspects.append(new.key)
                }
            }
            compared += 1
            if compared >= options.batchSize || suspects.count >= options.batchSize {
                try await pace(compared)
                compared = 0
            }
            if suspects.count >= options.batchSize {
                try await settle(suspects, &report)
                suspects.removeAll(keepingCapacity: true)
            }
        }
        if !suspects.isEmpty, !Task.isCancelled { try await settle(suspects, &report) }
    }

    /// Counts a mismatch, and keeps it in the sample while there is room.
    private func record(_ key: Key, _ kind: MismatchKind, in report: inout VerifyReport<Key>) {
        report.counts[kind, default: 0] += 1
        if report.sample.count < options.sampleLimit { report.sample.append(VerifyMismatch(key: key, kind: kind)) }
    }

    /// Compares the values of keys whose versions differ, twice (a write in flight is not a mismatch), records the
    /// mismatches and repairs them when asked.
    private func settle(
        _ keys: [Key],
        _ report: inout VerifyReport<Key>
    ) async throws {
        report.comparedByValue += keys.count
        var found = try await compareValues(keys)
        if !found.isEmpty { found = try await compareValues(found.map(\.key)) }
        for mismatch in found { record(mismatch.key, mismatch.kind, in: &report) }
        guard options.repair, !found.isEmpty else { return }
        guard core.isNewTrafficAllowed else {
            report.notRepaired += found.count
            return
        }
        let extra = found.filter { $0.kind == .extraInNew }.map(\.key)
        let fromOld = found.filter { $0.kind != .extraInNew }.map(\.key)
        if !fromOld.isEmpty {
            let outcome = await repair(fromOld)
            report.repaired += outcome.repaired
            report.notRepaired += outcome.notRepaired
            report.repairFailed += outcome.failed
        }
        for key in extra {
            do {
                try await core.invalidateForRepair(key)
                report.repaired += 1
            } catch {
                report.repairFailed += 1
            }
        }
    }

    /// How each key's values differ, if they do.
    private func compareValues(_ keys: [Key]) async throws -> [VerifyMismatch<Key>] {
        let oldRecords = try await Self.store(.old, .readMany) { try await core.old.readMany(keys) }
        let newRecords = try await Self.store(.new, .readMany) { try await core.new.readMany(keys) }
        var mismatches: [VerifyMismatch<Key>] = []
        for key in keys {
            switch (oldRecords[key]?.value, newRecords[key]) {
            case (_?, nil):
                if core.gate.admits(key) { mismatches.append(VerifyMismatch(key: key, kind: .missingInNew)) }
            case (_?, .tombstone):
                mismatches.append(VerifyMismatch(key: key, kind: .tombstoneInNew))
            case (let oldValue?, .value(let newValue)):
                if !equal(oldValue, newValue) { mismatches.append(VerifyMismatch(key: key, kind: .differentValue)) }
            case (nil, .value):
                mismatches.append(VerifyMismatch(key: key, kind: .extraInNew))
            case (nil, .tombstone), (nil, nil):
                break
            }
        }
        return mismatches
    }

    /// The fleet's ``FleetState/behind`` before the pass, or `nil` without a fleet or when it cannot be read.
    func readFleetMark() async -> UInt64? {
        guard let fleet = core.fleet else { return nil }
        do {
            return try await fleet.sharedBehind()
        } catch {
            core.logger.warning(
                "verify could not read the fleet's shared state; a clean pass will not be recorded there",
                metadata: ["zddm.error_type": "\(type(of: error))"]
            )
            return nil
        }
    }

    /// Records a clean pass in the fleet's shared state; returns the value recorded, or `nil` when it failed.
    func recordFleetPass(startedAt mark: UInt64) async -> UInt64? {
        guard let fleet = core.fleet else { return nil }
        do {
            let state = try await fleet.recordCleanVerify(startedAt: mark)
            core.logger.info(
                "verify recorded a clean pass in the fleet's shared state",
                metadata: [
                    "zddm.verified_behind": "\(mark)", "zddm.behind": "\(state.behind)",
                    "zddm.rampdown_permitted": "\(state.permitsRampdown)",
                ]
            )
            return mark
        } catch {
            core.logger.error(
                "verify could not record its clean pass in the fleet's shared state; rampdown stays refused",
                metadata: ["zddm.error_type": "\(type(of: error))"]
            )
            return nil
        }
    }

    /// Keys of a page of Old's keys that differ in New.
    private func classify(_ keys: [Key]) async throws -> [VerifyMismatch<Key>] {
        let oldRecords = try await Self.store(.old, .readMany) { try await core.old.readMany(keys) }
        let newRecords = try await Self.store(.new, .readMany) { try await core.new.readMany(keys) }
        var suspects: [VerifyMismatch<Key>] = []
        for key in keys {
            guard let oldValue = oldRecords[key]?.value else { continue }  // deleted meanwhile: pass 2's business
            switch newRecords[key] {
            case nil:
                if core.gate.admits(key) { suspects.append(VerifyMismatch(key: key, kind: .missingInNew)) }
            case .tombstone:
                suspects.append(VerifyMismatch(key: key, kind: .tombstoneInNew))
            case .value(let newValue):
                if !equal(oldValue, newValue) { suspects.append(VerifyMismatch(key: key, kind: .differentValue)) }
            }
        }
        return suspects
    }

    /// Keys of a page of New's keys that Old has no value for.
    private func extraInNew(_ keys: [Key]) async throws -> [Key] {
        let oldRecords = try await Self.store(.old, .readMany) { try await core.old.readMany(keys) }
        let newRecords = try await Self.store(.new, .readMany) { try await core.new.readMany(keys) }
        return keys.filter { oldRecords[$0]?.value == nil && newRecords[$0]?.value != nil }
    }

    /// What repairing some keys did.
    private struct RepairOutcome {
        var repaired = 0
        var notRepaired = 0
        var failed = 0
    }

    /// Repairs keys from Old: each is invalidated in New (registered like a write, which also clears a mark the
    /// migration's safety memory held for it), then copied from Old with insert-if-absent. A key whose repair fails
    /// is counted and the pass goes on.
    private func repair(_ keys: [Key]) async -> RepairOutcome {
        var outcome = RepairOutcome()
        var invalidated: [Key] = []
        for key in keys {
            do {
                try await core.invalidateForRepair(key)
                invalidated.append(key)
            } catch {
                outcome.failed += 1
            }
        }
        guard !invalidated.isEmpty else { return outcome }
        do {
            let copy = try await core.copyBatch(invalidated, afterRepair: true)
            // Held back: an operation on the key is in flight, or it was marked again meanwhile; a later pass
            // (or the proxy's own repair) finishes it.
            outcome.notRepaired += copy.heldBack
            outcome.repaired += invalidated.count - copy.heldBack
        } catch {
            outcome.failed += invalidated.count
        }
        return outcome
    }

    private static func store<R>(
        _ role: StoreRole,
        _ operation: StoreOperation,
        _ body: () async throws -> R
    ) async throws -> R {
        do {
            return try await body()
        } catch {
            throw ZDDMError.store(role, operation, error)
        }
    }
}

extension Verify {
    /// Creates a verify pass sharing a proxy's core.
    /// - Parameters:
    ///   - proxy: The migration's proxy.
    ///   - options: Paging, repair and sampling.
    ///   - equal: How values are compared.
    ///   - onReport: Called with the report at the end of ``run()``.
    /// - Throws: ``ZDDMError`` when a store cannot list its keys or an option is out of range.
    public convenience init(
        proxy: MigrationProxy<Old, New>,
        options: VerifyOptions = VerifyOptions(),
        equal: @escaping @Sendable (Value, Value) -> Bool,
        onReport: (@Sendable (VerifyReport<Key>) -> Void)? = nil
    ) throws {
        try self.init(core: proxy.core, options: options, equal: equal, onReport: onReport)
    }
}

extension Verify where Value: Equatable {
    /// Creates a verify pass comparing values with `==`.
    /// - Parameters:
    ///   - core: The migration's core.
    ///   - options: Paging, repair and sampling.
    ///   - onReport: Called with the report at the end of ``run()``.
    /// - Throws: ``ZDDMError`` when a store cannot list its keys or an option is out of range.
    public convenience init(
        core: MigrationCore<Old, New>,
        options: VerifyOptions = VerifyOptions(),
        onReport: (@Sendable (VerifyReport<Key>) -> Void)? = nil
    ) throws {
        try self.init(core: core, options: options, equal: { $0 == $1 }, onReport: onReport)
    }

    /// Creates a verify pass sharing a proxy's core, comparing values with `==`.
    /// - Parameters:
    ///   - proxy: The migration's proxy.
    ///   - options: Paging, repair and sampling.
    ///   - onReport: Called with the report at the end of ``run()``.
    /// - Throws: ``ZDDMError`` when a store cannot list its keys or an option is out of range.
    public convenience init(
        proxy: MigrationProxy<Old, New>,
        options: VerifyOptions = VerifyOptions(),
        onReport: (@Sendable (VerifyReport<Key>) -> Void)? = nil
    ) throws {
        try self.init(core: proxy.core, options: options, equal: { $0 == $1 }, onReport: onReport)
    }
}

/// How a ``Verify`` pass runs.
public struct VerifyOptions: Sendable {
    /// Keys per page.
    public var batchSize: Int = 500
    /// Whether to repair mismatches.
    public var repair = false
    /// The most mismatched keys kept in the report's sample.
    public var sampleLimit = 20
    /// The most rows compared per second, or `nil` for no limit.
    public var maxRowsPerSecond: Double?
    /// With versions, compare every value too. By default a pass with versions compares each key's version on
    /// both sides and reads values only where they differ or one side lacks the key.
    public var deep = false
    /// A chunked run (``ChunkedVerify``): workers in this process, each verifying one chunk at a time.
    public var workers: Int = 1
    /// A chunked run: keys per chunk when the run is planned.
    public var chunkRows: Int = 10_000
    /// A chunked run: how long a claimed chunk stays a worker's without a renewal; after that any worker may
    /// take it over and verify it again.
    public var leaseDuration: Duration = .seconds(30)
    /// A chunked run: this process's workers' names are this name followed by `-1`, `-2`, …; by default the host
    /// name and process identifier.
    public var workerName: String?
    /// A chunked run: how often a worker with no chunk to claim looks again while other workers finish theirs.
    public var idlePollInterval: Duration = .seconds(1)
    /// A chunked run: the first delay before a failed coordinator call is tried again; it doubles up to 5 seconds.
    public var retryDelay: Duration = .milliseconds(100)
    /// A chunked run: what it covers, recorded when it is planned (``BackfillRunPlan/scope``) together with
    /// ``deep`` and ``repair``; a worker whose scope differs is refused. By default the migration's name.
    public var runScope: String?

    /// Creates options with the defaults.
    public init() {}
}

/// A part of the key space: the keys after ``after`` (from the first when `nil`) through ``through`` (to the last
/// when `nil`), in the stores' listing order.
struct VerifyRange<Key: Sendable>: Sendable {
    var after: Key?
    var through: Key?
}

/// One side's (key, version) list, read page by page.
private struct VersionStream<Key: Sendable> {
    let role: StoreRole
    let limit: Int
    let fetch: @Sendable (Key?, Int) async throws -> [KeyVersion<Key>]
    /// Whether a key is past the range's end (the stream ends before it); `nil` for a range without end.
    var isPast: ((Key) throws -> Bool)?
    /// Whether a key is the range's last one (no page is read after a page that ends with it).
    var isLast: ((Key) -> Bool)?
    private var page: [KeyVersion<Key>] = []
    private var index = 0
    private var cursor: Key?
    private var exhausted = false

    init(
        role: StoreRole,
        limit: Int,
        after: Key?,
        fetch: @escaping @Sendable (Key?, Int) async throws -> [KeyVersion<Key>]
    ) {
        self.role = role
        self.limit = limit
        self.cursor = after
        self.fetch = fetch
    }

    /// The next entry, reading the next page when needed; `nil` at the end (of the store, or of the range).
    mutating func head() async throws -> KeyVersion<Key>? {
        if index >= page.count {
            guard !exhausted else { return nil }
            let cursor = cursor
            do {
                page = try await fetch(cursor, limit)
            } catch {
                throw ZDDMError.store(role, .listKeys, error)
            }
            index = 0
            if page.count < limit || page.last.map({ isLast?($0.key) ?? false }) == true { exhausted = true }
            self.cursor = page.last?.key ?? cursor
            guard !page.isEmpty else { return nil }
        }
        let entry = page[index]
        if let isPast, try isPast(entry.key) {
            exhausted = true
            page = []
            return nil
        }
        return entry
    }

    mutating func advance() { index += 1 }
}
