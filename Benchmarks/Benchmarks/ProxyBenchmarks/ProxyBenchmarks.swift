import Benchmark
import Foundation
import InMemoryTracing
import ZDDM
import ZDDMSQL
import ZDDMSQLite
import ZDDMTesting

// Side by side, in one run: each operation on a store directly, and the same operation through the proxy.
// Ratios between neighbouring benchmarks are what to quote; absolute numbers depend on the machine.

let keyCount = 10_000

func sqliteStore(_ name: String) throws -> SQLiteStore<Int64, [UInt8]> {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("zddm-bench-\(name)-\(UUID()).sqlite").path
    let database = try SQLiteDatabase.open(url: "sqlite:\(path)")
    return try SQLiteStore<Int64, [UInt8]>(database: database, table: "kv", codec: RawBytesValueCodec())
}

let value = Array(repeating: UInt8(ascii: "x"), count: 100)
/// What the "changing value" benchmarks write every other iteration: SQLite changes no page when a write stores the
/// bytes the row already holds, so writing `value` over itself measures less than a write that changes the row.
let otherValue = Array(repeating: UInt8(ascii: "y"), count: 100)

func register<Old: KeyValueStore, New: KeyValueStore>(
    _ label: String,
    makeOld: @escaping @Sendable () async throws -> Old,
    makeNew: @escaping @Sendable () async throws -> New
) where Old.Key == Int64, New.Key == Int64, Old.Value == [UInt8], New.Value == [UInt8] {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 50
    )

    Benchmark("\(label) read: store directly", configuration: configuration) {
        (benchmark, state: ProxyState<Old, New>) in
        for index in benchmark.scaledIterations { blackHole(try await state.new.read(Int64(index % keyCount))) }
    } setup: {
        try await ProxyState(makeOld(), makeNew(), filled: true)
    }

    Benchmark("\(label) read: proxy, New hit", configuration: configuration) {
        (benchmark, state: ProxyState<Old, New>) in
        for index in benchmark.scaledIterations { blackHole(try await state.proxy.read(Int64(index % keyCount))) }
    } setup: {
        try await ProxyState(makeOld(), makeNew(), filled: true)
    }

    Benchmark("\(label) write: store directly", configuration: configuration) {
        (benchmark, state: ProxyState<Old, New>) in
        for index in benchmark.scaledIterations { try await state.old.write(Int64(index % keyCount), value) }
    } setup: {
        try await ProxyState(makeOld(), makeNew(), filled: false)
    }

    Benchmark("\(label) write: proxy (Old, then New)", configuration: configuration) {
        (benchmark, state: ProxyState<Old, New>) in
        for index in benchmark.scaledIterations { try await state.proxy.write(Int64(index % keyCount), value) }
    } setup: {
        try await ProxyState(makeOld(), makeNew(), filled: false)
    }

    Benchmark("\(label) write: store directly, changing value", configuration: configuration) {
        (benchmark, state: ProxyState<Old, New>) in
        let written = state.flips.next() % 2 == 0 ? otherValue : value
        for index in benchmark.scaledIterations { try await state.old.write(Int64(index % keyCount), written) }
    } setup: {
        try await ProxyState(makeOld(), makeNew(), filled: true)
    }

    Benchmark("\(label) write: proxy (Old, then New), changing value", configuration: configuration) {
        (benchmark, state: ProxyState<Old, New>) in
        let written = state.flips.next() % 2 == 0 ? otherValue : value
        for index in benchmark.scaledIterations { try await state.proxy.write(Int64(index % keyCount), written) }
    } setup: {
        try await ProxyState(makeOld(), makeNew(), filled: true)
    }

    Benchmark("\(label) insert-if-absent: store directly", configuration: configuration) {
        (benchmark, state: ProxyState<Old, New>) in
        let base = state.round.next()
        for index in benchmark.scaledIterations {
            blackHole(try await state.new.insertIfAbsent(base + Int64(index), value))
        }
    } setup: {
        try await ProxyState(makeOld(), makeNew(), filled: false)
    }

    Benchmark("\(label) insert-if-absent: proxy read miss + fill", configuration: configuration) {
        (benchmark, state: ProxyState<Old, New>) in
        // Old holds the keys, New does not: each read misses, reads Old and fills New.
        let base = state.round.next()
        for index in benchmark.scaledIterations { blackHole(try await state.proxy.read(base + Int64(index))) }
    } setup: {
        let state = try await ProxyState(makeOld(), makeNew(), filled: false, roundSize: 1_000)
        try await state.fillOldForMisses()
        return state
    }

    let batchConfiguration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput],
        scalingFactor: .one,
        maxDuration: .seconds(3),
        maxIterations: 50
    )

    Benchmark("\(label) insert-if-absent x1000: one by one", configuration: batchConfiguration) {
        (benchmark, state: ProxyState<Old, New>) in
        for _ in benchmark.scaledIterations {
            let base = state.round.next()
            for index in 0..<1_000 { blackHole(try await state.new.insertIfAbsent(base + Int64(index), value)) }
        }
    } setup: {
        try await ProxyState(makeOld(), makeNew(), filled: false, roundSize: 1_000)
    }

    Benchmark("\(label) insert-if-absent x1000: batched", configuration: batchConfiguration) {
        (benchmark, state: ProxyState<Old, New>) in
        for _ in benchmark.scaledIterations {
            let base = state.round.next()
            blackHole(try await state.new.insertManyIfAbsent((0..<1_000).map { (key: base + Int64($0), value: value) }))
        }
    } setup: {
        try await ProxyState(makeOld(), makeNew(), filled: false, roundSize: 1_000)
    }
}

