import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL

/// `writeManyIfNewer` of a large batch goes through `COPY … FROM STDIN` into a staging table; these tests feed it
/// what could break the text format and check every byte that comes back.
@Suite("PostgresStore's COPY path for large fenced batches", .postgres, .serialized)
struct PostgresCopyPathTests {
    /// Comfortably above the batch size that takes the COPY path.
    static let largeBatch = 150
    /// Below it: the batch is one `unnest` statement.
    static let smallBatch = 40

    @Test("The COPY path with hostile values, String keys")
    func hostileString() async throws {
        let hostile = [
            "tab\tkey", "new\nline", "carriage\rreturn", "back\\slash", "\\N", "\\.", "\n\\.\n", "ключ ✓ 🙂", "",
            " spaced ", "\u{8}\u{b}\u{c}\u{1}\u{7f}", "quote\"and'apostrophe", "\\\\x00", "\t", "\\",
        ]
        try await runHostile(keys: hostile + (0..<Self.largeBatch).map { "filler-\($0)" })
    }

    @Test("The COPY path with hostile values, Int64 keys")
    func hostileInt64() async throws {
        let hostile: [Int64] = [.min, .max, .min + 1, .max - 1, 0, -1, 1, 9, 10, -10, 99, 100, 1_000_000_007]
        try await runHostile(keys: hostile + (0..<Int64(Self.largeBatch)).map { $0 * 7_919 + 1_000 })
    }

    @Test("The COPY path with hostile values, byte keys")
    func hostileBytes() async throws {
        let hostile: [KeyBytes] = [
            KeyBytes([0]), KeyBytes([0, 0]), KeyBytes([]), KeyBytes([0x5c]), KeyBytes([0x5c, 0x4e]),
            KeyBytes([9, 10, 13]), KeyBytes([0xff, 0xfe, 0x00, 0x01]), KeyBytes(Array("ключ ✓ 🙂".utf8)),
            KeyBytes(Array(0...255)),
        ]
        let filler = (0..<Self.largeBatch).map { KeyBytes([0x7f, UInt8($0 >> 8), UInt8($0 & 0xff), 0]) }
        try await runHostile(keys: hostile + filler)
    }

    @Test("Both paths store the same thing: small batches through unnest, one large batch through COPY")
    func bothPaths() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let keys = ["tab\tkey", "new\nline", "\\N", "ключ ✓ 🙂", ""] + (0..<Self.largeBatch).map { "k\($0)" }
            let before = Self.before(keys)
            var batch = Self.batch(keys)
            batch.append((key: keys[3], record: .value(Array("older".utf8), version: 1)))
            let expected = Self.outcome(before: before, batch: batch)

            let small = try await Self.store(String.self, database: database, before: before)
            var storedSmall: Set<String> = []
            for start in stride(from: 0, to: batch.count, by: Self.smallBatch) {
                let chunk = Array(batch[start..<min(batch.count, start + Self.smallBatch)])
                storedSmall.formUnion(try await small.writeManyIfNewer(chunk))
            }
            let large = try await Self.store(String.self, database: database, before: before)
            let storedLarge = try await large.writeManyIfNewer(batch)

            #expect(storedSmall == expected.stored)
            #expect(storedLarge == expected.stored)
            let readSmall = try await small.readManyVersioned(keys)
            let readLarge = try await large.readManyVersioned(keys)
            #expect(readSmall == expected.after)
            #expect(readLarge == expected.after)

