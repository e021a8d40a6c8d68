import MallocInterposerSwift
import ZDDM
import ZDDMTesting

// A release-mode driver for the proxy's hot path over the in-memory store: the workload the original ZDDM's C++
// proxy was measured with (integer keys 0…N−1, short string values, rate 1), each operation through the proxy and
// on the store directly, side by side in one run, with malloc counts.
//
//   HotPathBench [REPS] [SIZES…]   REPS repetitions (default 3) of every scenario; prints the median ns per
//                                  operation, mallocs per operation and the ratios to quote
//   HotPathBench gate [COUNT]      ns per `admits` of an `Int` key with the SHA-1 and the fast hasher
//   HotPathBench one OPERATION PATH KEYS [ROUNDS]
//                                  one scenario (shuffled, one task), its timed loop ROUNDS times over the same
//                                  stores (a fill once), for a profiler
//
// Scenarios: fill-read (New empty: a miss reads Old and fills New), hit-read (New holds every key), write (Old, then
// New); 100 000 and 1 000 000 keys, in order and shuffled; one task and two (each takes half the keys; the figure is
// the wall time per operation of all of them). "direct" does the same on the stores without the proxy: a fill is
// Old's read and New's insert-if-absent, a hit New's read, a write Old's write then New's.
//
// Counting mallocs needs the interposer loaded before main: run under
// `LD_PRELOAD=.build/release/libMallocInterposerSwift.so` (Linux; the script `run-hot-path-bench.sh` does).

typealias Store = InMemoryStore<Int, String>

enum Operation: String, CaseIterable {
    case fill = "fill-read"
    case hit = "hit-read"
    case write
}

enum Path: String, CaseIterable {
    case proxy
    case direct
}

struct Scenario: Hashable {
    var operation: Operation
    var path: Path
    var keys: Int
    var shuffled: Bool
    var tasks: Int
}

struct Sample {
    var nanosecondsPerOperation: Double
    var mallocsPerOperation: Double
}

/// The original ZDDM's C++ proxy and in-memory adapter on the same workload (1 000 000 keys, shuffled, one thread),
/// as measured elsewhere and quoted in the issue that asked for this benchmark; no code of the original is used here.
let original: [Operation: Double] = [.fill: 686, .hit: 74, .write: 286]

let values = (0..<1_000_000).map { "value-\($0)" }

func order(_ keys: Int, shuffled: Bool) -> [Int] {
    var order = Array(0..<keys)
    if shuffled {
        var random = SplitMix64(seed: 42)
        order.shuffle(using: &random)
    }
    return order
}

func makeProxy(old: Store, new: Store) throws -> MigrationProxy<Store, Store> {
    try MigrationProxy(name: "bench", old: old, new: new, gate: TrafficGate(rate: 1))
}

/// Runs `body` over `keys` split into `tasks` contiguous parts, one task each; returns ns per key and mallocs per key.
func timed(
    _ keys: [Int],
    tasks: Int,
    _ body: @escaping @Sendable (ArraySlice<Int>) async throws -> Void
) async throws -> Sample {
    let parts = (0..<tasks).map { part in keys[(keys.count * part / tasks)..<(keys.count * (part + 1) / tasks)] }
    MallocInterposerSwift.initialize()
    MallocInterposerSwift.hook()
    let start = ContinuousClock.now
    if tasks == 1 {
        try await body(parts[0])
    } else {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for part in parts { group.addTask { try await body(part) } }
            try await group.waitForAll()
        }
    }
    let elapsed = ContinuousClock.now - start
    MallocInterposerSwift.unhook()
    let mallocs = MallocInterposerSwift.getStatistics().mallocCount
    let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
    return Sample(
        nanosecondsPerOperation: nanoseconds / Double(keys.count),
        mallocsPerOperation: Double(mallocs) / Double(keys.count)
    )
}

