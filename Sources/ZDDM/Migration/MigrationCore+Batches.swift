extension MigrationCore {
    /// What a batch copy did.
    struct BatchCopyResult: Sendable {
        /// Keys the gate did not admit.
        var skipped = 0
        /// Keys whose value was copied into New.
        var copied = 0
        /// Keys whose deletion was copied into New as a tombstone (with versions).
        var tombstones = 0
        /// Keys New already held (a value or a tombstone), or that Old no longer had.
        var present = 0
        /// Keys held back because the proxy is keeping New out of them until repaired.
        var heldBack = 0
    }

    /// Copies the admitted keys of a batch from Old into New with insert-if-absent, protected by the same safety
    /// memory as read-through fills.
    /// - Parameter afterRepair: The keys were just invalidated by a repair: they may be filled even while degraded.
    func copyBatch(_ keys: [Key], afterRepair: Bool = false) async throws -> BatchCopyResult {
        var result = BatchCopyResult()
        let admitted = keys.filter { gate.admits($0) }
        result.skipped = keys.count - admitted.count
        metrics.backfillRows["skipped"]?.increment(by: result.skipped)
        if usesVersions { return try await copyVersioned(admitted, result) }
        let registered = ledger.beginFills(admitted, whileDegraded: afterRepair)
        result.heldBack = admitted.count - registered.count
        guard !registered.isEmpty else { return result }
        var newFailure = false
        do {
            let records: [Key: StoreRecord<Value>]
            do {
                records = try await storeSpan(.old, .readMany) { try await old.readMany(registered) }
            } catch {
                metrics.oldFailure(.readMany)
                throw ZDDMError.store(.old, .readMany, error)
            }
            let entries = registered.compactMap { key in records[key]?.value.map { (key: key, value: $0) } }
            if !entries.isEmpty {
                switch await callNew(.insertManyIfAbsent, { try await new.insertManyIfAbsent(entries) }) {
                case .succeeded(let inserted):
                    result.copied = inserted.count
                case .failed(let error):
                    newFailure = true
                    throw ZDDMError.store(.new, .insertManyIfAbsent, error)
                }
            }
            result.present = registered.count - result.copied
        } catch {
            await endFills(registered, mayRepair: false)
            throw error
        }
        await endFills(registered, mayRepair: !newFailure)
        metrics.backfillRows["copied"]?.increment(by: result.copied)
        metrics.backfillRows["present"]?.increment(by: result.present)
        return result
    }

    /// With versions: Old's records and versions, written into New through the fence (a deleted key as a
    /// tombstone at its version, so that reads of it are served by New). No protection is needed: an older record never replaces a newer one.
    private func copyVersioned(_ keys: [Key], _ result: BatchCopyResult) async throws -> BatchCopyResult {
        guard !keys.isEmpty else { return result }
        let records: [Key: VersionedRecord<Value>]
        do {
            records = try await storeSpan(.old, .readMany) { try await old.readManyVersioned(keys) }
        } catch {
            metrics.oldFailure(.readMany)
            throw ZDDMError.store(.old, .readMany, error)
        }
        let entries = keys.compactMap { key in records[key].map { (key: key, record: $0) } }
        return try await writeRecords(entries, counted: result, of: keys.count)
    }

    /// With versions: copies records already read from Old (``KeyValueStore/versionedRecords(after:limit:)``) into
    /// New through the fence, for the keys the gate admits.
    func copyRecords(_ rows: [(key: Key, record: VersionedRecord<Value>)]) async throws -> BatchCopyResult {
        var result = BatchCopyResult()
        let admitted = rows.filter { gate.admits($0.key) }
        result.skipped = rows.count - admitted.count
        metrics.backfillRows["skipped"]?.increment(by: result.skipped)
        return try await writeRecords(admitted, counted: result, of: admitted.count)
    }

    /// Writes records into New through the fence and counts what was stored.
    private func writeRecords(
        _ entries: [(key: Key, record: VersionedRecord<Value>)],
        counted partial: BatchCopyResult,
        of keys: Int
    ) async throws -> BatchCopyResult {
        var result = partial
        if !entries.isEmpty {
            switch await callNew(.writeIfNewer, { try await new.writeManyIfNewerCounting(entries) }) {
            case .succeeded(let stored):
                result.tombstones = stored.tombstones
                result.copied = stored.values
            case .failed(let error):
                throw ZDDMError.store(.new, .writeIfNewer, error)
            }
        }
        result.present = keys - result.copied - result.tombstones
        metrics.backfillRows["copied"]?.increment(by: result.copied + result.tombstones)
        metrics.backfillRows["present"]?.increment(by: result.present)
        return result
    }

    private func endFills(_ keys: [Key], mayRepair: Bool) async {
        for (key, epoch) in ledger.endFills(keys, mayRepair: mayRepair && isNewTrafficAllowed) {
            await repair(key, epoch: epoch)
        }
    }

    /// Invalidates a key in New for a repair, registered like a write so that a fill in flight cannot undo it.
    func invalidateForRepair(_ key: Key) async throws {
        let ticket = ledger.beginMutation(key)
        if case .failed(let error) = await callNew(.invalidate, { try await new.invalidate(key) }) {
            _ = ledger.endMutation(key, ticket, .unsafe, mayRepair: false)
            throw ZDDMError.store(.new, .invalidate, error)
        }
        if let epoch = ledger.endMutation(key, ticket, .invalidated, mayRepair: isNewTrafficAllowed) {
            await repair(key, epoch: epoch)
        }
        metrics.unsafeKeys.record(ledger.unsafeKeys)
    }
}
