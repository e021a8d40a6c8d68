/// The circuit breaker's states and transitions, as a plain value (no clock, no locks): the caller passes the time.
///
/// Closed: New calls flow; outcomes are counted in a sliding window of one-second buckets. When the window holds at
/// least `minimumCalls` and the share of failures (errors, timeouts, and calls slower than the slow-call limit)
/// reaches `failureRatio`, it opens. Open: no New calls, for `openDuration`. Then half-open: calls are let through
/// one at a time; `probeCalls` successes in a row close it, any failure opens it again. A probe that was let through
/// but never reported (its caller did not call New after all) is given up after `openDuration`.
struct CircuitBreakerStateMachine: Sendable {
    enum State: Sendable, Equatable {
        case closed
        case open(until: Duration)
        /// `probeStarted` is when the current probe was let through, `nil` when none is out. A probe that never
        /// reports (its caller ended up not calling New) stops blocking after `openDuration`.
        case halfOpen(successes: Int, probeStarted: Duration?)
    }

    /// What a transition asks the owner to report.
    enum Event: Sendable, Equatable {
        case none
        case opened
        case halfOpened
        case closed
    }

    struct Bucket: Sendable {
        var second: Int64 = .min
        var calls = 0
        var failures = 0
    }

    let configuration: CircuitBreakerConfiguration
    private(set) var state: State = .closed
    private var buckets: [Bucket]
    private let origin: Duration

    init(configuration: CircuitBreakerConfiguration, now: Duration) {
        self.configuration = configuration
        self.buckets = Array(repeating: Bucket(), count: max(1, Int(configuration.window.components.seconds)))
        self.origin = now
    }

    private func second(_ now: Duration) -> Int64 {
        (now - origin).components.seconds
    }

    /// Whether a New call may go ahead now. In half-open it claims the single probe slot.
    mutating func allowCall(now: Duration) -> (allowed: Bool, event: Event) {
        switch state {
        case .closed:
            return (true, .none)
        case .open(let until):
            guard now >= until else { return (false, .none) }
            state = .halfOpen(successes: 0, probeStarted: now)
            return (true, .halfOpened)
        case .halfOpen(let successes, let probeStarted):
            if let probeStarted, now - probeStarted < configuration.openDuration { return (false, .none) }
            state = .halfOpen(successes: successes, probeStarted: now)
            return (true, .none)
        }
    }

    /// Records a New call's outcome.
    mutating func record(failed: Bool, now: Duration) -> Event {
        switch state {
        case .open:
            return .none
        case .halfOpen(let successes, _):
            if failed {
                state = .open(until: now + configuration.openDuration)
                return .opened
            }
            if successes + 1 >= configuration.probeCalls {
                state = .closed
                buckets = buckets.map { _ in Bucket() }
                return .closed
            }
            state = .halfOpen(successes: successes + 1, probeStarted: nil)
            return .none
        case .closed:
            let current = second(now)
            let index = Int(UInt64(bitPattern: current) % UInt64(buckets.count))
            if buckets[index].second != current { buckets[index] = Bucket(second: current) }
            buckets[index].calls += 1
            if failed { buckets[index].failures += 1 }
            let oldest = current - Int64(buckets.count) + 1
            var calls = 0
            var failures = 0
            for bucket in buckets where bucket.second >= oldest {
                calls += bucket.calls
                failures += bucket.failures
            }
            if calls >= configuration.minimumCalls,
                Double(failures) >= configuration.failureRatio * Double(calls)
            {
                state = .open(until: now + configuration.openDuration)
                return .opened
            }
            return .none
        }
    }
}

/// When the circuit breaker turns New traffic off, and how it probes New before turning it back on.
public struct CircuitBreakerConfiguration: Sendable {
    /// The sliding window over which failures are counted (whole seconds, at least 1).
    public var window: Duration
    /// The fewest calls in the window before the breaker may open.
    public var minimumCalls: Int
    /// The share of failed calls in the window that opens the breaker, in `(0, 1]`.
    public var failureRatio: Double
    /// Calls slower than this count as failures (even when they succeed); `nil` for no latency limit.
    public var slowCallDuration: Duration?
    /// How long New traffic stays off before probing.
    public var openDuration: Duration
    /// Successful probe calls, one at a time, that close the breaker again.
    public var probeCalls: Int

    /// Creates a configuration.
    /// - Parameters:
    ///   - window: The counting window; 10 seconds by default.
    ///   - minimumCalls: Calls needed before opening; 20 by default.
    ///   - failureRatio: The failure share that opens it; half by default.
    ///   - slowCallDuration: Calls slower than this are failures; none by default.
    ///   - openDuration: Time off before probing; 5 seconds by default.
    ///   - probeCalls: Successful probes that close it; 5 by default.
    public init(
        window: Duration = .seconds(10),
        minimumCalls: Int = 20,
        failureRatio: Double = 0.5,
        slowCallDuration: Duration? = nil,
        openDuration: Duration = .seconds(5),
        probeCalls: Int = 5
    ) {
        self.window = window
        self.minimumCalls = minimumCalls
        self.failureRatio = failureRatio
        self.slowCallDuration = slowCallDuration
        self.openDuration = openDuration
        self.probeCalls = probeCalls
    }

    func validate() throws {
        guard window >= .seconds(1), minimumCalls >= 1, failureRatio > 0, failureRatio <= 1, openDuration > .zero,
            probeCalls >= 1
        else {
            throw ZDDMError(
                .invalidArgument,
                message: "circuit breaker: window ≥ 1 s, minimumCalls ≥ 1, failureRatio in (0, 1], openDuration > 0 "
                    + "and probeCalls ≥ 1 are required"
            )
        }
    }
}