func run(_ scenario: Scenario, rounds: Int = 1) async throws -> Sample {
    let keys = order(scenario.keys, shuffled: scenario.shuffled)
    var initial: [Int: String] = [:]
    initial.reserveCapacity(scenario.keys)
    for key in 0..<scenario.keys { initial[key] = values[key] }
    let old = Store(initial)
    let new = scenario.operation == .hit ? Store(initial) : Store()
    let proxy = try makeProxy(old: old, new: new)
    // More than one round (hit-reads and writes only) repeats the timed loop over the same stores, for a profiler.
    var sample = Sample(nanosecondsPerOperation: 0, mallocsPerOperation: 0)
    for _ in 0..<rounds { sample = try await loop(scenario, keys, proxy) }
    return sample
}

func loop(_ scenario: Scenario, _ keys: [Int], _ proxy: MigrationProxy<Store, Store>) async throws -> Sample {
    let (old, new) = (proxy.old, proxy.new)
    switch (scenario.operation, scenario.path) {
    case (.fill, .proxy), (.hit, .proxy):
        return try await timed(keys, tasks: scenario.tasks) { part in
            for key in part { _ = try await proxy.read(key) }
        }
    case (.write, .proxy):
        return try await timed(keys, tasks: scenario.tasks) { part in
            for key in part { try await proxy.write(key, values[key]) }
        }
    case (.fill, .direct):
        return try await timed(keys, tasks: scenario.tasks) { part in
            for key in part {
                if let value = try await old.read(key)?.value { _ = try await new.insertIfAbsent(key, value) }
            }
        }
    case (.hit, .direct):
        return try await timed(keys, tasks: scenario.tasks) { part in
            for key in part { _ = try await new.read(key) }
        }
    case (.write, .direct):
        return try await timed(keys, tasks: scenario.tasks) { part in
            for key in part {
                try await old.write(key, values[key])
                try await new.write(key, values[key])
            }
        }
    }
}

func median(_ samples: [Double]) -> Double {
    let sorted = samples.sorted()
    return sorted[sorted.count / 2]
}

