import ServiceLifecycle
import Synchronization

/// The background work of one migration (New calls that outlived their budget, write-back steps, shadow
/// comparisons), run as child tasks of ``run()``: shutting that down ends it, and ``waitUntilIdle()`` lets a caller
/// wait until nothing is pending instead of sleeping.
///
/// While ``run()`` is not running, ``submit(_:)`` refuses work and the caller does it itself.
final class BackgroundWork: Sendable {
    typealias Job = @Sendable () async -> Void

    private struct State {
        var wake: AsyncStream<Void>.Continuation?
        var queue: [Job] = []
        var pending = 0
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        var runningWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    /// How many times ``run()`` was entered (for tests).
    let runCalls = Atomic<Int>(0)

    /// Whether ``run()`` is accepting work.
    var isRunning: Bool { state.withLock { $0.wake != nil } }

    /// Jobs submitted and not finished.
    var pending: Int { state.withLock { $0.pending } }

    /// Hands a job to ``run()``.
    /// - Returns: `false` when ``run()`` is not running (or shutting down); the job was not taken.
    func submit(_ job: @escaping Job) -> Bool {
        let wake = state.withLock { state -> AsyncStream<Void>.Continuation? in
            guard let wake = state.wake else { return nil }
            state.queue.append(job)
            state.pending += 1
            return wake
        }
        wake?.yield()
        return wake != nil
    }

    private func takeQueued() -> [Job] {
        state.withLock { state in
            defer { state.queue = [] }
            return state.queue
        }
    }

    private func finished() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.pending -= 1
            guard state.pending == 0 else { return [] }
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Waits until no submitted job is pending.
    func waitUntilIdle() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = state.withLock { state in
                if state.pending == 0 { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    /// Waits until ``run()`` accepts work.
    func waitUntilRunning() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let running = state.withLock { state in
                if state.wake != nil { return true }
                state.runningWaiters.append(continuation)
                return false
            }
            if running { continuation.resume() }
        }
    }

    /// Runs submitted jobs until cancelled or shut down gracefully, then stops taking work and finishes the jobs it
    /// has. A second `run()` while one runs does nothing until it is shut down or cancelled. Under cancellation those jobs run cancelled: a New call that gives up leaves its key unsafe, as any New
    /// failure does, so nothing is left half-recorded.
    func run() async {
        runCalls.wrappingAdd(1, ordering: .relaxed)
        let (wakeUps, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let (started, waiters) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
            guard state.wake == nil else { return (false, []) }
            state.wake = wake
            defer { state.runningWaiters = [] }
            return (true, state.runningWaiters)
        }
        for waiter in waiters { waiter.resume() }
        guard started else {
            // Already run elsewhere (the proxy and its core both in a service group): this one has nothing to do,
            // but returning early would end the whole group, so it runs until shut down like the other.
            try? await gracefulShutdown()
            return
        }
        await withDiscardingTaskGroup { group in
            func start(_ jobs: [Job]) {
                for job in jobs {
                    group.addTask {
                        await job()
                        self.finished()
                    }
                }
            }
            await withGracefulShutdownHandler {
                for await _ in wakeUps { start(takeQueued()) }
            } onGracefulShutdown: {
                self.stopAccepting()
            }
            stopAccepting()
            start(takeQueued())
        }
    }

    private func stopAccepting() {
        let wake = state.withLock { state in
            defer { state.wake = nil }
            return state.wake
        }
        wake?.finish()
    }
}
