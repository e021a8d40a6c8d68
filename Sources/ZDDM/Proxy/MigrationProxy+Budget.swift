import Synchronization

/// A New call that ran out of the proxy's budget (``MigrationProxy/Options/newCallTimeout``).
public struct NewCallTimeout: Error, Sendable, ValueFreeDescription {
    /// The operation.
    public var operation: StoreOperation
    /// The budget it exceeded.
    public var budget: Duration

    public var description: String { "New's \(operation) took longer than \(budget)" }
}

/// Resumes a continuation once, from whichever of several tasks gets there first.
private final class ResumeOnce: Sendable {
    private let resumed = Atomic<Bool>(false)

    /// Whether this caller is the first.
    func claim() -> Bool {
        !resumed.exchange(true, ordering: .acquiringAndReleasing)
    }
}

/// A result handed from a background task to the caller that waited for it.
private final class ResultBox<Success: Sendable>: Sendable {
    private let value = Mutex<Result<Success, any Error>?>(nil)

    func set(_ result: Result<Success, any Error>) { value.withLock { $0 = result } }
    func get() -> Result<Success, any Error>? { value.withLock { $0 } }
}

extension MigrationProxy {
    /// Whether the circuit breaker lets a New call through now (always, without a breaker).
    func breakerAllows() -> Bool {
        breaker?.allowCall() ?? true
    }

    /// Whether New traffic is on: killswitch off, stage not `off`, circuit breaker not open.
    public var isNewTrafficAllowed: Bool {
        gate.allowsNewTraffic && !(breaker?.isOpen ?? false)
    }

    /// Runs a New call, reporting its outcome and duration to the circuit breaker.
    func newCall<R>(_ body: () async throws -> R) async throws -> R {
        guard let breaker else { return try await body() }
        let started = ContinuousClock.now
        do {
            let result = try await body()
            breaker.record(failed: false, duration: ContinuousClock.now - started)
            return result
        } catch {
            breaker.record(failed: true, duration: ContinuousClock.now - started)
            throw error
        }
    }

    /// Runs `work` and waits for it at most the New-call budget. Without a budget it simply runs it.
    /// - Returns: Whether `work` finished within the budget; if not, it goes on in the background.
    func withinBudget(_ operation: StoreOperation, _ work: @escaping @Sendable () async -> Void) async -> Bool {
        guard let budget = newCallTimeout else {
            await work()
            return true
        }
        let once = ResumeOnce()
        let finished = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let timer = Task {
                try? await Task.sleep(for: budget)
                if once.claim() { continuation.resume(returning: false) }
            }
            Task {
                await work()
                timer.cancel()
                if once.claim() { continuation.resume(returning: true) }
            }
        }
        if !finished {
            metrics.newTimeouts.increment()
            breaker?.record(failed: true, duration: budget)
            logger.debug(
                "New call ran out of budget; it goes on in the background",
                metadata: ["zddm.store": "new", "zddm.operation": "\(operation)"]
            )
        }
        return finished
    }

    /// Reads New within the budget.
    func newReadWithinBudget(_ key: Key) async throws -> StoreRecord<Value>? {
        guard newCallTimeout != nil else { return try await newCall { try await new.read(key) } }
        let result = ResultBox<StoreRecord<Value>?>()
        let finished = await withinBudget(.read) {
            let outcome: Result<StoreRecord<Value>?, any Error>
            do {
                outcome = .success(try await self.newCall { try await self.new.read(key) })
            } catch {
                outcome = .failure(error)
            }
            result.set(outcome)
        }
        guard finished, let outcome = result.get() else {
            throw NewCallTimeout(operation: .read, budget: newCallTimeout ?? .zero)
        }
        return try outcome.get()
    }
}