func format(_ value: Double, _ digits: Int = 0) -> String {
    let scale = [1.0, 10, 100, 1000][min(digits, 3)]
    let rounded = (value * scale).rounded() / scale
    return digits == 0 ? String(Int(rounded)) : String(rounded)
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

func benchmarkAll(repetitions: Int, sizes: [Int]) async throws {
    var scenarios: [Scenario] = []
    for keys in sizes {
        for shuffled in [false, true] {
            for tasks in [1, 2] {
                for operation in Operation.allCases {
                    for path in Path.allCases {
                        scenarios.append(
                            Scenario(operation: operation, path: path, keys: keys, shuffled: shuffled, tasks: tasks)
                        )
                    }
                }
            }
        }
    }
    // Repetitions take turns over every scenario, so that a busy machine slows them alike.
    var samples: [Scenario: [Sample]] = [:]
    for _ in 0..<repetitions {
        for scenario in scenarios { samples[scenario, default: []].append(try await run(scenario)) }
    }
    func ns(_ scenario: Scenario) -> Double { median(samples[scenario, default: []].map(\.nanosecondsPerOperation)) }
    func mallocs(_ scenario: Scenario) -> Double {
        median(samples[scenario, default: []].map(\.mallocsPerOperation))
    }
    print("median of \(repetitions) runs, ns per operation (mallocs per operation); ratio = proxy / direct")
    print(
        [
            pad("keys", 9), pad("order", 9), pad("tasks", 6), pad("operation", 10), pad("proxy", 16),
            pad("direct", 16), pad("ratio", 6), pad("2 tasks ×", 10), pad("original", 9), pad("× orig.", 8),
        ].joined(separator: " ")
    )
    for keys in sizes {
        for shuffled in [false, true] {
            for tasks in [1, 2] {
                for operation in Operation.allCases {
                    let proxy = Scenario(
                        operation: operation,
                        path: .proxy,
                        keys: keys,
                        shuffled: shuffled,
                        tasks: tasks
                    )
                    var direct = proxy
                    direct.path = .direct
                    var single = proxy
                    single.tasks = 1
                    let quoted = keys == 1_000_000 && shuffled && tasks == 1 ? original[operation] : nil
                    print(
                        [
                            pad(String(keys), 9), pad(shuffled ? "shuffled" : "in order", 9), pad(String(tasks), 6),
                            pad(operation.rawValue, 10),
                            pad("\(format(ns(proxy))) (\(format(mallocs(proxy), 2)))", 16),
                            pad("\(format(ns(direct))) (\(format(mallocs(direct), 2)))", 16),
                            pad(format(ns(proxy) / ns(direct), 2), 6),
                            pad(tasks == 2 ? format(ns(single) / ns(proxy), 2) : "", 10),
                            pad(quoted.map { format($0) } ?? "", 9),
                            pad(quoted.map { format(ns(proxy) / $0, 1) } ?? "", 8),
                        ].joined(separator: " ")
                    )
                }
            }
        }
    }
}

func benchmarkGate(count: Int) throws {
    let keys = order(count, shuffled: true)
    for (name, hasher) in [("SHA-1", SHA1RateHasher() as any GateHasher), ("fast", FastRateHasher())] {
        let gate = try TrafficGate(rate: 0.5, hasher: hasher)
        var admitted = 0
        var best = Double.infinity
        for _ in 0..<3 {
            let start = ContinuousClock.now
            for key in keys where gate.admits(key) { admitted += 1 }
            let elapsed = ContinuousClock.now - start
            let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
            best = min(best, nanoseconds / Double(count))
        }
        // The floor: the hasher alone on 16 bytes (the key's digits cost less than that).
        var bytes = Array("0123456789abcdef".utf8)
        var sum = 0.0
        var floor = Double.infinity
        for _ in 0..<3 {
            let start = ContinuousClock.now
            for index in 0..<count {
                bytes[index & 15] = UInt8(truncatingIfNeeded: index)
                sum += bytes.withUnsafeBytes { hasher.hashRate(ofBytes: $0) }
            }
            let elapsed = ContinuousClock.now - start
            let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
            floor = min(floor, nanoseconds / Double(count))
        }
        print(
            "gate admits(Int), \(name): \(format(best, 1)) ns (best of 3; \(admitted) admitted); "
                + "the hasher alone on 16 bytes: \(format(floor, 1)) ns (sum \(format(sum)))"
        )
    }
}

/// Whether the interposer counts: 1 000 arrays allocated under it must show at least 1 000 mallocs.
func interposerCounts() -> Bool {
    MallocInterposerSwift.initialize()
    MallocInterposerSwift.hook()
    var total = 0
    for count in 1...1_000 { total += Array(repeating: UInt8(truncatingIfNeeded: count), count: count + 16).count }
    MallocInterposerSwift.unhook()
    return MallocInterposerSwift.getStatistics().mallocCount >= 1_000 && total > 0
}

let arguments = Array(CommandLine.arguments.dropFirst())
if !interposerCounts() {
    print("warning: the malloc interposer is not loaded (run under LD_PRELOAD, see above); malloc counts read 0")
}
if arguments.first == "one", arguments.count >= 4, let operation = Operation(rawValue: arguments[1]),
    let path = Path(rawValue: arguments[2]), let keys = Int(arguments[3])
{
    // One scenario, shuffled, one task, repeated: for a profiler.
    let rounds = arguments.count > 4 ? Int(arguments[4]) ?? 10 : 10
    let scenario = Scenario(operation: operation, path: path, keys: keys, shuffled: true, tasks: 1)
    let sample = try await run(scenario, rounds: operation == .fill ? 1 : rounds)
    print("last round: \(format(sample.nanosecondsPerOperation)) ns (\(format(sample.mallocsPerOperation, 2)) mallocs)")
} else if arguments.first == "gate" {
    try benchmarkGate(count: arguments.dropFirst().first.flatMap(Int.init) ?? 1_000_000)
} else {
    let repetitions = arguments.first.flatMap(Int.init) ?? 3
    let sizes = arguments.dropFirst().compactMap(Int.init)
    try await benchmarkAll(repetitions: repetitions, sizes: sizes.isEmpty ? [100_000, 1_000_000] : sizes)
}
