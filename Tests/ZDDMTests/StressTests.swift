import Foundation
import Testing
import ZDDM
import ZDDMTesting

/// The seed for this run: `ZDDM_STRESS_SEED` replays a failure, otherwise a fresh random seed.
func stressSeed() -> UInt64 {
    if let text = ProcessInfo.processInfo.environment["ZDDM_STRESS_SEED"], let seed = UInt64(text) { return seed }
    return UInt64.random(in: 0...UInt64.max)
}

/// Runs a stress test on two fresh in-memory stores with a fresh seed (printed), and expects no violation.
@discardableResult
func runStress<Key: GateKey & Comparable, Value: Hashable & Sendable>(
    key: @escaping @Sendable (Int) -> Key,
    value: @escaping @Sendable (Int) -> Value,
    configure: (inout MigrationStressTest<InMemoryStore<Key, Value>, InMemoryStore<Key, Value>>.Configuration) -> Void
) async throws -> MigrationStressTest<InMemoryStore<Key, Value>, InMemoryStore<Key, Value>>.Report {
    let seed = stressSeed()
    print("stress seed \(seed) (replay with ZDDM_STRESS_SEED=\(seed))")
    var configuration = MigrationStressTest<InMemoryStore<Key, Value>, InMemoryStore<Key, Value>>.Configuration(
        seed: seed
    )
    configure(&configuration)
    let report = try await MigrationStressTest(
        old: InMemoryStore<Key, Value>(),
        new: InMemoryStore<Key, Value>(),
        configuration: configuration,
        key: key,
        value: value
    ).run()
    print(report)
    #expect(report.violations.isEmpty, "\(report.violations.prefix(10)) — replay with ZDDM_STRESS_SEED=\(seed)")
    return report
}

@Suite("Concurrency stress: the migration invariants")
struct StressTests {
    @Test("Random reads, writes and deletes with random delays: invariants 1-4 hold")
    func delaysOnly() async throws {
        let report = try await runStress(key: { $0 }, value: { $0 }, configure: { $0.rate = 1 })
        #expect(report.operations == 8 * 250)
        #expect(report.keysInconsistentBeforeRepair == 0)
    }

    @Test("At a partial rate, with 30% New failures and the rate and killswitch flipping: invariants 1-3 hold")
    func failuresAndFlips() async throws {
        let report = try await runStress(
            key: { "key-\($0)" },
            value: { "value-\($0)" },
            configure: { configuration in
                configuration.newFailureRate = 0.3
                configuration.flipControls = true
            }
        )
        // Failures were injected at volume (how many depends on how long the flips kept New traffic off).
        #expect(report.injectedNewFailures > 20)
        #expect(report.controlFlips > 10)
    }

    @Test("The checker itself catches a proxy that loses writes: a store that drops every third write")
    func checkerCatchesLostWrites() async throws {
        let base = InMemoryStore<Int, Int>()
        let counter = CallCounter()
        let lossy = ClosureStore<Int, Int>(
            read: { try await base.read($0) },
            write: { key, value in
                if counter.next(.write, nil) % 3 != 0 { try await base.write(key, value) }
            },
            delete: { try await base.delete($0) }
        )
        var configuration = MigrationStressTest<ClosureStore<Int, Int>, InMemoryStore<Int, Int>>.Configuration(
            seed: 1
        )
        configuration.tasks = 2
        configuration.operationsPerTask = 100
        configuration.maxDelay = .zero
        let report = try await MigrationStressTest(
            old: lossy,
            new: InMemoryStore<Int, Int>(),
            configuration: configuration,
            key: { $0 },
            value: { $0 }
        ).run()
        #expect(!report.violations.isEmpty)
    }

    @Test("With a New-call budget below New's delays and a circuit breaker: invariants 1-3 hold")
    func budgetAndBreaker() async throws {
        try await runStress(
            key: { $0 },
            value: { $0 },
            configure: { configuration in
                configuration.maxDelay = .milliseconds(2)
                configuration.newCallTimeout = .milliseconds(1)
                configuration.newFailureRate = 0.2
                configuration.flipControls = true
                configuration.circuitBreaker = CircuitBreakerConfiguration(
                    minimumCalls: 20,
                    failureRatio: 0.6,
                    openDuration: .milliseconds(20),
                    probeCalls: 2
                )
            }
        )
    }

    @Test("With write-back (New written in the background through a bounded queue), delays only: invariants 1-4")
    func writeBack() async throws {
        try await runStress(key: { $0 }, value: { $0 }, configure: { $0.writeBack = true })
    }

    @Test("With write-back, New failures and control flips: invariants 1-3")
    func writeBackWithFailures() async throws {
        try await runStress(
            key: { $0 },
            value: { $0 },
            configure: { configuration in
                configuration.writeBack = true
                configuration.newFailureRate = 0.3
                configuration.flipControls = true
            }
        )
    }
}
