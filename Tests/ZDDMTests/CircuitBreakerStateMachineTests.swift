import Testing

@testable import ZDDM

@Suite("Circuit breaker state machine")
struct CircuitBreakerStateMachineTests {
    let start = Duration.zero
    let configuration = CircuitBreakerConfiguration(
        window: .seconds(10),
        minimumCalls: 4,
        failureRatio: 0.5,
        openDuration: .seconds(5),
        probeCalls: 2
    )

    @Test("Opens at the failure ratio once the window holds enough calls; old buckets fall out of the window")
    func opens() {
        var machine = CircuitBreakerStateMachine(configuration: configuration, now: start)
        #expect(machine.record(failed: true, now: start) == .none)
        #expect(machine.record(failed: true, now: start) == .none)
        #expect(machine.record(failed: false, now: start) == .none)
        // Twenty seconds later the first three calls are outside the window.
        let later = start + .seconds(20)
        #expect(machine.record(failed: true, now: later) == .none)
        #expect(machine.record(failed: false, now: later) == .none)
        #expect(machine.record(failed: false, now: later) == .none)
        #expect(machine.record(failed: true, now: later) == .opened)
        #expect(machine.allowCall(now: later).allowed == false)
    }

    @Test("Half-open: one probe at a time; enough successes close it, a failure reopens it")
    func probes() {
        var machine = CircuitBreakerStateMachine(configuration: configuration, now: start)
        for _ in 0..<4 { _ = machine.record(failed: true, now: start) }
        let due = start + .seconds(6)
        #expect(machine.allowCall(now: due) == (true, .halfOpened))
        #expect(machine.allowCall(now: due).allowed == false)  // the probe is out
        #expect(machine.record(failed: false, now: due) == .none)
        #expect(machine.allowCall(now: due).allowed)
        #expect(machine.record(failed: false, now: due) == .closed)
        #expect(machine.state == .closed)
        for _ in 0..<4 { _ = machine.record(failed: true, now: due) }
        let next = due + .seconds(6)
        #expect(machine.allowCall(now: next) == (true, .halfOpened))
        #expect(machine.record(failed: true, now: next) == .opened)
    }

    @Test("A probe that never reports stops blocking after the open duration")
    func abandonedProbe() {
        var machine = CircuitBreakerStateMachine(configuration: configuration, now: start)
        for _ in 0..<4 { _ = machine.record(failed: true, now: start) }
        let due = start + .seconds(6)
        #expect(machine.allowCall(now: due).allowed)  // the caller never calls New
        #expect(machine.allowCall(now: due + .seconds(1)).allowed == false)
        #expect(machine.allowCall(now: due + .seconds(6)).allowed)
    }
}
