import ZDDM

/// Checks a history of reads, writes and deletes, made by any number of processes with unique values, for stale
/// reads in real-time order.
///
/// A read is *stale* when it returns a value that had been overwritten by a write or delete acknowledged before
/// the read started: the value's write ended, then a later mutation of the key (one that started after that write
/// ended) ended before the read started. A read of "nothing" is stale when every delete (and the initial absence)
/// it could come from was overwritten that way. Mutations that overlap are not ordered, so either outcome is
/// accepted. Times are nanoseconds of one clock shared by every process (on one machine, `CLOCK_MONOTONIC` or
/// `CLOCK_REALTIME`). A read of a value nobody wrote is reported as *phantom*. Failed calls are left out of the
/// history (a failed mutation may or may not have happened; give it to the checker as ``Event/Operation/uncertain``
/// if it might have).
public struct ConsistencyChecker<Key: Hashable & Sendable, Value: Hashable & Sendable>: Sendable {
    /// One call as a client saw it.
    public struct Event: Sendable {
        /// What the call did.
        public enum Operation: Sendable, Hashable {
            /// A read and what it returned.
            case read(Value?)
            /// An acknowledged write.
            case write(Value)
            /// An acknowledged delete.
            case delete
            /// A mutation that failed or was not acknowledged: it may have written this value (`nil`: deleted).
            case uncertain(Value?)
        }

        public var key: Key
        public var operation: Operation
        /// When the call started, in nanoseconds of the shared clock.
        public var start: Int64
        /// When it returned.
        public var end: Int64

        /// Creates an event.
        public init(key: Key, operation: Operation, start: Int64, end: Int64) {
            self.key = key
            self.operation = operation
            self.start = start
            self.end = end
        }
    }

    /// A read that broke the rule.
    public struct Violation: Sendable, CustomStringConvertible {
        /// The read.
        public var read: Event
        /// `true` for a value nobody wrote, `false` for a stale one.
        public var phantom: Bool

        public var description: String {
            phantom ? "phantom read of \(read.key) at \(read.start)" : "stale read of \(read.key) at \(read.start)"
        }
    }

    private struct Mutation {
        var start: Int64
        var end: Int64
        var value: Value?
        var certain: Bool
    }
    /// Per key: certain mutations sorted by start, with the smallest end among those starting at or after each.
    private struct Index {
        var starts: [Int64] = []
        var suffixMinimumEnd: [Int64] = []
        var sources: [Value?: [Mutation]] = [:]

        /// The earliest end of a certain mutation that started strictly after `time`.
        func earliestEnd(startingAfter time: Int64) -> Int64 {
            var low = 0
            var high = starts.count
            while low < high {
                let middle = (low + high) / 2
                if starts[middle] <= time { low = middle + 1 } else { high = middle }
            }
            return low < suffixMinimumEnd.count ? suffixMinimumEnd[low] : .max
        }
    }

    private var initial: [Key: Value]
    private var events: [Event] = []

    /// Creates a checker.
    /// - Parameter initial: The values keys held before the history; other keys held nothing.
    public init(initial: [Key: Value] = [:]) {
        self.initial = initial
    }

    /// Adds calls to the history.
    public mutating func record(_ newEvents: some Sequence<Event>) {
        events.append(contentsOf: newEvents)
    }

    /// Adds one call to the history.
    public mutating func record(_ event: Event) {
        events.append(event)
    }

    /// The number of reads in the history.
    public var reads: Int { events.count { if case .read = $0.operation { true } else { false } } }

    /// Every stale or phantom read.
    public func violations() -> [Violation] {
        var mutations: [Key: [Mutation]] = [:]
        var reads: [Event] = []
        for event in events {
            switch event.operation {
            case .read: reads.append(event)
            case .write(let value):
                mutations[event.key, default: []].append(
                    Mutation(start: event.start, end: event.end, value: value, certain: true)
                )
            case .delete:
                mutations[event.key, default: []].append(
                    Mutation(start: event.start, end: event.end, value: nil, certain: true)
                )
            case .uncertain(let value):
                mutations[event.key, default: []].append(
                    Mutation(start: event.start, end: event.end, value: value, certain: false)
                )
            }
        }
        var indexes: [Key: Index] = [:]
        for (key, list) in mutations {
            var index = Index()
            let certain = list.filter(\.certain).sorted { $0.start < $1.start }
            index.starts = certain.map(\.start)
            index.suffixMinimumEnd = Array(repeating: .max, count: certain.count)
            var minimum = Int64.max
            for position in stride(from: certain.count - 1, through: 0, by: -1) {
                minimum = min(minimum, certain[position].end)
                index.suffixMinimumEnd[position] = minimum
            }
            for mutation in list { index.sources[mutation.value, default: []].append(mutation) }
            indexes[key] = index
        }
        var violations: [Violation] = []
        for read in reads {
            guard case .read(let returned) = read.operation else { continue }
            let index = indexes[read.key] ?? Index()
            var sources = (index.sources[returned] ?? []).filter { $0.start < read.end }
            if initial[read.key] == returned {
                sources.append(Mutation(start: .min, end: .min, value: returned, certain: true))
            }
            if sources.isEmpty {
                violations.append(Violation(read: read, phantom: true))
                continue
            }
            // Fresh if some source was not overwritten before the read started.
            let fresh = sources.contains { index.earliestEnd(startingAfter: $0.end) >= read.start }
            if !fresh { violations.append(Violation(read: read, phantom: false)) }
        }
        return violations
    }
}
