extension MigrationProxy {
    /// A read in the `shadow` stage: Old answers the caller; New is read at the same time in the background and
    /// compared there, so the caller never waits for New.
    @inline(never)
    @usableFromInline
    func shadowRead(_ key: Key) async throws -> Value? {
        let shadow = shadowComparison
        guard shadowSampler.hashRate(of: key) < shadow.sampleRatio, shadowInFlight.begin(limit: shadow.maxInFlight)
        else {
            metrics.shadowResult("skipped")
            return try await core.readOld(key, servedBy: .oldOnly)
        }
        let oldOutcome = OneShot<Result<StoreRecord<Value>?, any Error>>()
        let clock = core.clock
        let metrics = self.metrics
        let new = self.new
        let submitted = core.submitBackground {
            let started = clock.now
            let newResult: Result<StoreRecord<Value>?, any Error>
            do {
                newResult = .success(try await new.read(key))
            } catch {
                newResult = .failure(error)
            }
            metrics.shadowNewLatency.record(clock.now - started)
            if let oldResult = await oldOutcome.wait() {
                await self.compare(key, oldResult, newResult, shadow)
            } else {
                metrics.shadowResult("skipped")
            }
            self.shadowInFlight.end()
        }
        if !submitted {
            shadowInFlight.end()
            metrics.shadowResult("skipped")
        }
        let started = clock.now
        let oldResult: Result<StoreRecord<Value>?, any Error>
        do {
            oldResult = .success(try await core.storeSpan(.old, .read) { try await old.read(key) })
        } catch {
            oldResult = .failure(error)
        }
        metrics.shadowOldLatency.record(clock.now - started)
        oldOutcome.fulfil(oldResult)
        switch oldResult {
        case .success(let record):
            metrics.read(.oldOnly)
            return record?.value
        case .failure(let error):
            metrics.oldFailure(.read)
            throw ZDDMError.store(.old, .read, error)
        }
    }

    private func compare(
        _ key: Key,
        _ oldResult: Result<StoreRecord<Value>?, any Error>,
        _ newResult: Result<StoreRecord<Value>?, any Error>,
        _ shadow: ShadowComparison<Value>
    ) async {
        let kind: ShadowMismatch.Kind?
        switch (oldResult, newResult) {
        case (.failure, .failure):
            kind = nil  // both failing alike is a match
        case (.failure, .success), (.success, .failure):
            kind = .differentOutcome
        case (.success(let oldRecord), .success(let newRecord)):
            switch (oldRecord?.value, newRecord) {
            case (_, nil):
                metrics.shadowResult("new_missing")  // not migrated yet: nothing to compare
                return
            case (nil, .tombstone):
                kind = nil
            case (nil, .value):
                kind = .extraInNew
            case (.some, .tombstone):
                kind = .tombstoneInNew
            case (.some(let oldValue), .value(let newValue)):
                guard let equal = Self.equal(oldValue, newValue, shadow.areEqual) else {
                    metrics.shadowResult("skipped")
                    return
                }
                kind = equal ? nil : .differentValue
            }
        }
        guard let kind else {
            metrics.shadowResult("match")
            return
        }
        metrics.shadowResult("mismatch")
        if let publish = shadow.publish {
            publish(
                ShadowMismatch(
                    key: Self.describeKey(key),
                    kind: kind,
                    old: Self.describe(oldResult, shadow.clean),
                    new: Self.describe(newResult, shadow.clean)
                )
            )
        }
        if shadow.repairMismatches, isNewTrafficAllowed {
            try? await core.invalidateForRepair(key)
        }
    }

    private static func equal(
        _ lhs: Value,
        _ rhs: Value,
        _ areEqual: (@Sendable (Value, Value) -> Bool)?
    ) -> Bool? {
        if let areEqual { return areEqual(lhs, rhs) }
        guard let equatable = lhs as? any Equatable else { return nil }
        return isEqual(equatable, rhs)
    }

    private static func describe(
        _ result: Result<StoreRecord<Value>?, any Error>,
        _ clean: (@Sendable (Value) -> String)?
    ) -> String? {
        switch result {
        case .failure(let error): return "error \(type(of: error))"
        case .success(nil): return "<none>"
        case .success(.tombstone): return "<tombstone>"
        case .success(.value(let value)): return clean?(value)
        }
    }

    private static func describeKey(_ key: Key) -> String {
        let bytes = key.gateBytes
        if let text = String(validating: bytes, as: UTF8.self) { return text }
        return KeyBytes(bytes).description
    }
}

private func isEqual<T: Equatable>(_ lhs: T, _ rhs: Any) -> Bool {
    (rhs as? T) == lhs
}
