import Benchmark
import Foundation
import GRDB
import ZDDM
import ZDDMSQL
import ZDDMSQLite

/// What a writer that bypasses the stores pays: a plain SQL upsert of a changing value (a cached statement, one
/// transaction per write, as the stores run theirs) on the key-value table, without and with change capture. With
/// capture, the triggers keep the row's version as a floor, append the entry, set the version and drop the floor;
/// compare with "write: store directly, changing value", whose statement sets the version itself.
func registerPlainSQLWrites() {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 50
    )
    for capture in [false, true] {
        let label = capture ? "sqlite-versioned" : "sqlite"
        Benchmark("\(label) write: plain SQL upsert, changing value", configuration: configuration) {
            (benchmark, state: PlainSQLState) in
            let written = Data(state.flips.next() % 2 == 0 ? otherValue : value)
            for index in benchmark.scaledIterations {
                let arguments: StatementArguments = [Int64(index % keyCount), written]
                try await state.pool.write { db in
                    try db.cachedStatement(sql: PlainSQLState.upsert).execute(arguments: arguments)
                }
            }
        } setup: {
            try await PlainSQLState(capture: capture)
        }
    }
}

/// A key-value table (made by ``SQLiteStore/prepare()``, with or without change capture), filled, and a GRDB pool
/// of the benchmark's own on its file.
struct PlainSQLState: Sendable {
    static let upsert = """
        INSERT INTO "kv" ("key", "value", "tombstone") VALUES (?, ?, 0) \
        ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value", "tombstone" = 0
        """
    let pool: DatabasePool
    let flips = KeyRounds(size: 1)

    init(capture: Bool) async throws {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("zddm-bench-plain-\(UUID()).sqlite").path
        pool = try DatabasePool(path: path)
        let store = try SQLiteStore<Int64, [UInt8]>(
            database: SQLiteDatabase(writer: pool),
            table: "kv",
            changeCapture: capture,
            codec: RawBytesValueCodec()
        )
        try await store.prepare()
        _ = try await store.insertManyIfAbsent((0..<Int64(keyCount)).map { (key: $0, value: value) })
    }
}
