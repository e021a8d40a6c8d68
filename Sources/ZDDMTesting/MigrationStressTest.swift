import Synchronization
public import ZDDM

/// A seeded concurrency stress test of a proxy over two stores, checking the invariants in the Semantics article.
///
/// Many tasks do random reads, writes and deletes over a small key space through one ``MigrationProxy``; both
/// stores are wrapped in ``FaultInjectingStore`` to add random delays and, optionally, New failures; a controller
/// task can flip the rate and the killswitch meanwhile. Every call is recorded with logical start and end times.
/// After quiescence it checks:
///
/// 1. No write or delete that Old acknowledged is lost or undone: each key's final value in Old is the effect of
///    a mutation no other mutation strictly followed.
/// 2. No call failed (only New is made to fail).
/// 3. After ``MigrationProxy/repairUnsafeKeys(limit:)`` (and, if the proxy degraded, a verify-and-repair pass),
///    every key in New equals Old's value, or is absent, or is a tombstone where Old has none.
/// 4. Without New failures and with a fixed rate: the same holds before any repair.
///
/// It also checks that no read returned a stale value: every read returned the effect of a mutation (or the
/// initial value) that was not already overwritten by a mutation that ended before the read began.
public struct MigrationStressTest<Old: KeyValueStore, New: KeyValueStore>: Sendable
where Old.Key == New.Key, Old.Value == New.Value, Old.Key: GateKey, Old.Value: Hashable {
    public typealias Key = Old.Key
    public typealias Value = Old.Value

    /// What the test does.
    public struct Configuration: Sendable {
        /// The seed; the same seed replays the same operations (interleavings depend on scheduling).
        public var seed: UInt64
        /// Concurrent client tasks.
        public var tasks: Int = 8
        /// Operations per client task.
        public var operationsPerTask: Int = 250
        /// Number of distinct keys.
        public var keySpace: Int = 16
        /// The rate when ``flipControls`` is off.
        public var rate: Double = 1
        /// Share of New calls that fail.
        public var newFailureRate: Double = 0
        /// Largest random delay added to every store call.
        public var maxDelay: Duration = .milliseconds(1)
        /// Whether a controller task flips the rate, the killswitch and the stage (`off`, `dualwrite`, `shadow`,
        /// `live`) while clients run.
        public var flipControls: Bool = false
        /// The proxy's budget for New calls; with delays above it, many New calls are abandoned mid-flight.
        public var newCallTimeout: Duration?
        /// The proxy's circuit breaker.
        public var circuitBreaker: CircuitBreakerConfiguration?
        /// Whether writes go through write-back (acknowledged once Old has them; New follows in the background).
        public var writeBack = false
        /// Whether the proxy uses versions when the stores keep them (fenced writes); write-back needs `false`.
        public var usesVersions = true

        /// Creates a configuration.
        /// - Parameter seed: The seed.
        public init(seed: UInt64) {
            self.seed = seed
        }
    }

    /// What the run saw.
    public struct Report: Sendable, CustomStringConvertible {
        public var seed: UInt64
        public var operations: Int
        public var reads: Int
        public var failedCalls: Int
        public var injectedNewFailures: Int
        public var controlFlips: Int
        public var keysInconsistentBeforeRepair: Int
        public var degraded: Bool
        /// Invariant violations; empty when the run passed.
        public var violations: [String]

        public var description: String {
            "seed \(seed): \(operations) operations (\(reads) reads), \(failedCalls) failed calls, "
                + "\(injectedNewFailures) injected New failures, \(controlFlips) control flips, "
                + "\(keysInconsistentBeforeRepair) keys inconsistent before repair, degraded: \(degraded), "
                + "\(violations.count) violations"
        }
    }

    private enum Kind: Sendable { case read, write, delete }

    private struct Record: Sendable {
        var kind: Kind
        var key: Int
        /// The value written, or read (`nil` for a delete or a not-found read).
        var value: Value?
        var start: Int
        var end: Int
        var failed: Bool
    }

    /// The logical clock and the run flag, shared by the client and controller tasks.
    private final class Shared: Sendable {
        let clock = Atomic<Int>(1)
        let running = Atomic<Bool>(true)
    }

    private let old: Old
    private let new: New
    private let key: @Sendable (Int) -> Key
    private let value: @Sendable (Int) -> Value
    private let configuration: Configuration

    /// Creates the test.
    /// - Parameters:
    ///   - old: An empty Old store (the test wraps it).
    ///   - new: An empty New store (the test wraps it).
    ///   - configuration: What to do.
    ///   - key: Distinct keys for `0..<keySpace`.
    ///   - value: Distinct values for distinct integers.
    public init(
        old: Old,
        new: New,
        configuration: Configuration,
        key: @escaping @Sendable (Int) -> Key,
        value: @escaping @Sendable (Int) -> Value
    ) {
        self.old = old
        self.new = new
        self.configuration = configuration
        self.key = key
        self.value = value
    }

    /// Runs the test.
    /// - Returns: The report; check ``Report/violations``.
    /// - Throws: When setting up fails, or a store fails where no failure was injected (checking, repair).
    public func run() async throws -> Report {
        let config = configuration
        let keys = (0..<config.keySpace).map(key)
        let oldStore = FaultInjectingStore(old, faults: .init(maxDelay: config.maxDelay), seed: config.seed)
        let newStore = FaultInjectingStore(
            new,
            faults: .init(failureRate: config.newFailureRate, maxDelay: config.maxDelay),
            seed: config.seed &+ 1
        )
        // Half the keys start with a value in Old.
        var initial: [Int: Value] = [:]
        for index in 0..<config.keySpace where index % 2 == 0 {
            let v = value(1_000_000 + index)
            try await old.write(keys[index], v)
            initial[index] = v
        }
        let gate = try TrafficGate(rate: config.flipControls ? 0.5 : config.rate)
        let proxy = try MigrationProxy(
            name: "stress",
            old: oldStore,
            new: newStore,
            gate: gate,
            options: .init(
                maxUnsafeKeys: 10_000,
                newCallTimeout: config.newCallTimeout,
                circuitBreaker: config.circuitBreaker,
                usesVersions: config.usesVersions && !config.writeBack
            )
        )
        return try await withBackgroundWork(of: proxy) {
            let shared = Shared()
            let marker = MemoryWriteBackMarker()
            if config.writeBack { try await proxy.startWriteBack(maxPending: 8, marker: marker) }

            let flips = Task {
                var random = SplitMix64(seed: config.seed &+ 2)
                var flips = 0
                guard config.flipControls else { return 0 }
                while shared.running.load(ordering: .acquiring) {
                    try? await Task.sleep(for: .milliseconds(2))
                    switch Int.random(in: 0..<3, using: &random) {
                    case 0: try? gate.setRate([0, 0.25, 0.5, 1].randomElement(using: &random) ?? 1)
                    case 1: gate.setKillswitch(Int.random(in: 0..<3, using: &random) == 0)
                    default:
                        let stages: [MigrationStage] = [.off, .dualwrite, .shadow, .live, .live]
                        try? gate.setStage(stages.randomElement(using: &random) ?? .live)
                    }
                    flips += 1
                }
                return flips
            }

            let records = await withTaskGroup(of: [Record].self) { group in
                for worker in 0..<config.tasks {
                    group.addTask {
                        var random = SplitMix64(seed: config.seed &+ 100 &+ UInt64(worker))
                        var records: [Record] = []
                        records.reserveCapacity(config.operationsPerTask)
                        for step in 0..<config.operationsPerTask {
                            let index = Int.random(in: 0..<config.keySpace, using: &random)
                            let roll = Int.random(in: 0..<100, using: &random)
                            let kind: Kind = roll < 50 ? .read : roll < 85 ? .write : .delete
                            var record = Record(kind: kind, key: index, value: nil, start: 0, end: 0, failed: false)
                            if kind == .write { record.value = value(worker * 1_000_000 + step + 1) }
                            record.start = shared.clock.wrappingAdd(1, ordering: .sequentiallyConsistent).oldValue
                            do {
                                switch kind {
                                case .read: record.value = try await proxy.read(keys[index])
                                case .write: try await proxy.write(keys[index], record.value ?? value(0))
                                case .delete: try await proxy.delete(keys[index])
                                }
                            } catch {
                                record.failed = true
                            }
                            record.end = shared.clock.wrappingAdd(1, ordering: .sequentiallyConsistent).oldValue
                            records.append(record)
                        }
                        return records
                    }
                }
                var all: [Record] = []
                for await part in group { all += part }
                return all
            }
            shared.running.store(false, ordering: .releasing)
            let controlFlips = await flips.value

            // Quiescence: background comparisons and abandoned New calls done, New healthy, killswitch off, stage
            // live, rate fixed.
            await proxy.waitForBackgroundWork()
            if config.writeBack { try await proxy.stopWriteBack(marker: marker) }
            newStore.setFaults(.init())
            gate.setKillswitch(false)
            try gate.setStage(.live)
            var violations: [String] = []
            let failedCalls = records.filter(\.failed).count
            if failedCalls > 0 { violations.append("invariant 2: \(failedCalls) calls failed") }

            var byKey: [Int: [Record]] = [:]
            for record in records where !record.failed { byKey[record.key, default: []].append(record) }

            for index in 0..<config.keySpace {
                let ops = byKey[index] ?? []
                let mutations = ops.filter { $0.kind != .read }
                let finalOld = try await old.read(keys[index])?.value
                // Invariant 1: Old holds the effect of a mutation that no other mutation strictly followed.
                let allowed: [Value?] =
                    mutations.isEmpty
                    ? [initial[index]]
                    : mutations.filter { m in !mutations.contains { $0.start > m.end } }.map(\.value)
                if !allowed.contains(where: { $0 == finalOld }) {
                    violations.append("invariant 1: key \(index): Old's final value is not the last acknowledged one")
                }
                // No stale read.
                let initialWrite = Record(
                    kind: .write,
                    key: index,
                    value: initial[index],
                    start: 0,
                    end: 0,
                    failed: false
                )
                let writers = [initialWrite] + mutations
                for read in ops where read.kind == .read {
                    let fresh = writers.contains { w in
                        w.value == read.value && w.start < read.end
                            && !mutations.contains { m in m.start > w.end && m.end < read.start }
                    }
                    if !fresh {
                        violations.append(
                            "stale read: key \(index) read at [\(read.start), \(read.end)] returned an overwritten value"
                        )
                    }
                }
            }

            // Invariant 4 (no New failures, fixed rate), before any repair.
            let inconsistentBefore = try await inconsistentKeys(keys)
            if config.newFailureRate == 0, !config.flipControls, !inconsistentBefore.isEmpty {
                violations.append("invariant 4: keys \(inconsistentBefore) differ in New before any repair")
            }
            // Invariant 3: after the proxy's own repair (and a verify-and-repair pass if it degraded).
            await proxy.repairUnsafeKeys()
            let degraded = proxy.isDegraded
            if degraded {
                for index in try await inconsistentKeys(keys) { try await new.invalidate(keys[index]) }
                proxy.resetAfterVerify()
            }
            let inconsistentAfter = try await inconsistentKeys(keys)
            if !inconsistentAfter.isEmpty {
                violations.append("invariant 3: keys \(inconsistentAfter) differ in New after repair")
            }
            if proxy.unsafeKeyCount != 0 {
                violations.append("\(proxy.unsafeKeyCount) keys still unsafe after repair")
            }
            // Through the proxy, with every key admitted, every key reads as Old has it.
            try gate.setRate(1)
            for index in 0..<config.keySpace {
                for _ in 0..<2 {
                    let viaProxy = try await proxy.read(keys[index])
                    let inOld = try await old.read(keys[index])?.value
                    if viaProxy != inOld {
                        violations.append("key \(index): the proxy served a value Old does not hold")
                        break
                    }
                }
            }
            return Report(
                seed: config.seed,
                operations: records.count,
                reads: records.filter { $0.kind == .read }.count,
                failedCalls: failedCalls,
                injectedNewFailures: newStore.injectedFailures,
                controlFlips: controlFlips,
                keysInconsistentBeforeRepair: inconsistentBefore.count,
                degraded: degraded,
                violations: violations
            )
        }
    }

    /// Keys whose New record is neither absent, nor Old's value, nor a tombstone where Old has nothing.
    private func inconsistentKeys(_ keys: [Key]) async throws -> [Int] {
        var inconsistent: [Int] = []
        for (index, key) in keys.enumerated() {
            let inOld = try await old.read(key)?.value
            switch try await new.read(key) {
            case nil: continue
            case .tombstone: if inOld != nil { inconsistent.append(index) }
            case .value(let v): if v != inOld { inconsistent.append(index) }
            }
        }
        return inconsistent
    }
}

/// A write-back marker in memory, for tests.
final class MemoryWriteBackMarker: WriteBackMarker {
    private let flag = Atomic<Bool>(false)

    func isSet() async throws -> Bool { flag.load(ordering: .acquiring) }
    func set() async throws { flag.store(true, ordering: .releasing) }
    func clear() async throws { flag.store(false, ordering: .releasing) }
}
