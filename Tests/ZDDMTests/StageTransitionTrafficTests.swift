import Synchronization
import Testing
import ZDDM
import ZDDMTesting

/// The later stages and their transitions under concurrent traffic: live → rampdown → live (rollback) →
/// rampdown → complete, checking after each phase that the stores hold every acknowledged write.
@Suite("Stages under traffic")
struct StageTransitionTrafficTests {
    final class Model: Sendable {
        /// The last acknowledged write per key, in the order calls finished (one writer per key, so it is exact).
        let last = Mutex<[Int: Int?]>([:])
        let failures = Atomic<Int>(0)
    }

    /// Traffic where each key has one writer task, so "the last acknowledged write" is exact; every task also
    /// reads random keys (a failed read would count as a failure).
    func traffic(
        _ proxy: MigrationProxy<
            FaultInjectingStore<InMemoryStore<Int, Int>>, FaultInjectingStore<InMemoryStore<Int, Int>>
        >,
        _ model: Model,
        phase: Int,
        during: (@Sendable () async throws -> Void)? = nil
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask {
                    var random = SplitMix64(seed: UInt64(phase * 10 + writer))
                    for step in 0..<150 {
                        let key = writer * 4 + Int.random(in: 0..<4, using: &random)
                        do {
                            if Int.random(in: 0..<5, using: &random) == 0 {
                                try await proxy.delete(key)
                                model.last.withLock { $0[key] = .some(nil) }
                            } else {
                                let value = phase * 1_000_000 + writer * 10_000 + step
                                try await proxy.write(key, value)
                                model.last.withLock { $0[key] = .some(value) }
                            }
                            _ = try await proxy.read(Int.random(in: 0..<16, using: &random))
                        } catch {
                            model.failures.add(1, ordering: .relaxed)
                        }
                    }
                }
            }
            if let during { group.addTask { try await during() } }
            try await group.waitForAll()
        }
    }

    func check(_ store: InMemoryStore<Int, Int>, _ model: Model, _ label: String) async throws {
        let expected = model.last.withLock { $0 }
        for (key, value) in expected {
            let record = try await store.read(key)
            #expect(record?.value == value, "\(label): key \(key)")
        }
    }

    @Test("live → rampdown → live → rampdown → complete with traffic: no failed call, no lost write")
    func transitionsUnderTraffic() async throws {
        let oldBase = InMemoryStore<Int, Int>()
        let newBase = InMemoryStore<Int, Int>()
        let old = FaultInjectingStore(oldBase, faults: .init(maxDelay: .microseconds(200)), seed: 1)
        let new = FaultInjectingStore(newBase, faults: .init(maxDelay: .microseconds(200)), seed: 2)
        let gate = try TrafficGate(rate: 1)
        let proxy = try MigrationProxy(name: "stages", old: old, new: new, gate: gate)
        let model = Model()

        func verifyClean() async throws {
            await proxy.repairUnsafeKeys()
            var repair = VerifyOptions()
            repair.repair = true
            _ = try await Verify(proxy: proxy, options: repair).verify()
            #expect(try await Verify(proxy: proxy).verify().mismatches == 0)
        }

        try await traffic(proxy, model, phase: 1)  // live
        try await check(oldBase, model, "live, Old")
        try await verifyClean()
        try gate.setStage(.rampdown)

        // Rampdown, rolled back to live while writes are in flight.
        try await traffic(proxy, model, phase: 2) {
            try await Task.sleep(for: .milliseconds(20))
            try gate.setStage(.live)
        }
        #expect(gate.stage == .live)
        try await check(oldBase, model, "after rollback, Old")
        try await verifyClean()
        try gate.setStage(.rampdown)

        try await traffic(proxy, model, phase: 3)  // rampdown: New first, then Old
        try await check(newBase, model, "rampdown, New")
        try await check(oldBase, model, "rampdown, Old")
        try gate.setStage(.complete)
        let oldCalls = old.calls
        try await traffic(proxy, model, phase: 4)  // complete: New only
        #expect(old.calls == oldCalls)
        try await check(newBase, model, "complete, New")
        #expect(model.failures.load(ordering: .relaxed) == 0)
        for key in 0..<16 {
            let expected = model.last.withLock { $0[key] }
            #expect(try await proxy.read(key) == expected ?? nil)
        }
    }
}
