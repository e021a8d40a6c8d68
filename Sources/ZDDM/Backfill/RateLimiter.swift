import Synchronization

/// Spaces out work to at most a number of units per second, shared by concurrent tasks.
final class RateLimiter: Sendable {
    private let unitsPerSecond: Double
    private let clock: MigrationClock
    private let next: Mutex<Duration>

    init(unitsPerSecond: Double, clock: MigrationClock) {
        self.unitsPerSecond = unitsPerSecond
        self.clock = clock
        self.next = Mutex(clock.now)
    }

    /// Waits until `units` more units fit in the budget.
    func acquire(_ units: Int) async throws {
        let now = clock.now
        let start = next.withLock { next -> Duration in
            let start = max(now, next)
            next = start + .nanoseconds(Int64(Double(units) / unitsPerSecond * 1e9))
            return start
        }
        if start > now { try await clock.sleep(for: start - now) }
    }
}
