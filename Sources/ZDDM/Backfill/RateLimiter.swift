import Synchronization

/// Spaces out work to at most a number of units per second, shared by concurrent tasks.
final class RateLimiter: Sendable {
    private let unitsPerSecond: Double
    private let next: Mutex<ContinuousClock.Instant>

    init(unitsPerSecond: Double) {
        self.unitsPerSecond = unitsPerSecond
        self.next = Mutex(ContinuousClock.now)
    }

    /// Waits until `units` more units fit in the budget.
    func acquire(_ units: Int) async throws {
        let now = ContinuousClock.now
        let start = next.withLock { next -> ContinuousClock.Instant in
            let start = max(now, next)
            next = start + .nanoseconds(Int64(Double(units) / unitsPerSecond * 1e9))
            return start
        }
        if start > now { try await Task.sleep(until: start, clock: .continuous) }
    }
}
