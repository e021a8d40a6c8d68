import Foundation
import Synchronization
import SystemPackage

/// One line of a fleet worker's log (JSON): a call, the start of a mutation, a bypass write, or a sample of the
/// worker's counters. Times are `CLOCK_REALTIME` nanoseconds, shared by every process of the machine.
package struct FleetLogEntry: Codable, Sendable {
    package enum Kind: String, Codable, Sendable {
        /// A proxy call that returned (or failed): `read`, `write` or `delete`.
        case read, write, delete
        /// A write or delete about to be made; a `begin` without its call means the process died during the call.
        case begin
        /// A write into Old with plain SQL, past the proxy; `lag` says when New held its version.
        case bypass
        /// The worker's counters at `start`.
        case sample
    }

    package var kind: Kind
    /// The call's id within its process (`begin` and its call share it).
    package var id: String?
    package var key: Int64?
    /// The value written or read (text); `nil` for a delete or a read that found nothing.
    package var value: String?
    /// For `begin`: `write` or `delete`.
    package var operation: String?
    package var start: UInt64
    package var end: UInt64?
    package var failed: Bool?
    /// The error's description (never a value).
    package var error: String?
    /// For `bypass`: nanoseconds from the end of the write until New held its version; `nil` if not seen.
    package var lag: UInt64?
    /// For `bypass`: `false` when the key was at or above the fleet's high-water rate, so New does not take it and
    /// no lag was measured.
    package var measured: Bool?
    /// For `sample`: the counters.
    package var counters: FleetCounters?

    package init(kind: Kind, start: UInt64) {
        self.kind = kind
        self.start = start
    }
}

/// A worker's running totals, sampled into its log.
package struct FleetCounters: Codable, Sendable, Hashable {
    package var operations: Int64 = 0
    package var failed: Int64 = 0
    package var reads: Int64 = 0
    package var readsServedByNew: Int64 = 0
    package var barrierWaits: Int64 = 0
    package var applied: Int64 = 0
    /// New's calls that failed (injected failures and outages), which the proxy absorbed.
    package var newFailures: Int64 = 0

    package init() {}

    package static func - (lhs: FleetCounters, rhs: FleetCounters) -> FleetCounters {
        var result = FleetCounters()
        result.operations = lhs.operations - rhs.operations
        result.failed = lhs.failed - rhs.failed
        result.reads = lhs.reads - rhs.reads
        result.readsServedByNew = lhs.readsServedByNew - rhs.readsServedByNew
        result.barrierWaits = lhs.barrierWaits - rhs.barrierWaits
        result.applied = lhs.applied - rhs.applied
        result.newFailures = lhs.newFailures - rhs.newFailures
        return result
    }

    package static func + (lhs: FleetCounters, rhs: FleetCounters) -> FleetCounters {
        var result = FleetCounters()
        result.operations = lhs.operations + rhs.operations
        result.failed = lhs.failed + rhs.failed
        result.reads = lhs.reads + rhs.reads
        result.readsServedByNew = lhs.readsServedByNew + rhs.readsServedByNew
        result.barrierWaits = lhs.barrierWaits + rhs.barrierWaits
        result.applied = lhs.applied + rhs.applied
        result.newFailures = lhs.newFailures + rhs.newFailures
        return result
    }
}

/// Appends JSON lines to a file, each with one `write` as soon as it is made, so a process killed with SIGKILL
/// leaves every line it wrote before.
final class FleetLogWriter: Sendable {
    private struct State {
        var file: FileDescriptor?
        let encoder: JSONEncoder
    }

    private let state: Mutex<State>

    init(path: String) throws {
        let descriptor = try FileDescriptor.open(
            FilePath(path),
            .writeOnly,
            options: [.append, .create],
            permissions: [.ownerReadWrite, .groupRead, .otherRead]
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        self.state = Mutex(State(file: descriptor, encoder: encoder))
    }

    func append(_ entry: FleetLogEntry) {
        state.withLock { state in
            guard let file = state.file, var data = try? state.encoder.encode(entry) else { return }
            data.append(0x0A)
            _ = try? data.withUnsafeBytes { try file.writeAll($0) }
        }
    }

    func close() {
        state.withLock { state in
            try? state.file?.close()
            state.file = nil
        }
    }
}
