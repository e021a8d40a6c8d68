import Synchronization
import Testing
import ZDDM
import ZDDMTesting

@Suite("A fleet under random traffic, control changes, New failures and a writer that bypasses the proxy")
struct FleetStressTests {
    private struct Totals: Sendable {
        var operations = 0
        var failedCalls = 0
        var events: [ConsistencyChecker<String, String>.Event] = []
    }

    private final class Collector: Sendable {
        let totals = Mutex(Totals())
        let operations = Atomic<Int>(0)
    }

    @Test(
        "Three instances: no stale read in any instance, no failed call, and New equals Old once the applier caught up",
        arguments: [false, true]
    )
    func randomTraffic(newFailsInOneInstance: Bool) async throws {
        let seed = UInt64.random(in: 1...UInt64.max)
        print("fleet stress seed \(seed), New failing in one instance: \(newFailsInOneInstance)")
        let fleet = try InProcessFleet(count: 3, viewLease: .milliseconds(200))
        try await fleet.control(FleetControlChange(stage: .live, rate: 1))
        try await fleet.refreshAll()
        if newFailsInOneInstance {
            fleet.instances[0].new.setFaults(.init(failureRate: 0.3, operations: [.read, .writeIfNewer]))
        }
        let collector = Collector()
        let stop = AtomicFlagBox()
        let keys = (0..<12).map { "k\($0)" }
        let bypassKeys = (0..<4).map { "b\($0)" }

        try await withThrowingTaskGroup(of: Void.self) { group in
            for instance in fleet.instances {
                group.addTask { try await instance.member.run() }
                group.addTask { try await instance.applier.run() }
            }
            // Traffic: 2 tasks per instance.
            var traffic: [Task<Void, Never>] = []
            for (index, instance) in fleet.instances.enumerated() {
                for worker in 0..<2 {
                    traffic.append(
                        Task {
                            var random = SplitMix64(seed: seed &+ UInt64(index * 10 + worker))
                            var counter = 0
                            var local = Totals()
                            while !stop.isSet {
                                let key = keys[Int.random(in: 0..<keys.count, using: &random)]
                                let start = HistoryClock.now
                                let choice = Int.random(in: 0..<10, using: &random)
                                do {
                                    if choice < 6 {
                                        let value = try await instance.proxy.read(key)
                                        local.events.append(
                                            .init(
                                                key: key,
                                                operation: .read(value),
                                                start: start,
                                                end: HistoryClock.now
                                            )
                                        )
                                    } else if choice < 9 {
                                        counter += 1
                                        let value = "i\(index)w\(worker)-\(counter)"
                                        try await instance.proxy.write(key, value)
                                        local.events.append(
                                            .init(
                                                key: key,
                                                operation: .write(value),
                                                start: start,
                                                end: HistoryClock.now
                                            )
                                        )
                                    } else {
                                        try await instance.proxy.delete(key)
                                        local.events.append(
                                            .init(key: key, operation: .delete, start: start, end: HistoryClock.now)
                                        )
                                    }
                                } catch {
                                    local.failedCalls += 1
                                }
                                local.operations += 1
                                collector.operations.add(1, ordering: .relaxed)
                                // In-memory stores never suspend: pace the traffic so that the instances' refresh and
                                // applier run (this is a pause between calls, not a wait for anything).
                                try? await Task.sleep(for: .microseconds(200))
                            }
                            let finished = local
                            collector.totals.withLock { totals in
                                totals.operations += finished.operations
                                totals.failedCalls += finished.failedCalls
                                totals.events += finished.events
                            }
                        }
                    )
                }
            }
            // A writer that bypasses the proxy, on keys of its own; reads of them go through the proxies.
            let bypass = Task {
                var counter = 0
                while !stop.isSet {
                    counter += 1
                    let key = bypassKeys[counter % bypassKeys.count]
                    if counter % 7 == 0 {
                        try? await fleet.oldBase.delete(key)
                    } else {
                        try? await fleet.oldBase.write(key, "bypass-\(counter)")
                    }
                    _ = try? await fleet.instances[counter % 3].proxy.read(key)
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
            // The operator: killswitch on and off, rate down and up, stage through dualwrite and back.
            let changes: [FleetControlChange] = [
                FleetControlChange(killswitch: true), FleetControlChange(killswitch: false),
                FleetControlChange(rate: 0.2), FleetControlChange(rate: 1),
                FleetControlChange(stage: .dualwrite), FleetControlChange(stage: .live),
                FleetControlChange(rate: 0.5), FleetControlChange(killswitch: true),
                FleetControlChange(rate: 1, killswitch: false),
            ]
            for change in changes {
                try await Task.sleep(for: .milliseconds(250))
                try await fleet.control(change)
            }
            // Traffic goes on until it has made enough calls (a slow, busy machine makes fewer per second).
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(60)
            repeat {
                try await Task.sleep(for: .milliseconds(250))
            } while collector.operations.load(ordering: .relaxed) < 600 && clock.now < deadline
            stop.set()
            for task in traffic { await task.value }
            await bypass.value
            fleet.instances[0].new.setFaults(.init())
            group.cancelAll()
        }
        #expect(try await fleet.catchUp())
        let result = collector.totals.withLock { $0 }
        var checker = ConsistencyChecker<String, String>()
        checker.record(result.events)
        let violations = checker.violations()
        let divergent = fleet.divergentKeys()
        print(
            "fleet stress: \(result.operations) operations (\(checker.reads) reads), \(result.failedCalls) failed, "
                + "\(violations.count) stale or phantom reads, \(divergent.count) divergent keys"
        )
        #expect(result.operations > 300)
        #expect(result.failedCalls == 0)
        #expect(violations.isEmpty, "\(violations.prefix(5))")
        #expect(divergent.isEmpty, "\(divergent)")
    }
}

/// A flag set once, read from many tasks.
final class AtomicFlagBox: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}