            // Counting instead of listing (what a backfill asks for): the same rows stored, counted by kind.
            let counting = try await Self.store(String.self, database: database, before: before)
            let counted = try await counting.writeManyIfNewerCounting(batch)
            let tombstones = expected.stored.filter { expected.after[$0]?.value == nil }.count
            #expect(counted == FencedWriteCount(values: expected.stored.count - tombstones, tombstones: tombstones))
            #expect(try await counting.readManyVersioned(keys) == expected.after)
        }
    }

    @Test("Stores of different key kinds take turns on one connection, each with its own staging table")
    func keyKindsShareAConnection() async throws {
        let database = try await PostgresDatabase.connect(
            url: PostgresTestEnvironment.url(),
            connectTimeout: .seconds(60),
            maximumConnections: 1
        )
        do {
            let texts = try await Self.store(String.self, database: database, before: [:])
            let integers = try await Self.store(Int64.self, database: database, before: [:])
            let bytes = try await Self.store(KeyBytes.self, database: database, before: [:])
            for round in 0..<2 {
                let version = UInt64(round + 1)
                let textBatch = (0..<Self.largeBatch).map {
                    (key: "t\($0)", record: Self.value($0, version: version))
                }
                let integerBatch = (0..<Self.largeBatch).map {
                    (key: Int64($0), record: Self.value($0, version: version))
                }
                let bytesBatch = (0..<Self.largeBatch).map {
                    (key: KeyBytes([UInt8($0)]), record: Self.value($0, version: version))
                }
                #expect(try await texts.writeManyIfNewer(textBatch).count == Self.largeBatch)
                #expect(try await integers.writeManyIfNewer(integerBatch).count == Self.largeBatch)
                #expect(try await bytes.writeManyIfNewer(bytesBatch).count == Self.largeBatch)
            }
            #expect(try await integers.readVersioned(7) == Self.value(7, version: 2))
            #expect(try await bytes.readVersioned(KeyBytes([9])) == Self.value(9, version: 2))
            await database.shutdown()
        } catch {
            await database.shutdown()
            throw error
        }
    }

    @Test("A large batch with bad input writes nothing and names no value")
    func refusedBatch() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let store = try await Self.store(String.self, database: database, before: [:])
            let good = (0..<Self.largeBatch).map { (key: "k\($0)", record: Self.value($0, version: 1)) }
            let keys = good.map(\.key)
            // PostgreSQL's text cannot hold NUL.
            let withNul = good + [(key: "nul\u{0}\(distinctiveSecret)", record: .value(Array("v".utf8), version: 1))]
            let error = await #expect(throws: ZDDMError.self) { try await store.writeManyIfNewer(withNul) }
            #expect(error?.code == .invalidArgument, "\(String(describing: error))")
            #expect(error?.description.contains(distinctiveSecret) == false)
            let tooNew = good + [(key: distinctiveSecret, record: .value(Array("v".utf8), version: UInt64.max))]
            let refused = await #expect(throws: ZDDMError.self) { try await store.writeManyIfNewer(tooNew) }
            #expect(refused?.code == .invalidArgument)
            #expect(refused?.description.contains(distinctiveSecret) == false)
            #expect(try await store.readManyVersioned(keys).isEmpty)
            #expect(try await store.writeManyIfNewer(good) == Set(keys))
        }
    }

    @Test("A COPY the server rejects midway writes nothing, names no value, and leaves the connection usable")
    func serverRejectsCopy() async throws {
        let database = try await PostgresDatabase.connect(
            url: PostgresTestEnvironment.url(),
            connectTimeout: .seconds(60),
            maximumConnections: 1
        )
        do {
            let store = try await Self.store(String.self, database: database, before: [:])
            // The only connection's staging table, made in advance with a version column too small for the batch's
            // versions: the server fails the COPY at the first row, while megabytes of data are still coming.
            try await database.execute(
                """
                CREATE TEMPORARY TABLE zddm_stage_text (key text, value bytea, tombstone boolean, version smallint, \
                ordinal bigint) ON COMMIT DELETE ROWS
                """
            )
            let big = Array(repeating: UInt8(0x5c), count: 256 << 10)
            let batch = (0..<80).map {
                (key: "k\($0)", record: VersionedRecord.value(big + Array(distinctiveSecret.utf8), version: 100_000))
            }
            let error = await #expect(throws: ZDDMError.self) { try await store.writeManyIfNewer(batch) }
            #expect(error?.code == .storeFailed, "\(String(describing: error))")
            #expect(error?.description.contains(distinctiveSecret) == false)
            #expect(try await store.readManyVersioned(batch.map(\.key)).isEmpty)
            try await database.execute("DROP TABLE pg_temp.zddm_stage_text")
            #expect(try await store.writeManyIfNewer(batch) == Set(batch.map(\.key)))
            #expect(try await store.readVersioned("k9") == batch[9].record)
            await database.shutdown()
        } catch {
            await database.shutdown()
            throw error
        }
    }

    // MARK: Helpers

    /// Writes hostile records for `keys` (with tombstones, a key given twice, and records the fence must refuse),
    /// in one batch large enough for the COPY path, then reads every key back.
    private func runHostile<Key: SQLKey>(keys: [Key]) async throws {
        #expect(keys.count >= Self.largeBatch && Set(keys).count == keys.count)
        try await PostgresTestEnvironment.withDatabase { database in
            let before = Self.before(keys)
            var batch = Self.batch(keys)
            // The same key again in the same batch: older (ignored), newer (wins), and equal (the first one wins).
            batch.append((key: keys[1], record: .value(Array("older".utf8), version: 1)))
            batch.append((key: keys[2], record: .value(Array("newer\t\\N\n".utf8), version: 1_000)))
            batch.append((key: keys[6], record: .value(Array("same version, later".utf8), version: 106)))
            let expected = Self.outcome(before: before, batch: batch)
            #expect(expected.stored.count > keys.count / 2 && expected.stored.count < keys.count)

            let store = try await Self.store(Key.self, database: database, before: before)
            let stored = try await store.writeManyIfNewer(batch)
            #expect(stored == expected.stored)
            let read = try await store.readManyVersioned(keys)
            #expect(read.count == expected.after.count)
            for (key, record) in expected.after where read[key] != record {
                Issue.record("key \(key): read \(String(describing: read[key]).prefix(200)), expected \(record)")
            }
            for key in keys.prefix(12) { #expect(try await store.readVersioned(key) == expected.after[key]) }
        }
    }

    @Test(
        "Counting writes: a batch into keys New lacks goes straight in by COPY; one that meets a present key falls back to the fence and changes nothing it must not"
    )
    func directCopyThenFence() async throws {
        try await PostgresTestEnvironment.withDatabase { database in
            let keys = ["tab\tkey", "new\nline", "\\N", "ключ ✓ 🙂"] + (0..<Self.largeBatch).map { "k\($0)" }
            let batch = Self.batch(keys)
            let store = try await Self.store(String.self, database: database, before: [:])
            let tombstones = batch.filter { $0.record.value == nil }.count
            // Fresh: every record is stored, hostile values exactly.
            let first = try await store.writeManyIfNewerCounting(batch)
            #expect(first == FencedWriteCount(values: batch.count - tombstones, tombstones: tombstones))
            let expected = Dictionary(uniqueKeysWithValues: batch.map { ($0.key, $0.record) })
            #expect(try await store.readManyVersioned(keys) == expected)
            // The same keys again, some newer, some older: the direct COPY meets present keys and writes nothing;
            // the fenced path stores exactly the newer records.
            let again = batch.enumerated().map { index, entry in
                (
                    key: entry.key,
                    record: VersionedRecord<[UInt8]>(
                        .value(Array("again \(index)".utf8)),
                        version: index.isMultiple(of: 2) ? entry.record.version + 1 : entry.record.version - 1
                    )
                )
            }
            let second = try await store.writeManyIfNewerCounting(again)
            let newer = again.enumerated().filter { $0.offset.isMultiple(of: 2) }.map(\.element)
            #expect(second == FencedWriteCount(values: newer.count, tombstones: 0))
            let after = try await store.readManyVersioned(keys)
            for (index, entry) in again.enumerated() {
                #expect(after[entry.key] == (index.isMultiple(of: 2) ? entry.record : expected[entry.key]))
            }
        }
    }

    /// A fresh versioned store keeping raw bytes, holding `before`.
    private static func store<Key: SQLKey>(
        _: Key.Type,
        database: PostgresDatabase,
        before: [Key: VersionedRecord<[UInt8]>]
    ) async throws -> PostgresStore<Key, [UInt8]> {
        let store = try PostgresStore<Key, [UInt8]>(
            database: database,
            table: uniqueTableName("copy"),
            versionColumn: "zddm_version",
            codec: .rawBytes
        )
        try await store.prepare()
        for (key, record) in before { #expect(try await store.writeIfNewer(key, record)) }
        return store
    }

    /// What the table holds before the batch: every fourth key, at a version the batch's record is older than, the
    /// same as, or newer than.
    private static func before<Key: SQLKey>(_ keys: [Key]) -> [Key: VersionedRecord<[UInt8]>] {
        var before: [Key: VersionedRecord<[UInt8]>] = [:]
        for (index, key) in keys.enumerated() where index % 4 == 3 {
            let batchVersion = UInt64(100 + index)
            switch index % 3 {
            case 0: before[key] = .value(Array("held, newer".utf8), version: batchVersion + 1)
            case 1: before[key] = .tombstone(version: batchVersion)
            default: before[key] = .value(Array("held, older".utf8), version: batchVersion - 1)
            }
        }
        return before
    }

    /// One record a key, version `100 + index`: hostile values, and a tombstone every fifth key.
    private static func batch<Key: SQLKey>(_ keys: [Key]) -> [(key: Key, record: VersionedRecord<[UInt8]>)] {
        let megabyte = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 11) }
        let values: [[UInt8]] = [
            Array("a\tb".utf8), Array("line1\nline2\n".utf8), Array("cr\r\nlf".utf8), Array("back\\slash\\".utf8),
            Array("\\N".utf8), Array("before\n\\.\nafter".utf8), Array("\\.".utf8), [0], [0, 0, 1, 0, 0x5c, 0x4e],
            Array("ключ ✓ 🙂".utf8), [], Array(0...255), megabyte, Array(megabyte.reversed()) + [0x5c],
            Array("\\x41".utf8),
        ]
        return keys.enumerated().map { index, key in
            let version = UInt64(100 + index)
            if index % 5 == 4 { return (key: key, record: .tombstone(version: version)) }
            let value = index < values.count * 2 ? values[index % values.count] : Array("plain \(index)".utf8)
            return (key: key, record: .value(value, version: version))
        }
    }

    private static func value(_ index: Int, version: UInt64) -> VersionedRecord<[UInt8]> {
        .value(Array("value \(index)".utf8), version: version)
    }

    /// The fence's outcome: each key's newest record in the batch (the first of equal ones) is stored when the
    /// table holds nothing for the key or an older version.
    private static func outcome<Key: SQLKey>(
        before: [Key: VersionedRecord<[UInt8]>],
        batch: [(key: Key, record: VersionedRecord<[UInt8]>)]
    ) -> (stored: Set<Key>, after: [Key: VersionedRecord<[UInt8]>]) {
        var newest: [Key: VersionedRecord<[UInt8]>] = [:]
        for (key, record) in batch where newest[key].map({ $0.version < record.version }) ?? true {
            newest[key] = record
        }
        var after = before
        var stored: Set<Key> = []
        for (key, record) in newest where before[key].map({ $0.version < record.version }) ?? true {
            after[key] = record
            stored.insert(key)
        }
        return (stored, after)
    }
}
