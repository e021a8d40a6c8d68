import Foundation
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMSQLite
import ZDDMTesting

// A release-mode driver: SQLite → PostgreSQL copies of the same rows, measured one way per process so that each
// process's peak memory (VmHWM) belongs to one measurement.
//
//   BackfillBench prepare  ROWS FILE        make an SQLite Old table of ROWS rows (100-byte values)
//   BackfillBench backfill FILE              ZDDM backfill into a fresh PostgreSQL table
//   BackfillBench rowbyrow FILE LIMIT        read and insert-if-absent one row at a time (LIMIT rows)
//   BackfillBench csv      FILE CSV          write the rows as CSV for PostgreSQL's COPY
//   BackfillBench verify   FILE TABLE        verify the SQLite table against a PostgreSQL table
//
// Each prints one JSON line. PostgreSQL comes from POSTGRES_HOST/PORT/USER/PASSWORD/DB.

func postgresURL() throws -> String {
    let environment = ProcessInfo.processInfo.environment
    guard let host = environment["POSTGRES_HOST"], let port = environment["POSTGRES_PORT"],
        let user = environment["POSTGRES_USER"], let password = environment["POSTGRES_PASSWORD"],
        let database = environment["POSTGRES_DB"]
    else {
        throw ZDDMError(
            .invalidArgument,
            message: "set POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB"
        )
    }
    return "postgres://\(user):\(password)@\(host):\(port)/\(database)?sslmode=disable"
}

func peakMemoryKiB() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }
    return -1
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func report(_ fields: [String: Any]) {
    var fields = fields
    fields["peak_rss_kib"] = peakMemoryKiB()
    if let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) {
        print(String(decoding: data, as: UTF8.self))
    }
}

let value = Array(repeating: UInt8(ascii: "v"), count: 100)

func oldStore(_ file: String) throws -> (SQLiteDatabase, SQLiteStore<Int64, [UInt8]>) {
    let database = try SQLiteDatabase.open(url: "sqlite:\(file)")
    return (database, try SQLiteStore<Int64, [UInt8]>(database: database, table: "kv", codec: RawBytesValueCodec()))
}

func newTable(_ database: PostgresDatabase, _ name: String) async throws -> PostgresStore<Int64, [UInt8]> {
    let store = try PostgresStore<Int64, [UInt8]>(database: database, table: name, codec: RawBytesValueCodec())
    try await database.execute("DROP TABLE IF EXISTS \"\(name)\"")
    try await store.prepare()
    return store
}

let arguments = CommandLine.arguments.dropFirst()
let clock = ContinuousClock()
do {
    switch arguments.first {
    case "prepare":
        guard arguments.count == 3, let rows = Int(arguments[arguments.startIndex + 1]) else { throw ExitCode.usage }
        let file = arguments[arguments.startIndex + 2]
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: file + suffix) }
        let (database, store) = try oldStore(file)
        try await store.prepare()
        var start: Int64 = 1
        while start <= Int64(rows) {
            let end = min(Int64(rows), start + 9_999)
            _ = try await store.insertManyIfAbsent((start...end).map { (key: $0, value: value) })
            start = end + 1
        }
        try database.close()
        report(["mode": "prepare", "rows": rows])

    case "backfill":
        guard arguments.count == 2 else { throw ExitCode.usage }
        let (sqlite, old) = try oldStore(arguments[arguments.startIndex + 1])
        let postgres = try await PostgresDatabase.connect(url: try postgresURL())
        let new = try await newTable(postgres, "bench_backfill")
        let proxy = try MigrationProxy(name: "bench", old: old, new: new, gate: TrafficGate(rate: 1))
        var options = BackfillOptions()
        options.batchSize = 2_000
        options.batchesInFlight = 3
        let started = clock.now
        let progress = try await Backfill(proxy: proxy, checkpoints: MemoryCheckpointStore<Int64>(), options: options)
            .runPass()
        let elapsed = seconds(clock.now - started)
        report([
            "mode": "backfill", "rows": progress.rowsCopied, "seconds": elapsed,
            "rows_per_second": Double(progress.rowsCopied) / elapsed,
        ])
        await postgres.shutdown()
        try sqlite.close()

    case "rowbyrow":
        guard arguments.count == 3, let limit = Int(arguments[arguments.startIndex + 2]) else { throw ExitCode.usage }
        let (sqlite, old) = try oldStore(arguments[arguments.startIndex + 1])
        let postgres = try await PostgresDatabase.connect(url: try postgresURL())
        let new = try await newTable(postgres, "bench_rowbyrow")
        let started = clock.now
        var copied = 0
        var cursor: Int64?
        outer: while true {
            let keys = try await old.keys(after: cursor, limit: 1_000)
            for key in keys {
                if copied >= limit { break outer }
                if let record = try await old.read(key), let value = record.value {
                    _ = try await new.insertIfAbsent(key, value)
                    copied += 1
                }
            }
            guard let last = keys.last, keys.count == 1_000 else { break }
            cursor = last
        }
        let elapsed = seconds(clock.now - started)
        report(["mode": "rowbyrow", "rows": copied, "seconds": elapsed, "rows_per_second": Double(copied) / elapsed])
        await postgres.shutdown()
        try sqlite.close()

    case "csv":
        guard arguments.count == 3 else { throw ExitCode.usage }
        let (sqlite, old) = try oldStore(arguments[arguments.startIndex + 1])
        FileManager.default.createFile(atPath: arguments[arguments.startIndex + 2], contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: arguments[arguments.startIndex + 2]))
        let hex = value.map { String(format: "%02x", $0) }.joined()
        var cursor: Int64?
        var rows = 0
        while true {
            let keys = try await old.keys(after: cursor, limit: 10_000)
            var text = ""
            for key in keys { text += "\(key),\\\\x\(hex),f\n" }
            handle.write(Data(text.utf8))
            rows += keys.count
            guard let last = keys.last, keys.count == 10_000 else { break }
            cursor = last
        }
        try handle.close()
        try sqlite.close()
        report(["mode": "csv", "rows": rows])

    case "verify":
        guard arguments.count == 3 else { throw ExitCode.usage }
        let (sqlite, old) = try oldStore(arguments[arguments.startIndex + 1])
        let postgres = try await PostgresDatabase.connect(url: try postgresURL())
        let new = try PostgresStore<Int64, [UInt8]>(
            database: postgres,
            table: arguments[arguments.startIndex + 2],
            codec: RawBytesValueCodec()
        )
        let proxy = try MigrationProxy(name: "bench", old: old, new: new, gate: TrafficGate(rate: 1))
        var options = VerifyOptions()
        options.batchSize = 2_000
        let started = clock.now
        let result = try await Verify(proxy: proxy, options: options).verify()
        let elapsed = seconds(clock.now - started)
        report([
            "mode": "verify", "rows": result.keysInOld, "seconds": elapsed, "mismatches": result.mismatches,
            "rows_per_second": Double(result.keysInOld) / elapsed,
        ])
        await postgres.shutdown()
        try sqlite.close()

    default:
        throw ExitCode.usage
    }
} catch {
    FileHandle.standardError.write(Data("BackfillBench: \(error)\n".utf8))
    exit(1)
}

enum ExitCode: Error, CustomStringConvertible {
    case usage
    var description: String { "usage: BackfillBench prepare|backfill|rowbyrow|csv|verify …" }
}
