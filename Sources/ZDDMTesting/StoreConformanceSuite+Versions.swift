import ZDDM

extension StoreConformanceSuite {
    /// The checks of versions (both roles, as ``versionRoles`` says) and of change capture.
    func versionFailures(_ capabilities: StoreCapabilities) async throws -> [Failure] {
        var failures: [Failure] = []
        func expect(_ condition: Bool, _ check: String, _ detail: @autoclosure () -> String) {
            if !condition { failures.append(Failure(check: check, detail: detail())) }
        }
        let key = makeKey
        let value = makeValue
        let (k0, k1, k2) = (key(0), key(1), key(2))
        let (v0, v1, v2) = (value(0), value(1), value(2))

        if versionRoles.contains(.assigns) {
            let store = try await factory()
            expect(try await store.readVersioned(k0) == nil, "version-missing", "a key never written has no version")
            let first = try await store.writeVersioned(k0, v0)
            expect(first >= 1, "version-first", "a first write must give a version of at least 1, got \(first)")
            let second = try await store.writeVersioned(k0, v1)
            expect(second > first, "version-grows", "a second write must give a larger version (\(first), \(second))")
            expect(
                try await store.readVersioned(k0) == .value(v1, version: second),
                "version-read",
                "readVersioned must return the last value with its version"
            )
            let deleted = try await store.deleteVersioned(k0)
            expect(deleted > second, "version-delete", "a delete must give a larger version (\(second), \(deleted))")
            expect(
                try await store.readVersioned(k0) == .tombstone(version: deleted),
                "version-delete-kept",
                "a deleted key must read as a tombstone at the deletion's version"
            )
            expect(try await store.read(k0) == nil, "version-delete-read", "a deleted key must read as nil")
            let again = try await store.writeVersioned(k0, v2)
            expect(again > deleted, "version-recreate", "a key created again must continue above its deletion")
            let nothing = try await store.deleteVersioned(k1)
            expect(nothing == 0, "version-delete-missing", "deleting a key never written reports version 0")
            expect(try await store.readVersioned(k1) == nil, "version-delete-missing", "and leaves it without version")
            try await store.write(k2, v0)
            let plain = try await store.readVersioned(k2)?.version ?? 0
            expect(plain >= 1, "version-plain-write", "a plain write must give a version too, got \(plain)")
            let many = try await store.readManyVersioned([k0, k1, k2])
            try await expectListed(store, many, among: [k0, k1, k2], "key-versions-read", expect)
            expect(
                many[k0] == .value(v2, version: again) && many[k1] == nil && many[k2]?.version == plain,
                "version-read-many",
                "readManyVersioned must return what readVersioned returns, leaving out keys never written"
            )

            // Concurrent writers of one key: every write gets its own version, and the last one is kept.
            let target = key(3)
            let versions = try await withThrowingTaskGroup(of: UInt64.self) { group in
                for writer in 0..<16 {
                    group.addTask {
                        writer % 4 == 3
                            ? try await store.deleteVersioned(target)
                            : try await store.writeVersioned(target, value(writer))
                    }
                }
                var versions: [UInt64] = []
                for try await version in group { versions.append(version) }
                return versions
            }
            let written = versions.filter { $0 > 0 }
            let final = try await store.readVersioned(target)
            expect(
                final?.version == versions.max(),
                "version-concurrent",
                "after concurrent writes the key must hold the largest version given"
            )
            let writes = try await withThrowingTaskGroup(of: UInt64.self) { group in
                for writer in 0..<12 {
                    group.addTask { try await store.writeVersioned(target, value(writer)) }
                }
                var versions: [UInt64] = []
                for try await version in group { versions.append(version) }
                return versions
            }
            expect(
                Set(writes).count == writes.count && Set(written).isDisjoint(with: writes),
                "version-concurrent",
                "concurrent writes must each get a distinct version"
            )
        }

        if versionRoles.contains(.assigns), capabilities.contains(.orderedKeys) {
            // Deleted keys are listed with the live ones, in the same order, each once (a backfill copies them).
            let store = try await factory()
            let (a, b, c, d) = (key(10), key(11), key(12), key(13))
            for written in [a, b, c, d] { _ = try await store.writeVersioned(written, v0) }
            _ = try await store.deleteVersioned(b)
            _ = try await store.deleteVersioned(d)
            _ = try await store.writeVersioned(d, v1)
            let live = try await store.keys(after: nil, limit: 100)
            let all = try await store.keysIncludingDeleted(after: nil, limit: 100)
            expect(
                all.count == 4 && Set(all) == [a, b, c, d],
                "keys-including-deleted",
                "keysIncludingDeleted must list every key with a value or a deletion once, got \(all.count) keys"
            )
            expect(
                all.filter { $0 != b } == live,
                "keys-including-deleted-order",
                "keysIncludingDeleted must list keys in the order keys(after:limit:) does"
            )
            var paged: [Store.Key] = []
            var cursor: Store.Key?
            while paged.count <= 4 {
                let page = try await store.keysIncludingDeleted(after: cursor, limit: 1)
                guard let last = page.last else { break }
                paged += page
                cursor = last
            }
            expect(paged == all, "keys-including-deleted-pages", "pages of one key must list the same keys in order")
            // Keys with versions: the same keys in the same order, with the versions a read gives.
            let records = try await store.readManyVersioned(all)
            let expected = all.map { key in
                KeyVersion(key: key, version: records[key]?.version ?? 0, isTombstone: records[key]?.value == nil)
            }
            var versions: [KeyVersion<Store.Key>] = []
            cursor = nil
            while versions.count <= 4 {
                let page = try await store.keyVersions(after: cursor, limit: 3)
                versions += page
                guard page.count == 3, let last = page.last else { break }
                cursor = last.key
            }
            expect(
                versions == expected,
                "key-versions",
                "keyVersions must list keysIncludingDeleted's keys with the versions and deletions a read gives"
            )
            // Records with versions, read with the keys: the same keys, the records a read gives.
            var scanned: [(key: Store.Key, record: VersionedRecord<Store.Value>)] = []
            cursor = nil
            while scanned.count <= 4 {
                let page = try await store.versionedRecords(after: cursor, limit: 3)
                scanned += page
                guard page.count == 3, let last = page.last else { break }
                cursor = last.key
            }
            expect(
                scanned.map(\.key) == all
                    && scanned.allSatisfy { entry in
                        records[entry.key].map {
                            $0.version == entry.record.version && ($0.value == nil) == (entry.record.value == nil)
                        } ?? false
                    },
                "versioned-records",
                "versionedRecords must list keysIncludingDeleted's keys with the records a read gives"
            )
        }

        if versionRoles.contains(.fence) {
            let store = try await factory()
            expect(
                try await store.writeIfNewer(k0, .value(v0, version: 5)),
                "fence-absent",
                "writeIfNewer must store over nothing"
            )
            expect(try await store.read(k0) == .value(v0), "fence-absent", "the stored value must be read back")
            expect(
                try await store.readVersioned(k0) == .value(v0, version: 5),
                "fence-version",
                "the stored version must be read back"
            )
            expect(
                try await store.writeIfNewer(k0, .value(v1, version: 3)) == false,
                "fence-older",
                "an older version must be refused"
            )
            expect(
                try await store.writeIfNewer(k0, .value(v1, version: 5)) == false,
                "fence-equal",
                "the same version must be refused"
            )
            expect(try await store.read(k0) == .value(v0), "fence-older", "a refused write must change nothing")
            expect(
                try await store.writeIfNewer(k0, .tombstone(version: 7)),
                "fence-tombstone",
                "a newer tombstone must be stored"
            )
            expect(try await store.read(k0) == .tombstone, "fence-tombstone", "the tombstone must be read back")
            expect(
                try await store.writeIfNewer(k0, .value(v2, version: 6)) == false,
                "fence-tombstone-older",
                "a value older than a tombstone must be refused"
            )
            expect(
                try await store.writeIfNewer(k0, .value(v2, version: 8)),
                "fence-over-tombstone",
                "a newer value must replace a tombstone"
            )
            expect(
                try await store.readVersioned(k0) == .value(v2, version: 8),
                "fence-over-tombstone",
                "the newer value must be read back with its version"
            )
            expect(
                try await store.writeIfNewer(k1, .tombstone(version: 0)),
                "fence-absence",
                "a tombstone at version 0 (a key Old never had) must be stored over nothing"
            )
            expect(try await store.read(k1) == .tombstone, "fence-absence", "it must be read back as a tombstone")

            // A batch: stores exactly the newer records.
            let batch: [(key: Store.Key, record: VersionedRecord<Store.Value>)] = [
                (key: k0, record: VersionedRecord(.value(v0), version: 4)),
                (key: k1, record: VersionedRecord(.value(v1), version: 1)),
                (key: k2, record: VersionedRecord(.tombstone, version: 2)),
            ]
            let counting = try await factory()
            for entry in batch.prefix(1) { _ = try await counting.writeIfNewer(entry.key, .value(v2, version: 8)) }
            let counted = try await counting.writeManyIfNewerCounting(batch)
            expect(
                counted == FencedWriteCount(values: 1, tombstones: 1),
                "fence-many-counting",
                "writeManyIfNewerCounting must count the values and tombstones stored, got \(counted)"
            )
            let stored = try await store.writeManyIfNewer(batch)
            expect(stored == Set([k1, k2]), "fence-many", "writeManyIfNewer must store exactly the newer records")
            let many = try await store.readManyVersioned([k0, k1, k2])
            if capabilities.contains(.orderedKeys) {
                try await expectListed(store, many, among: [k0, k1, k2], "key-versions-fence", expect)
            }
            expect(
                many[k0] == .value(v2, version: 8) && many[k1] == .value(v1, version: 1)
                    && many[k2] == .tombstone(version: 2),
                "fence-many",
                "the batch's records must be read back"
            )

            // Writers racing with versions in every order: the newest always ends up stored.
            for round in 0..<5 {
                let target = key(10 + round)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for version in (1...16).shuffled() {
                        group.addTask {
                            let record: VersionedRecord<Store.Value> =
                                version % 5 == 0
                                ? .tombstone(version: UInt64(version))
                                : .value(value(version), version: UInt64(version))
                            _ = try await store.writeIfNewer(target, record)
                        }
                    }
                    try await group.waitForAll()
                }
                expect(
                    try await store.readVersioned(target) == .value(value(16), version: 16),
                    "fence-concurrent",
                    "after 16 racing fenced writes the newest must be stored"
                )
            }
        }

