/// The clock a migration's components measure time with, erased to durations since the clock was handed over,
/// so that any `Clock` whose duration is `Duration` can be injected (tests step a manual one).
@usableFromInline
struct MigrationClock: Sendable {
    private let elapsed: @Sendable () -> Duration
    private let sleeper: @Sendable (Duration) async throws -> Void

    init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let origin = clock.now
        self.elapsed = { origin.duration(to: clock.now) }
        self.sleeper = { try await clock.sleep(for: $0) }
    }

    /// Now, as the time since the clock was handed over.
    @usableFromInline
    var now: Duration { elapsed() }

    /// Sleeps for `duration` on the clock.
    /// - Throws: `CancellationError` when the task is cancelled.
    func sleep(for duration: Duration) async throws {
        guard duration > .zero else { return }
        try await sleeper(duration)
    }
}
