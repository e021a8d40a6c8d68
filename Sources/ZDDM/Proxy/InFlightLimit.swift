import Synchronization

/// A bounded count of operations in flight, shared by concurrent tasks, that can be waited on until it is zero.
final class InFlightLimit: Sendable {
    private let count = Atomic<Int>(0)
    private let zeroWaiters = Mutex<[CheckedContinuation<Void, Never>]>([])

    /// Takes a slot if fewer than `limit` are taken.
    func begin(limit: Int) -> Bool {
        if count.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue <= limit { return true }
        end()
        return false
    }

    /// Gives a slot back.
    func end() {
        guard count.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        let waiters = zeroWaiters.withLock { waiters in
            defer { waiters = [] }
            return waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Slots taken.
    var current: Int { count.load(ordering: .acquiring) }

    /// Waits until no slot is taken.
    func waitUntilZero() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let zero = zeroWaiters.withLock { waiters in
                // Checked under the lock that `end()` takes after reaching zero: no wake-up is lost.
                if count.load(ordering: .acquiring) == 0 { return true }
                waiters.append(continuation)
                return false
            }
            if zero { continuation.resume() }
        }
    }
}
