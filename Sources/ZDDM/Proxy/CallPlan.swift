/// What one proxy call does, decided once per call from one ``GateSnapshot`` by pure code: which stores, in which
/// order, and which protection the key gets. The proxy acts on the plan; nothing in it reads the gate again.
@usableFromInline
enum CallPlan {
    /// How a read goes.
    @usableFromInline
    enum Read: Equatable, Sendable {
        /// Old only (gate closed for the key, killswitch, stage `off`/`dualwrite`, or New unavailable).
        case oldOnly
        /// The original ZDDM read-through: New first, a miss read from Old and filled into New.
        case newFirst
        /// `shadow`: Old answers; New is read alongside and compared off the request path.
        case shadow
        /// `rampdown` and `complete`: New is the source of truth; its failures are the caller's. In `rampdown` a
        /// miss is read from Old and filled.
        case newAuthoritative(fillFromOld: Bool)

        /// Whether the plan touches New on the request path unless the circuit breaker says otherwise.
        @inlinable
        var asksBreaker: Bool { self == .newFirst || self == .shadow }

        /// The same read with New unavailable (the circuit breaker is open).
        @inlinable
        func withNewUnavailable() -> Read {
            asksBreaker ? .oldOnly : self
        }
    }

    /// How a write or delete goes.
    @usableFromInline
    enum Mutation: Equatable, Sendable {
        /// Old only: New cannot hold the key (its hash rate was never below the rate).
        case oldOnly
        /// Old first, then the same change in New.
        case oldThenNew
        /// Old first, then the key is invalidated in New (it may hold a copy, but the gate is closed for it now).
        case oldThenInvalidate
        /// Old only, and the key is remembered as unsafe: New may hold a copy but must not be touched (killswitch,
        /// stage `off`, circuit breaker open).
        case oldThenHoldBack
        /// `rampdown`: New (the source of truth) first, then Old so that a rollback stays possible.
        case newThenOld
        /// `complete`: New only.
        case newOnly

        /// Whether the New step runs after Old's (and may be handed to write-back).
        @inlinable
        var hasNewStepAfterOld: Bool { self == .oldThenNew || self == .oldThenInvalidate }

        /// Whether Old is written first (Old is the source of truth): the safety memory tracks the call.
        @inlinable
        var isOldFirst: Bool { self != .newThenOld && self != .newOnly }

        /// Whether New may hold a copy of the key: a failed Old step must then keep New out of it.
        @inlinable
        var mayBeInNew: Bool { self != .oldOnly }

        /// The same mutation with New unavailable (the circuit breaker is open).
        @inlinable
        func withNewUnavailable() -> Mutation {
            hasNewStepAfterOld ? .oldThenHoldBack : self
        }
    }

    /// Plans a read.
    /// - Parameters:
    ///   - gate: The gate as this call sees it.
    ///   - hashRate: The key's hash rate, computed only if needed.
    @inlinable
    static func read(_ gate: GateSnapshot, hashRate: () -> Double) -> Read {
        switch gate.stage {
        case .rampdown: return .newAuthoritative(fillFromOld: true)
        case .complete: return .newAuthoritative(fillFromOld: false)
        case .off, .dualwrite: return .oldOnly
        case .shadow, .live: break
        }
        guard !gate.killswitch, isBelow(gate.rate, hashRate) else { return .oldOnly }
        return gate.stage == .shadow ? .shadow : .newFirst
    }

    /// Plans a write or delete.
    /// - Parameters:
    ///   - gate: The gate as this call sees it.
    ///   - hashRate: The key's hash rate, computed at most once and only if needed.
    @inlinable
    static func mutation(_ gate: GateSnapshot, hashRate: () -> Double) -> Mutation {
        switch gate.stage {
        case .rampdown: return .newThenOld
        case .complete: return .newOnly
        case .off, .dualwrite, .shadow, .live: break
        }
        var cached: Double?
        func hash() -> Double {
            if let cached { return cached }
            let value = hashRate()
            cached = value
            return value
        }
        let newOff = gate.killswitch || gate.stage == .off
        let admitted = isBelow(gate.rate, hash)
        let mayBeInNew = admitted || isBelow(gate.highWaterRate, hash)
        switch (mayBeInNew, newOff, admitted) {
        case (false, _, _): return .oldOnly
        case (true, true, _): return .oldThenHoldBack
        case (true, false, true): return .oldThenNew
        case (true, false, false): return .oldThenInvalidate
        }
    }

    /// Whether a hash rate is below `rate`; rate 0 and 1 are decided without hashing.
    @inlinable
    static func isBelow(_ rate: Double, _ hashRate: () -> Double) -> Bool {
        rate >= 1 || (rate > 0 && hashRate() < rate)
    }
}
