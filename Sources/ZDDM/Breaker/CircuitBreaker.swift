import Synchronization

/// The circuit breaker around New: a ``CircuitBreakerStateMachine`` behind a lock, with the clock.
@usableFromInline
final class CircuitBreaker: Sendable {
    private let machine: Mutex<CircuitBreakerStateMachine>
    private let clock: MigrationClock
    private let onEvent: @Sendable (CircuitBreakerStateMachine.Event) -> Void
    let slowCallDuration: Duration?

    init(
        configuration: CircuitBreakerConfiguration,
        clock: MigrationClock,
        onEvent: @escaping @Sendable (CircuitBreakerStateMachine.Event) -> Void
    ) {
        self.clock = clock
        self.machine = Mutex(CircuitBreakerStateMachine(configuration: configuration, now: clock.now))
        self.slowCallDuration = configuration.slowCallDuration
        self.onEvent = onEvent
    }

    /// Whether a New call may go ahead now.
    @usableFromInline
    func allowCall() -> Bool {
        let now = clock.now
        let (allowed, event) = machine.withLock { $0.allowCall(now: now) }
        if event != .none { onEvent(event) }
        return allowed
    }

    /// Records a New call that took `duration` and failed or not.
    @usableFromInline
    func record(failed: Bool, duration: Duration) {
        let slow = slowCallDuration.map { duration > $0 } ?? false
        let now = clock.now
        let event = machine.withLock { $0.record(failed: failed || slow, now: now) }
        if event != .none { onEvent(event) }
    }

    /// Whether New traffic is off now (open, and not yet due for a probe).
    @usableFromInline
    var isOpen: Bool {
        let now = clock.now
        return machine.withLock { machine in
            if case .open(let until) = machine.state { return now < until }
            return false
        }
    }

    /// The state as a gauge value: 0 closed, 1 half-open, 2 open.
    var gaugeValue: Int {
        machine.withLock { machine in
            switch machine.state {
            case .closed: 0
            case .halfOpen: 1
            case .open: 2
            }
        }
    }
}
