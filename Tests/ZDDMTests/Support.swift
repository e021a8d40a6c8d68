import CoreMetrics
import Logging
import Synchronization
import Testing
import ZDDM
import ZDDMTesting

typealias MemoryStore = InMemoryStore<String, String>
typealias Faulty = FaultInjectingStore<MemoryStore>

/// Old and New in-memory stores behind fault-injecting wrappers, and a proxy over them.
struct Harness {
    let oldBase = MemoryStore()
    let newBase = MemoryStore()
    let old: Faulty
    let new: Faulty
    let gate: TrafficGate
    let proxy: MigrationProxy<Faulty, Faulty>

    /// - Parameter versions: Whether the proxy uses the stores' versions; the per-process protection by default.
    init(
        rate: Double = 1,
        versions: Bool = false,
        maxUnsafeKeys: Int = 100_000,
        metrics: (any MetricsFactory)? = nil,
        logger: Logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    ) throws {
        old = Faulty(oldBase)
        new = Faulty(newBase)
        gate = try TrafficGate(rate: rate)
        proxy = try MigrationProxy(
            name: "test",
            old: old,
            new: new,
            gate: gate,
            options: .init(maxUnsafeKeys: maxUnsafeKeys, usesVersions: versions),
            logger: logger,
            metricsFactory: metrics
        )
    }

    func newRecord(_ key: String) async throws -> StoreRecord<String>? {
        try await newBase.read(key)
    }

    func oldRecord(_ key: String) async throws -> StoreRecord<String>? {
        try await oldBase.read(key)
    }
}

/// Counts the calls of one operation and lets a test hold the n-th call.
final class CallCounter: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    /// Increments and returns the count for an operation and key.
    func next(_ operation: StoreOperation, _ key: String?) -> Int {
        counts.withLock { counts in
            let name = "\(operation)/\(key ?? "")"
            counts[name, default: 0] += 1
            return counts[name, default: 0]
        }
    }
}

/// Polls `condition` until it holds, for at most `deadline` (generous: a busy machine is slow, not wrong).
func eventually(
    within deadline: Duration = .seconds(60),
    _ condition: () async throws -> Bool,
    sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    let clock = ContinuousClock()
    let end = clock.now + deadline
    while clock.now < end {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(2))
    }
    Issue.record("condition not met within \(deadline)", sourceLocation: sourceLocation)
}
