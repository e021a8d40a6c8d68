package import Foundation
package import ZDDMTesting

/// The fleet workers' logs read back: the history of every process's calls for the ``ConsistencyChecker``, and a
/// scenario's figures over a window of time.
///
/// In the history, a write or delete that failed, or whose process died during it (a `begin` without its call),
/// may have happened: it is given to the checker as uncertain. Bypass writes (plain SQL into Old) are uncertain
/// too: a read may return them (not a phantom), but the proxy's values they replace in Old are not counted as stale
/// while the change applier copies them into New; that lag is measured separately, by the bypass writer.
package struct FleetHistory: Sendable {
    package typealias Checker = ConsistencyChecker<Int64, String>

    /// Every line of every log.
    package private(set) var entries: [FleetLogEntry] = []
    /// Each log's counter samples, in order.
    package private(set) var samples: [[FleetLogEntry]] = []
    /// The stale and phantom reads of the whole history.
    package private(set) var violations: [Checker.Violation] = []
    /// Reads checked.
    package private(set) var checkedReads = 0

    /// Reads the logs and checks the history.
    /// - Parameters:
    ///   - logs: The workers' log files (a missing file counts as empty).
    ///   - initial: The values keys held in Old before the traffic.
    package init(logs: [URL], initial: [Int64: String]) throws {
        let decoder = JSONDecoder()
        var checker = Checker(initial: initial)
        for log in logs {
            guard FileManager.default.fileExists(atPath: log.path) else { continue }
            let text = try String(contentsOf: log, encoding: .utf8)
            var lines: [FleetLogEntry] = []
            for line in text.split(separator: "\n") {
                // A process killed while writing a line may leave it cut short; it is the only line that may be.
                guard let entry = try? decoder.decode(FleetLogEntry.self, from: Data(line.utf8)) else { continue }
                lines.append(entry)
            }
            entries += lines
            samples.append(lines.filter { $0.kind == .sample })
            checker.record(Self.events(lines))
        }
        checkedReads = checker.reads
        violations = checker.violations()
    }

    private static func events(_ lines: [FleetLogEntry]) -> [Checker.Event] {
        var finished: Set<String> = []
        for line in lines where line.kind != .begin && line.kind != .sample {
            if let id = line.id { finished.insert(id) }
        }
        var events: [Checker.Event] = []
        for line in lines {
            guard let key = line.key else { continue }
            let start = Int64(clamping: line.start)
            let end = Int64(clamping: line.end ?? line.start)
            let failed = line.failed ?? false
            switch line.kind {
            case .read:
                if !failed {
                    events.append(Checker.Event(key: key, operation: .read(line.value), start: start, end: end))
                }
            case .write:
                let value = line.value ?? ""
                events.append(
                    Checker.Event(
                        key: key,
                        operation: failed ? .uncertain(value) : .write(value),
                        start: start,
                        end: end
                    )
                )
            case .delete:
                events.append(
                    Checker.Event(key: key, operation: failed ? .uncertain(nil) : .delete, start: start, end: end)
                )
            case .begin:
                guard let id = line.id, !finished.contains(id) else { continue }
                let value = line.operation == "delete" ? nil : line.value
                events.append(Checker.Event(key: key, operation: .uncertain(value), start: start, end: .max))
            case .bypass:
                events.append(Checker.Event(key: key, operation: .uncertain(line.value), start: start, end: end))
            case .sample:
                break
            }
        }
        return events
    }

    /// The figures of the calls that started in `[from, to)`.
    package func figures(from: UInt64, to: UInt64) -> FleetFigures {
        var figures = FleetFigures()
        var lags: [UInt64] = []
        for entry in entries where entry.start >= from && entry.start < to {
            switch entry.kind {
            case .read, .write, .delete:
                figures.operations += 1
                if entry.kind == .read { figures.reads += 1 }
                if entry.failed ?? false { figures.failed += 1 }
            case .bypass:
                figures.bypassWrites += 1
                if let lag = entry.lag {
                    lags.append(lag)
                } else if entry.measured ?? true {
                    figures.bypassNotSeen += 1
                }
            case .begin, .sample:
                break
            }
        }
        for violation in violations {
            let start = UInt64(clamping: violation.read.start)
            guard start >= from, start < to else { continue }
            if violation.phantom { figures.phantomReads += 1 } else { figures.staleReads += 1 }
        }
        var counters = FleetCounters()
        for log in samples {
            counters = counters + (Self.counters(log, at: to) - Self.counters(log, at: from))
        }
        figures.readsServedByNew = counters.readsServedByNew
        figures.sampledReads = counters.reads
        figures.barrierWaits = counters.barrierWaits
        figures.applied = counters.applied
        figures.newFailures = counters.newFailures
        lags.sort()
        figures.bypassLagP50Milliseconds = Self.percentile(lags, 0.50)
        figures.bypassLagP99Milliseconds = Self.percentile(lags, 0.99)
        return figures
    }

    /// The counters of the last sample at or before `time`.
    private static func counters(_ samples: [FleetLogEntry], at time: UInt64) -> FleetCounters {
        var low = 0
        var high = samples.count
        while low < high {
            let middle = (low + high) / 2
            if samples[middle].start <= time { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? FleetCounters() : samples[low - 1].counters ?? FleetCounters()
    }

    private static func percentile(_ sorted: [UInt64], _ fraction: Double) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let index = min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded(.up)))
        return Double(sorted[index]) / 1e6
    }
}

/// What a window of a fleet's history shows.
package struct FleetFigures: Codable, Sendable, Hashable {
    /// Proxy calls that started in the window.
    package var operations = 0
    package var reads = 0
    package var failed = 0
    package var staleReads = 0
    package var phantomReads = 0
    /// Reads served by New, from the workers' counters.
    package var readsServedByNew: Int64 = 0
    /// Reads, from the workers' counters (the denominator of ``shareServedByNew``).
    package var sampledReads: Int64 = 0
    /// Writes that waited out the fleet's barrier.
    package var barrierWaits: Int64 = 0
    /// Keys the change applier copied into New.
    package var applied: Int64 = 0
    /// New's calls that failed and that the proxy absorbed.
    package var newFailures: Int64 = 0
    package var bypassWrites = 0
    /// Bypass writes New had not caught up with when the bypass writer stopped watching.
    package var bypassNotSeen = 0
    package var bypassLagP50Milliseconds: Double?
    package var bypassLagP99Milliseconds: Double?
    /// Keys whose record differs between Old and New once the applier has caught up (before any verify); set by
    /// whoever compared them.
    package var divergentKeys: Int?

    package init() {}

    /// The share of reads served by New, in [0, 1].
    package var shareServedByNew: Double { sampledReads == 0 ? 0 : Double(readsServedByNew) / Double(sampledReads) }

    /// One line for a log or a report.
    package var line: String {
        func milliseconds(_ value: Double?) -> String { value.map { String(format: "%.0f ms", $0) } ?? "-" }
        return "\(operations) operations, \(reads) reads, \(failed) failed, \(staleReads) stale reads, "
            + "\(phantomReads) phantom reads, divergent keys before verify: \(divergentKeys.map(String.init) ?? "-"), "
            + String(format: "New-served %.1f%%", shareServedByNew * 100)
            + ", bypass writes \(bypassWrites) (lag p50 \(milliseconds(bypassLagP50Milliseconds)), "
            + "p99 \(milliseconds(bypassLagP99Milliseconds)), not seen \(bypassNotSeen)), "
            + "barrier waits \(barrierWaits), applied \(applied)"
    }
}
