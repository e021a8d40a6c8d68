import Foundation
import GRDB
import ZDDM
import ZDDMSQL
import ZDDMSQLite

// A release-mode driver for what a write costs on SQLite, without and with versions (Old with change capture, New
// with a version column), on the store directly and through the proxy: the same writes as ProxyBenchmarks' "sqlite"
// and "sqlite-versioned" groups, in one process, the scenarios taking turns so that a busy machine slows them alike.
//
//   WriteCostBench all ROUNDS COUNT      ROUNDS rounds of COUNT writes of every scenario; prints each scenario's
//                                        median and smallest µs per write, and the ratios to quote
//   WriteCostBench one SCENARIO COUNT    one scenario (its number in `all`'s list), COUNT writes after the setup and
//                                        one pass over the keys; for instruction counts (valgrind), run it with COUNT
//                                        0 too and subtract
//
// Both stores hold 1 000 keys before the writes start; writes go to the keys in turn. "same value" writes the bytes
// the row already holds (SQLite then changes no page), "changing value" alternates between two values, so every
// write changes its row. "plain SQL upsert" is a writer that bypasses the stores (a cached `INSERT … ON CONFLICT DO
// UPDATE`, one transaction per write) on Old's table: with versions, the triggers do all the work of a change.

let keyCount = 1_000
let value = Array(repeating: UInt8(ascii: "x"), count: 100)
let otherValue = Array(repeating: UInt8(ascii: "y"), count: 100)

typealias Store = SQLiteStore<Int64, [UInt8]>

struct Scenario: Sendable {
    enum Path: Sendable {
        case store
        case proxy
        case plainSQL
    }

    var versioned: Bool
    var path: Path
    var changing: Bool

    var name: String {
        let path =
            switch self.path {
            case .store: "store directly"
            case .proxy: "proxy (Old, then New)"
            case .plainSQL: "plain SQL upsert"
            }
        return "\(versioned ? "sqlite-versioned" : "sqlite") write: \(path), "
            + (changing ? "changing value" : "same value")
    }

    static let all: [Scenario] =
        [false, true].flatMap { changing in
            [Path.store, .proxy].flatMap { path in
                [false, true].map { versioned in Scenario(versioned: versioned, path: path, changing: changing) }
            }
        } + [false, true].map { Scenario(versioned: $0, path: .plainSQL, changing: true) }
}

let plainUpsert = """
    INSERT INTO "kv" ("key", "value", "tombstone") VALUES (?, ?, 0) \
    ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value", "tombstone" = 0
    """

/// One scenario's stores, filled, and where its writes are.
final class Runner: @unchecked Sendable {
    let scenario: Scenario
    let old: Store
    let oldPool: DatabasePool
    let proxy: MigrationProxy<Store, Store>
    let files: [String]
    private var written = 0

    init(_ scenario: Scenario) async throws {
        self.scenario = scenario
        let directory = FileManager.default.temporaryDirectory
        let oldPath = directory.appendingPathComponent("zddm-bench-cost-old-\(UUID()).sqlite").path
        let newPath = directory.appendingPathComponent("zddm-bench-cost-new-\(UUID()).sqlite").path
        files = [oldPath, newPath].flatMap { [$0, $0 + "-wal", $0 + "-shm"] }
        oldPool = try DatabasePool(path: oldPath)
        old = try Store(
            database: SQLiteDatabase(writer: oldPool),
            table: "kv",
            changeCapture: scenario.versioned,
            codec: RawBytesValueCodec()
        )
        let new = try Store(
            database: try SQLiteDatabase.open(url: "sqlite:\(newPath)"),
            table: "kv",
            versionColumn: scenario.versioned ? "zddm_version" : nil,
            codec: RawBytesValueCodec()
        )
        try await old.prepare()
        try await new.prepare()
        let entries = (0..<Int64(keyCount)).map { (key: $0, value: value) }
        _ = try await old.insertManyIfAbsent(entries)
        _ = try await new.insertManyIfAbsent(entries)
        proxy = try MigrationProxy(name: "bench", old: old, new: new, gate: TrafficGate(rate: 1))
        try await run(keyCount)
    }

    /// Runs `count` writes; returns the time they took.
    @discardableResult
    func run(_ count: Int) async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        for index in written..<written + count {
            let key = Int64(index % keyCount)
            let bytes = scenario.changing && (index / keyCount) % 2 == 0 ? otherValue : value
            switch scenario.path {
            case .store: try await old.write(key, bytes)
            case .proxy: try await proxy.write(key, bytes)
            case .plainSQL:
                let arguments: StatementArguments = [key, Data(bytes)]
                try await oldPool.write { db in try db.cachedStatement(sql: plainUpsert).execute(arguments: arguments) }
            }
        }
        written += count
        return clock.now - start
    }

    func remove() {
        for file in files { try? FileManager.default.removeItem(atPath: file) }
    }
}

func microseconds(_ duration: Duration, per count: Int) -> Double {
    let (seconds, attoseconds) = duration.components
    return (Double(seconds) * 1e6 + Double(attoseconds) / 1e12) / Double(max(count, 1))
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1
        ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

let arguments = CommandLine.arguments
guard arguments.count == 4, let second = Int(arguments[2]), let count = Int(arguments[3]), count >= 0 else {
    print("usage: WriteCostBench all ROUNDS COUNT | WriteCostBench one SCENARIO COUNT")
    exit(2)
}
switch arguments[1] {
case "all":
    var runners: [Runner] = []
    for scenario in Scenario.all { runners.append(try await Runner(scenario)) }
    var times = Array(repeating: [Double](), count: runners.count)
    for _ in 0..<second {
        for (index, runner) in runners.enumerated() {
            times[index].append(microseconds(try await runner.run(count), per: count))
        }
    }
    print("µs per write, \(second) rounds of \(count) writes each: median (smallest)")
    var medians: [Double] = []
    for (index, runner) in runners.enumerated() {
        medians.append(median(times[index]))
        let line = String(format: "%8.1f (%6.1f)", medians[index], times[index].min() ?? .nan)
        print("\(line)  \(runner.scenario.name)")
    }
    func find(_ versioned: Bool, _ path: Scenario.Path, _ changing: Bool) -> Double {
        let index = Scenario.all.firstIndex {
            $0.versioned == versioned && $0.path == path && $0.changing == changing
        }
        return index.map { medians[$0] } ?? .nan
    }
    for changing in [false, true] {
        let label = changing ? "changing value" : "same value"
        let proxy = find(true, .proxy, changing) / find(false, .proxy, changing)
        let direct = find(true, .store, changing) / find(false, .store, changing)
        print(
            String(
                format: "versioned / unversioned, %@: proxy write %.2f×, store's write on Old %.2f×",
                label,
                proxy,
                direct
            )
        )
    }
    let plain = find(true, .plainSQL, true) / find(false, .plainSQL, true)
    print(String(format: "versioned / unversioned, plain SQL upsert on Old (changing value): %.2f×", plain))
    for runner in runners { runner.remove() }
case "one":
    guard Scenario.all.indices.contains(second) else {
        print(
            "scenarios: " + Scenario.all.enumerated().map { "\($0.offset) \($0.element.name)" }.joined(separator: "; ")
        )
        exit(2)
    }
    let runner = try await Runner(Scenario.all[second])
    let time = try await runner.run(count)
    print(String(format: "%.1f µs per write  %@", microseconds(time, per: count), runner.scenario.name))
    runner.remove()
default:
    print("usage: WriteCostBench all ROUNDS COUNT | WriteCostBench one SCENARIO COUNT")
    exit(2)
}
