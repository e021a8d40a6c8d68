import Synchronization
public import ZDDM

/// A ``ZDDM/FleetStateStore`` in memory, shared by the proxies of one process: the reference implementation the
/// fleet-state conformance checks are proven on, and a fleet of in-process proxies in tests.
///
/// Lease expiry is measured by the clock given to it, which plays the database server's clock.
public final class InMemoryFleetStateStore<C: Clock<Duration>>: FleetStateStore, Sendable where C: Sendable {
    private struct Lease {
        var holder: String
        var token: UInt64
        var expires: C.Instant
    }

    private struct Storage {
        var states: [String: FleetState] = [:]
        var leases: [String: Lease] = [:]
        var lastToken: [String: UInt64] = [:]
    }

    private let storage = Mutex(Storage())
    private let clock: C

    /// Creates an empty store.
    /// - Parameter clock: The clock leases expire by.
    public init(clock: C) {
        self.clock = clock
    }

    public func state(of migration: String) async throws -> FleetState {
        storage.withLock { $0.states[migration] ?? FleetState() }
    }

    public func update(_ migration: String, _ change: FleetControlChange) async throws -> FleetState {
        try storage.withLock { storage in
            let next = try (storage.states[migration] ?? FleetState()).applying(change)
            storage.states[migration] = next
            return next
        }
    }

    public func markBehind(_ migration: String) async throws -> UInt64 {
        storage.withLock { storage in
            var state = storage.states[migration] ?? FleetState()
            state.behind &+= 1
            storage.states[migration] = state
            return state.behind
        }
    }

    public func publishCaughtUp(_ migration: String, through behind: UInt64, token: UInt64) async throws -> Bool {
        storage.withLock { storage in
            guard let lease = storage.leases[migration], lease.token == token else { return false }
            var state = storage.states[migration] ?? FleetState()
            state.caughtUp = max(state.caughtUp, behind)
            storage.states[migration] = state
            return true
        }
    }

    public func recordCleanVerify(_ migration: String, startedAt behind: UInt64) async throws -> FleetState {
        try storage.withLock { storage in
            let next = try (storage.states[migration] ?? FleetState()).recordingCleanVerify(startedAt: behind)
            storage.states[migration] = next
            return next
        }
    }

    public func acquireLease(_ migration: String, holder: String, duration: Duration) async throws -> UInt64? {
        let now = clock.now
        return storage.withLock { storage in
            if let lease = storage.leases[migration], lease.holder != holder, now < lease.expires { return nil }
            let token: UInt64
            if let lease = storage.leases[migration], lease.holder == holder, now < lease.expires {
                token = lease.token
            } else {
                token = (storage.lastToken[migration] ?? 0) + 1
                storage.lastToken[migration] = token
            }
            storage.leases[migration] = Lease(holder: holder, token: token, expires: now.advanced(by: duration))
            return token
        }
    }

    public func releaseLease(_ migration: String, holder: String, token: UInt64) async throws {
        storage.withLock { storage in
            if let lease = storage.leases[migration], lease.holder == holder, lease.token == token {
                storage.leases[migration] = nil
            }
        }
    }
}

extension InMemoryFleetStateStore where C == ContinuousClock {
    /// Creates an empty store whose leases expire by the continuous clock.
    public convenience init() {
        self.init(clock: ContinuousClock())
    }
}
