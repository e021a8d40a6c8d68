import Synchronization
import Tracing
import ZDDM

/// Fresh, distinct key ranges for benchmarks that insert (each round gets keys nobody used).
final class KeyRounds: Sendable {
    private let counter = Atomic<Int64>(1_000_000)
    private let size: Int64

    init(size: Int64) { self.size = size }

    func next() -> Int64 { counter.add(size, ordering: .relaxed).oldValue }
}

/// Old, New, and a proxy over them at rate 1.
struct ProxyState<Old: KeyValueStore, New: KeyValueStore>: Sendable
where Old.Key == Int64, New.Key == Int64, Old.Value == [UInt8], New.Value == [UInt8] {
    let old: Old
    let new: New
    let proxy: MigrationProxy<Old, New>
    let round: KeyRounds
    /// Counts the iterations of the "changing value" benchmarks, which alternate between two values.
    let flips = KeyRounds(size: 1)

    init(
        _ old: Old,
        _ new: New,
        filled: Bool,
        roundSize: Int64 = 1_000_000,
        tracer: (any Tracer)? = nil
    ) async throws {
        self.old = old
        self.new = new
        self.proxy = try MigrationProxy(name: "bench", old: old, new: new, gate: TrafficGate(rate: 1), tracer: tracer)
        self.round = KeyRounds(size: roundSize)
        if filled {
            let entries = (0..<Int64(keyCount)).map { (key: $0, value: value) }
            _ = try await old.insertManyIfAbsent(entries)
            _ = try await new.insertManyIfAbsent(entries)
        }
    }

    /// Puts values in Old (only) for the keys the read-miss benchmark reads: 200 rounds of 1 000 keys.
    func fillOldForMisses() async throws {
        var start = Int64(1_000_000)
        while start < 1_200_000 {
            _ = try await old.insertManyIfAbsent((start..<start + 1_000).map { (key: $0, value: value) })
            start += 1_000
        }
    }
}
