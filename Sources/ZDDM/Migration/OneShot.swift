import Synchronization

/// A value handed from one task to another that may stop waiting for it: ``wait()`` returns `nil` when the
/// waiting task is cancelled first.
final class OneShot<Value: Sendable>: Sendable {
    private enum State {
        case empty
        case waiting(CheckedContinuation<Value?, Never>)
        case fulfilled(Value)
        case abandoned
    }

    private let state = Mutex<State>(.empty)

    /// Hands the value over; a waiter is resumed (outside the lock).
    func fulfil(_ value: Value) {
        let waiter = state.withLock { state -> CheckedContinuation<Value?, Never>? in
            switch state {
            case .empty:
                state = .fulfilled(value)
                return nil
            case .waiting(let continuation):
                state = .fulfilled(value)
                return continuation
            case .fulfilled, .abandoned:
                return nil
            }
        }
        waiter?.resume(returning: value)
    }

    /// Waits for the value; `nil` when the task was cancelled before it came.
    func wait() async -> Value? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
                let resume: Value?? = state.withLock { state in
                    switch state {
                    case .empty:
                        state = .waiting(continuation)
                        return .none
                    case .fulfilled(let value):
                        return .some(value)
                    case .abandoned:
                        return .some(nil)
                    case .waiting:
                        // One waiter only; a second one gets nothing.
                        return .some(nil)
                    }
                }
                if let resume { continuation.resume(returning: resume) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Value?, Never>? in
                switch state {
                case .waiting(let continuation):
                    state = .abandoned
                    return continuation
                case .empty:
                    state = .abandoned
                    return nil
                case .fulfilled, .abandoned:
                    return nil
                }
            }
            waiter?.resume(returning: nil)
        }
    }
}