        if capabilities.contains(.changeCapture), versionRoles.contains(.assigns) {
            let store = try await factory()
            let existing = try await store.capturedChanges(limit: 10_000)
            try await store.removeCapturedChanges(existing)
            let a = try await store.writeVersioned(k0, v0)
            let b = try await store.writeVersioned(k1, v1)
            let c = try await store.deleteVersioned(k0)
            let changes = try await store.capturedChanges(limit: 100)
            expect(
                changes.map(\.key) == [k0, k1, k0] && changes.map(\.version) == [a, b, c],
                "capture-entries",
                "each change must be captured once, in order, with its version (got \(changes.count) entries)"
            )
            let sequences = changes.map(\.sequence)
            expect(
                sequences == sequences.sorted() && Set(sequences).count == 3,
                "capture-order",
                "increasing sequences"
            )
            expect(
                try await store.capturedChanges(limit: 2).count == 2,
                "capture-limit",
                "capturedChanges must honour its limit"
            )
            let backlog = try await store.changeBacklog()
            expect(
                backlog.entries == 3 && backlog.oldestAge != nil,
                "capture-backlog",
                "the backlog must count entries"
            )
            // An entry is removed only while its sequence number, key and version are those given.
            let last = changes[2]
            try await store.removeCapturedChanges([
                CapturedChange(sequence: last.sequence, key: last.key, version: last.version &+ 1),
                CapturedChange(sequence: last.sequence, key: k2, version: last.version),
            ])
            expect(
                try await store.capturedChanges(limit: 100).count == 3,
                "capture-remove-match",
                "an entry whose key or version differs from the one given must stay (its number may be reused)"
            )
            try await store.removeCapturedChanges(Array(changes.prefix(2)))
            let left = try await store.capturedChanges(limit: 100)
            expect(
                left.map(\.sequence) == [sequences[2]],
                "capture-remove",
                "removal must remove exactly those entries"
            )
            try await store.removeCapturedChanges([last])
            let empty = try await store.changeBacklog()
            expect(
                empty.entries == 0 && empty.oldestAge == nil,
                "capture-empty",
                "an empty backlog has no oldest entry"
            )
            _ = try await store.deleteVersioned(k2)
            expect(
                try await store.capturedChanges(limit: 100).isEmpty,
                "capture-no-change",
                "a delete of a key that holds nothing changes nothing and records nothing"
            )
            var rejected = false
            do { _ = try await store.capturedChanges(limit: 0) } catch { rejected = true }
            expect(rejected, "capture-limit", "a limit below 1 must be rejected")
        }
        return failures
    }

    /// Checks that ``ZDDM/KeyValueStore/keyVersions(after:limit:)`` lists every key of `keys` that holds a value,
    /// with the version a read gives, and any listed tombstone with its own version.
    private func expectListed(
        _ store: Store,
        _ read: [Store.Key: VersionedRecord<Store.Value>],
        among keys: [Store.Key],
        _ check: String,
        _ expect: (Bool, String, @autoclosure () -> String) -> Void
    ) async throws {
        let listed = try await store.keyVersions(after: nil, limit: 100)
        let agrees = listed.allSatisfy { entry in
            guard let record = read[entry.key] else { return !keys.contains(entry.key) }
            return record.version == entry.version && (record.value == nil) == entry.isTombstone
        }
        let valued = Set(read.filter { $0.value.value != nil }.keys)
        expect(
            agrees && valued.isSubset(of: Set(listed.map(\.key))),
            check,
            "keyVersions must list the keys holding values with their versions, got \(listed.count) entries"
        )
    }
}
