import Synchronization
import Testing
import ZDDM

/// A hasher that counts its calls and returns a fixed rate.
final class CountingHasher: GateHasher {
    let calls = Atomic<Int>(0)
    let value: Double
    init(value: Double) { self.value = value }
    func hashRate(ofBytes bytes: UnsafeRawBufferPointer) -> Double {
        calls.add(1, ordering: .relaxed)
        return value
    }
}

@Suite("Traffic gate")
struct TrafficGateTests {
    @Test("Starts closed by default; rates are set and read back (the original's TestSetRate)")
    func setRate() throws {
        let gate = try TrafficGate()
        #expect(gate.rate == 0)
        for rate in stride(from: 0.1, to: 0.9, by: 0.1) {
            try gate.setRate(rate)
            #expect(gate.rate == rate)
        }
    }

    @Test(
        "Invalid rates are rejected with the value named, and change nothing",
        arguments: [
            Double.nan, -0.1, 1.0000001, 2, .infinity, -.infinity,
        ]
    )
    func invalidRate(rate: Double) throws {
        let gate = try TrafficGate(rate: 0.3)
        let error = try #require(throws: ZDDMError.self) { try gate.setRate(rate) }
        #expect(error.code == .invalidRate)
        #expect(error.description.contains("\(rate)"))
        #expect(gate.rate == 0.3)
        #expect(gate.highWaterRate == 0.3)
        #expect(throws: ZDDMError.self) { try TrafficGate(rate: rate) }
        #expect(throws: ZDDMError.self) { try gate.raiseHighWaterRate(to: rate) }
    }

    @Test("Rate 0 never passes and rate 1 always passes, without hashing (the original's always open/close)")
    func extremes() throws {
        let hasher = CountingHasher(value: 0)
        let gate = try TrafficGate(rate: 0, hasher: hasher)
        #expect(!gate.admits("a"))
        #expect(hasher.calls.load(ordering: .relaxed) == 0)
        try gate.setRate(1)
        #expect(gate.admits("a"))
        #expect(gate.admits("b", atRate: 1))
        #expect(!gate.admits("b", atRate: 0))
        #expect(hasher.calls.load(ordering: .relaxed) == 0)
        // A key hashing to exactly 1.0 is admitted only at rate 1.
        let top = try TrafficGate(rate: 0.9999999, hasher: CountingHasher(value: 1))
        #expect(!top.admits("k"))
        try top.setRate(1)
        #expect(top.admits("k"))
    }

    @Test("Admission is monotonic in the rate")
    func monotonic() throws {
        let gate = try TrafficGate()
        let keys = (0..<2_000).map { "k\($0)" }
        var previous: Set<String> = []
        for step in 0...20 {
            let rate = Double(step) / 20
            try gate.setRate(rate)
            let admitted = Set(keys.filter { gate.admits($0) })
            #expect(admitted.isSuperset(of: previous), "rate \(rate) lost keys admitted at a lower rate")
            previous = admitted
        }
        #expect(previous.count == keys.count)
    }

    @Test("The high-water rate is the largest rate used; it never goes down")
    func highWater() throws {
        let gate = try TrafficGate(rate: 0.2)
        try gate.setRate(0.5)
        try gate.setRate(0.1)
        #expect(gate.rate == 0.1)
        #expect(gate.highWaterRate == 0.5)
        try gate.raiseHighWaterRate(to: 0.3)
        #expect(gate.highWaterRate == 0.5)
        try gate.raiseHighWaterRate(to: 0.8)
        #expect(gate.highWaterRate == 0.8)
    }

    @Test("Killswitch closes the gate for every key; rate and killswitch change from any task")
    func killswitchFromAnyTask() async throws {
        let gate = try TrafficGate(rate: 1)
        #expect(gate.admits("x"))
        await Task.detached { gate.setKillswitch(true) }.value
        #expect(gate.isKillswitchOn)
        #expect(!gate.admits("x"))
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<50 {
                group.addTask { try? gate.setRate(Double(index) / 100) }
            }
        }
        #expect(gate.highWaterRate == 1)
        #expect((0..<50).map { Double($0) / 100 }.contains(gate.rate))
        gate.setKillswitch(false)
        #expect(!gate.isKillswitchOn)
    }
}
