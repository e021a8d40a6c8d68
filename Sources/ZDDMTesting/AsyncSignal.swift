import Synchronization

/// A one-shot signal for making races deterministic in tests: tasks `wait()` until someone calls `signal()`.
///
/// Waiting does not end on cancellation; signal every signal a test waits on.
public final class AsyncSignal: Sendable {
    private struct State {
        var signalled = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    /// Creates an unsignalled signal.
    public init() {}

    /// Whether `signal()` has been called.
    public var isSignalled: Bool { state.withLock { $0.signalled } }

    /// Wakes every waiter, now and later.
    public func signal() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.signalled = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Suspends until `signal()` has been called.
    public func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.signalled { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}