let benchmarks: @Sendable () -> Void = {
    register(
        "memory",
        makeOld: { InMemoryStore<Int64, [UInt8]>() },
        makeNew: { InMemoryStore<Int64, [UInt8]>() }
    )
    registerTracedRead()
    register(
        "sqlite",
        makeOld: {
            let store = try sqliteStore("old")
            try await store.prepare()
            return store
        },
        makeNew: {
            let store = try sqliteStore("new")
            try await store.prepare()
            return store
        }
    )
    // With versions: Old with change capture, New with a version column (fenced writes). Compare each line with the
    // "sqlite" one: the proxy's cost of versions, and (store directly) what the triggers cost a writer of Old.
    register(
        "sqlite-versioned",
        makeOld: {
            let path = FileManager.default.temporaryDirectory
                .appendingPathComponent("zddm-bench-vold-\(UUID()).sqlite").path
            let store = try SQLiteStore<Int64, [UInt8]>(
                database: try SQLiteDatabase.open(url: "sqlite:\(path)"),
                table: "kv",
                changeCapture: true,
                codec: RawBytesValueCodec()
            )
            try await store.prepare()
            return store
        },
        makeNew: {
            let path = FileManager.default.temporaryDirectory
                .appendingPathComponent("zddm-bench-vnew-\(UUID()).sqlite").path
            let store = try SQLiteStore<Int64, [UInt8]>(
                database: try SQLiteDatabase.open(url: "sqlite:\(path)"),
                table: "kv",
                versionColumn: "zddm_version",
                codec: RawBytesValueCodec()
            )
            try await store.prepare()
            return store
        }
    )
    registerPlainSQLWrites()
    registerPostgres()
    registerSlowNew()
}

/// What tracing costs when on: the in-memory New-hit read with an `InMemoryTracer` given to the proxy (its finished
/// spans cleared after every 1 000 reads, so memory stays flat). Compare with "memory read: proxy, New hit".
func registerTracedRead() {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 50
    )
    let tracer = InMemoryTracer()
    Benchmark("memory read: proxy, New hit, in-memory tracer installed", configuration: configuration) {
        (benchmark, state: ProxyState<InMemoryStore<Int64, [UInt8]>, InMemoryStore<Int64, [UInt8]>>) in
        for index in benchmark.scaledIterations { blackHole(try await state.proxy.read(Int64(index % keyCount))) }
        tracer.clearFinishedSpans()
    } setup: {
        try await ProxyState(InMemoryStore(), InMemoryStore(), filled: true, tracer: tracer)
    }
}

/// A slow New (every call takes 10 ms) with and without a 2 ms budget: the budget bounds request latency.
func registerSlowNew() {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock],
        scalingFactor: .one,
        maxDuration: .seconds(3),
        maxIterations: 100
    )
    for budget in [nil, Duration.milliseconds(2)] {
        let name = budget.map { "slow New (10 ms): write with a \($0) budget" } ?? "slow New (10 ms): write, no budget"
        Benchmark(name, configuration: configuration) { (benchmark, proxy: SlowProxy) in
            for index in benchmark.scaledIterations { try await proxy.write(Int64(index), value) }
        } setup: {
            let new = FaultInjectingStore(
                InMemoryStore<Int64, [UInt8]>(),
                before: { _, _ in try await Task.sleep(for: .milliseconds(10)) }
            )
            return try MigrationProxy(
                name: "slow",
                old: InMemoryStore<Int64, [UInt8]>(),
                new: new,
                gate: TrafficGate(rate: 1),
                options: .init(newCallTimeout: budget)
            )
        }
    }
}

typealias SlowProxy = MigrationProxy<InMemoryStore<Int64, [UInt8]>, FaultInjectingStore<InMemoryStore<Int64, [UInt8]>>>
