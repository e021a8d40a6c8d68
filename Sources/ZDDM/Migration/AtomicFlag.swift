import Synchronization

/// A flag that is set once; ``setIfUnset()`` tells the one caller that set it.
final class AtomicFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    /// Sets the flag; `true` for the caller that changed it.
    func setIfUnset() -> Bool {
        !flag.exchange(true, ordering: .acquiringAndReleasing)
    }
}
