import MetricsTestKit
import Testing
import ZDDM
import ZDDMTesting

@Suite("New-call budget and circuit breaker")
struct BudgetAndBreakerTests {
    func harness(
        timeout: Duration? = nil,
        breaker: CircuitBreakerConfiguration? = nil,
        metrics: TestMetrics? = nil,
        clock: ManualClock = ManualClock(),
        realClock: Bool = false
    ) throws -> (Harness, MigrationProxy<Faulty, Faulty>) {
        let h = try Harness(rate: 1)
        let options = MigrationOptions(newCallTimeout: timeout, circuitBreaker: breaker)
        // A budget that must run out against a New that never answers: any clock works, the real one is simplest.
        let proxy =
            realClock
            ? try MigrationProxy(
                name: "test",
                old: h.old,
                new: h.new,
                gate: h.gate,
                options: options,
                metricsFactory: metrics
            )
            : try MigrationProxy(
                name: "test",
                old: h.old,
                new: h.new,
                gate: h.gate,
                options: options,
                metricsFactory: metrics,
                clock: clock
            )
        return (h, proxy)
    }

    @Test("A New that never answers does not hold up reads or writes past the budget, and is never served stale")
    func budget() async throws {
        let metrics = TestMetrics()
        let (h, proxy) = try harness(timeout: .milliseconds(20), metrics: metrics, realClock: true)
        try await withBackgroundWork(of: proxy) {
            // New holds the key already (on a busy machine even a first read may outlast the budget, so no fill).
            try await h.oldBase.write("k", "v0")
            try await h.newBase.write("k", "v0")
            #expect(try await proxy.read("k") == "v0")
            let release = AsyncSignal()
            h.new.setHooks(before: { _, _ in await release.wait() }, after: nil)
            // Every New call now hangs until released; these return anyway (else this test would hang).
            try await proxy.write("k", "v1")
            #expect(try await proxy.read("k") == "v1")
            #expect(try await proxy.read("other") == nil)
            try await proxy.delete("gone")
            #expect(proxy.unsafeKeyCount >= 1)
            #expect(metrics.counterTotal(label: "zddm_new_timeouts_total") >= 3)
            release.signal()
            h.new.setHooks(before: nil, after: nil)
            // The abandoned calls land in the background; until the key is repaired it is read from Old.
            await proxy.waitForBackgroundWork()
            #expect(try await proxy.read("k") == "v1")
            #expect(try await proxy.read("k") == "v1")
            #expect(try await proxy.read("gone") == nil)
        }
    }

    @Test("A budget without the background work running never calls New; the keys are kept out of New")
    func budgetWithoutBackgroundWork() async throws {
        let (h, proxy) = try harness(timeout: .milliseconds(20))
        try await h.oldBase.write("k", "v0")
        try await h.newBase.write("k", "v0")
        let release = AsyncSignal()
        h.new.setHooks(before: { _, _ in await release.wait() }, after: nil)
        // Every New call would hang; none is made, so nothing waits.
        try await proxy.write("k", "v1")
        #expect(try await proxy.read("k") == "v1")
        #expect(h.new.calls == 0)
        #expect(proxy.unsafeKeyCount == 1)
        #expect(try await h.newRecord("k") == .value("v0"))  // untouched, and never served
        release.signal()
    }

    @Test("An abandoned write that lands after a newer write never leaves New stale")
    func abandonedWriteLandsLate() async throws {
        let (h, proxy) = try harness(timeout: .milliseconds(20), realClock: true)
        try await withBackgroundWork(of: proxy) {
            try await h.oldBase.write("k", "v0")
            try await h.newBase.write("k", "v0")
            let release = AsyncSignal()
            let counter = CallCounter()
            h.new.setHooks(
                before: { operation, key in
                    if operation == .write, counter.next(operation, key) == 1 { await release.wait() }
                },
                after: nil
            )
            try await proxy.write("k", "v1")  // its New step hangs: abandoned
            try await proxy.write("k", "v2")  // completes: New = v2
            release.signal()  // the abandoned v1 lands after v2
            await proxy.waitForBackgroundWork()
            #expect(try await proxy.read("k") == "v2")
            #expect(try await proxy.read("k") == "v2")
            let record = try await h.newRecord("k")
            #expect(record == nil || record == .value("v2"))
        }
    }

    @Test("The breaker opens when New fails, stops calling it, probes it after a while, and closes when it recovers")
    func breaker() async throws {
        let metrics = TestMetrics()
        let configuration = CircuitBreakerConfiguration(
            window: .seconds(10),
            minimumCalls: 10,
            failureRatio: 0.5,
            openDuration: .milliseconds(200),
            probeCalls: 3
        )
        let clock = ManualClock()
        let (h, proxy) = try harness(breaker: configuration, metrics: metrics, clock: clock)
        for index in 0..<50 { try await h.oldBase.write("k\(index)", "v") }
        h.new.setOutage(true)
        for index in 0..<20 { #expect(try await proxy.read("k\(index)") == "v") }
        #expect(metrics.counterTotal(label: "zddm_breaker_trips_total") == 1)
        #expect(try metrics.expectGauge("zddm_breaker_state", [("migration", "test")]).lastValue == 2)
        #expect(!proxy.isNewTrafficAllowed)
        let callsWhileOpen = h.new.calls
        for index in 0..<20 { try await proxy.write("k\(index)", "w") }  // requests keep succeeding
        #expect(h.new.calls == callsWhileOpen)  // New is left alone while open
        h.new.setOutage(false)
        clock.advance(by: .milliseconds(250))
        for index in 20..<50 { _ = try await proxy.read("k\(index)") }
        #expect(h.new.calls > callsWhileOpen)
        #expect(proxy.isNewTrafficAllowed)
        #expect(try metrics.expectGauge("zddm_breaker_state", [("migration", "test")]).lastValue == 0)
        // Keys written while it was open are never served stale.
        for index in 0..<20 { #expect(try await proxy.read("k\(index)") == "w") }
    }

    @Test("Slow calls count as failures when a slow-call limit is set; a failed probe reopens")
    func slowCalls() async throws {
        let configuration = CircuitBreakerConfiguration(
            minimumCalls: 5,
            failureRatio: 0.8,
            slowCallDuration: .milliseconds(5),
            openDuration: .milliseconds(100),
            probeCalls: 2
        )
        let metrics = TestMetrics()
        let clock = ManualClock()
        let (h, proxy) = try harness(breaker: configuration, metrics: metrics, clock: clock)
        // Every New call takes 10 ms on the proxy's clock.
        h.new.setHooks(before: { _, _ in clock.advance(by: .milliseconds(10)) }, after: nil)
        for index in 0..<10 { _ = try await proxy.read("k\(index)") }
        #expect(metrics.counterTotal(label: "zddm_breaker_trips_total") == 1)
        clock.advance(by: .milliseconds(150))
        _ = try await proxy.read("probe")  // the probe is slow: open again
        #expect(metrics.counterTotal(label: "zddm_breaker_trips_total") == 2)
    }

    @Test("Bad budgets and breaker settings are refused")
    func refused() throws {
        #expect(throws: ZDDMError.self) { try self.harness(timeout: .zero) }
        #expect(throws: ZDDMError.self) { try self.harness(breaker: .init(failureRatio: 1.5)) }
        #expect(throws: ZDDMError.self) { try self.harness(breaker: .init(probeCalls: 0)) }
    }
}
