import Synchronization

/// Counts work in flight against a limit, without locks.
final class InFlightLimit: Sendable {
    private let count = Atomic<Int>(0)

    /// Takes a slot if fewer than `limit` are taken.
    func begin(limit: Int) -> Bool {
        if count.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue <= limit { return true }
        count.wrappingSubtract(1, ordering: .acquiringAndReleasing)
        return false
    }

    /// Gives a slot back.
    func end() {
        count.wrappingSubtract(1, ordering: .acquiringAndReleasing)
    }

    /// Slots taken.
    var current: Int { count.load(ordering: .acquiring) }
}
