package import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import SystemPackage
import ZDDM
import ZDDMCLI
import ZDDMControl
import ZDDMSQL
import ZDDMTesting

/// `zddm worker` (hidden): one instance of a fleet, for the multi-process tests.
///
/// Runs a ``MigrationProxy`` over two key-value tables (integer keys, raw-byte values) with a
/// ``MigrationControlService`` watching a shared JSON file, drives random reads, writes and deletes over a small key
/// space until the stop file appears (or for `--seconds`), and appends every call to a log file as JSON lines: kind,
/// key, value (text), start and end in nanoseconds of `CLOCK_REALTIME` (shared by all processes of the machine), and
/// whether it failed. Prints a JSON summary on standard output. Logs `traffic started` on standard error when the
/// traffic starts, then each control change (so a test can wait for a change to be applied in every process).
package struct WorkerCommand: AsyncParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run one fleet instance: random traffic through a proxy controlled by a shared JSON file.",
        shouldDisplay: false
    )

    @Option(help: "Old's URL.")
    var old: String

    @Option(help: "New's URL.")
    var new: String

    @Option(help: "The table, in both databases.")
    var table: String = "kv"

    @Option(help: "New's table, when its name differs.")
    var newTable: String?

    @Option(help: "The JSON control file (zddm.<migration>.rate, .killswitch, .stage).")
    var config: String?

    @Option(help: "The migration's name.")
    var migration: String = "kv"

    @Option(help: "How long to drive traffic, in seconds, at the most.")
    var seconds: Double = 5

    @Option(help: "Stop the traffic as soon as this file exists.")
    var stopFile: String?

    @Option(help: "Random seed; also tags the values this process writes.")
    var seed: UInt64 = 1

    @Option(help: "The log file; operations are appended as JSON lines.")
    var log: String?

    @Option(help: "Keys 1…N are used.")
    var keys: Int = 16

    @Option(help: "Concurrent client tasks.")
    var tasks: Int = 4

    @Option(help: "How often the control file is checked, in milliseconds.")
    var pollMilliseconds: Int = 50

    @Option(help: "SQLite busy timeout, in milliseconds.")
    var busyTimeoutMilliseconds: Int = 30_000

    @Flag(help: "Only create the tables (New's afresh) and exit.")
    var prepare = false

    @Flag(
        help: """
            Fleet mode: Old with change capture and versions, New with versions, the fleet's shared state in Old's \
            database (no control file), a fleet member and a change applier beside the proxy.
            """
    )
    var fleet = false

    @Flag(help: "With --fleet: write into Old with plain SQL, past the proxy, and measure New's lag.")
    var bypass = false

    @Option(help: "With --fleet: the fleet-state table in Old's database.")
    var fleetTable: String = "zddm_fleet"

    @Option(help: "With --fleet --prepare: rows put in Old (row-K for keys 1…N).")
    var rows: Int = 0

    @Option(help: "With --fleet: share of New's calls that fail in this process, in [0, 1].")
    var newFailureRate: Double = 0

    @Option(help: "With --fleet: New fails every call while this file exists.")
    var newOutageFile: String?

    @Option(help: "With --fleet: the traffic pauses while this file exists.")
    var pauseFile: String?

    @Option(help: "With --fleet: after the traffic, keep the services running until this file exists.")
    var exitFile: String?

    @Option(help: "With --fleet: the fleet's view lease, in milliseconds.")
    var viewLeaseMilliseconds: Int = 500

    @Option(help: "With --fleet: the change applier's lease, in milliseconds.")
    var applierLeaseMilliseconds: Int = 2_000

    @Option(help: "With --fleet: how often the counters are sampled into the log, in milliseconds.")
    var sampleMilliseconds: Int = 100

    @Flag(help: "Skewed key popularity: a few small keys get most calls.")
    var skew = false

    package init() {}

    package func validate() throws {
        guard seconds > 0, seconds <= 600 else {
            throw ValidationError("--seconds must be in (0, 600], got \(seconds)")
        }
        guard keys >= 1, keys <= 1_000_000 else { throw ValidationError("--keys must be in 1…1000000, got \(keys)") }
        guard tasks >= 1, tasks <= 256 else { throw ValidationError("--tasks must be in 1…256, got \(tasks)") }
        guard pollMilliseconds >= 1 else { throw ValidationError("--poll-milliseconds must be at least 1") }
        guard busyTimeoutMilliseconds >= 0 else { throw ValidationError("--busy-timeout-milliseconds must be ≥ 0") }
        if fleet {
            guard prepare || log != nil else { throw ValidationError("give --log") }
            guard newFailureRate >= 0, newFailureRate <= 1 else {
                throw ValidationError("--new-failure-rate must be in [0, 1], got \(newFailureRate)")
            }
            guard rows >= 0, viewLeaseMilliseconds >= 4, applierLeaseMilliseconds >= 1, sampleMilliseconds >= 1 else {
                throw ValidationError("--rows, the leases and the sample interval must be positive")
            }
        } else {
            if bypass { throw ValidationError("--bypass needs --fleet") }
            if !prepare, config == nil || log == nil { throw ValidationError("give --config and --log") }
        }
    }

    package func run() async throws {
        if fleet {
            try await runFleet()
            return
        }
        let busyTimeout = Duration.milliseconds(busyTimeoutMilliseconds)
        let oldStore: OpenedStore<Int64, [UInt8]> = try await StoreOpener.open(
            old,
            table: table,
            codec: RawBytesValueCodec(),
            create: prepare,
            busyTimeout: busyTimeout
        )
        let newStore: OpenedStore<Int64, [UInt8]> = try await StoreOpener.open(
            new,
            table: newTable ?? table,
            codec: RawBytesValueCodec(),
            create: prepare,
            fresh: prepare,
            busyTimeout: busyTimeout
        )
        guard !prepare, let config, let log else {
            await oldStore.close()
            await newStore.close()
            return
        }
        let gate = try TrafficGate(rate: 0)
        let states = GateStateLog()
        var logger = Logger(label: "zddm.worker.\(seed)") { GateStateRecorder(label: $0, gate: gate, states: states) }
        logger.logLevel = .info
        let proxy = try MigrationProxy(name: migration, old: oldStore.store, new: newStore.store, gate: gate)
        let control = try await MigrationControlService.watchingJSONFile(
            FilePath(config),
            environment: false,
            pollInterval: .milliseconds(pollMilliseconds),
            gates: [migration: gate],
            logger: logger
        )
        control.applyCurrentConfiguration()
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: proxy), .init(service: control)],
                logger: Logger(label: "zddm.worker", factory: { _ in SwiftLogNoOpLogHandler() })
            )
        )
        let traffic = WorkerTraffic(
            proxy: proxy,
            keys: Int64(keys),
            tasks: tasks,
            seed: seed,
            duration: .milliseconds(Int64(seconds * 1_000)),
            stopFile: stopFile
        )
        let outcome = try await withThrowingTaskGroup(of: WorkerTraffic.Outcome?.self) { running in
            running.addTask {
                try await group.run()
                return nil
            }
            await proxy.core.waitUntilAcceptingBackgroundWork()
            logger.info("traffic started")
            let outcome = await traffic.run(states: states)
            await proxy.waitForBackgroundWork()  // shadow comparisons started by the traffic
            await group.triggerGracefulShutdown()
            for try await _ in running {}
            return outcome
        }
        await oldStore.close()
        await newStore.close()
        try outcome.appendLog(to: log)
        print(try outcome.summaryJSON())
    }
}

extension WorkerCommand {
    private func runFleet() async throws {
        let location = FleetStores.Location(
            old: old,
            new: new,
            table: table,
            newTable: newTable,
            fleetTable: fleetTable,
            busyTimeout: .milliseconds(busyTimeoutMilliseconds)
        )
        guard !prepare, let log else {
            try await FleetWorker.prepare(location, rows: rows)
            return
        }
        var logger = Logger(label: "zddm.worker.\(seed)") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .info
        let settings = FleetWorker.Settings(
            location: location,
            migration: migration,
            seed: seed,
            keys: Int64(keys),
            skew: skew,
            tasks: tasks,
            duration: .milliseconds(Int64(seconds * 1_000)),
            log: log,
            stopFile: stopFile,
            pauseFile: pauseFile,
            exitFile: exitFile,
            outageFile: newOutageFile,
            newFailureRate: newFailureRate,
            viewLease: .milliseconds(viewLeaseMilliseconds),
            applierLease: .milliseconds(applierLeaseMilliseconds),
            sampleInterval: .milliseconds(sampleMilliseconds),
            bypass: bypass
        )
        let summary = try await FleetWorker(settings: settings, logger: logger).run()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(summary), as: UTF8.self))
    }
}

/// One call as the worker saw it.
struct WorkerOperation: Codable, Sendable {
    /// `read`, `write` or `delete`.
    var kind: String
    var key: Int64
    /// The value written, or read; `nil` for a delete or a read that found nothing.
    var value: String?
    /// Set once, read by every traffic task.
    final class StopFlag: Sendable {
        private let flag = Atomic<Bool>(false)

        var isSet: Bool { flag.load(ordering: .relaxed) }

        func set() { flag.store(true, ordering: .relaxed) }
    }

    /// `CLOCK_REALTIME` in nanoseconds when the call started and ended.
    var start: UInt64
    var end: UInt64
    var failed: Bool
    /// The error's description when the call failed (never holds a value).
    var error: String?
}

/// Drives the worker's random traffic through a proxy and samples the gate.
struct WorkerTraffic: Sendable {
    typealias Store = AnyKeyValueStore<Int64, [UInt8]>

    struct Outcome: Sendable {
        var operations: [WorkerOperation]
        /// Each distinct gate state the control file put the gate in, in order (`rate/killswitch/stage`).
        var gateStates: [String]

        func appendLog(to path: String) throws {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            var data = Data()
            for operation in operations {
                data.append(try encoder.encode(operation))
                data.append(0x0A)
            }
            if !FileManager.default.fileExists(atPath: path) {
                guard FileManager.default.createFile(atPath: path, contents: nil) else {
                    throw ValidationError("cannot create the log file \(path)")
                }
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: data)
        }

        func summaryJSON() throws -> String {
            struct Summary: Codable {
                var operations: Int
                var failed: Int
                var gateStates: [String]
            }
            let summary = Summary(
                operations: operations.count,
                failed: operations.filter(\.failed).count,
                gateStates: gateStates
            )
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return String(decoding: try encoder.encode(summary), as: UTF8.self)
        }
    }

    let proxy: MigrationProxy<Store, Store>
    let keys: Int64
    let tasks: Int
    let seed: UInt64
    let duration: Duration
    let stopFile: String?

    func run(states: GateStateLog) async -> Outcome {
        let proxy = self.proxy
        let keys = self.keys
        let seed = self.seed
        let deadline = ContinuousClock.now + duration
        let stopped = StopFlag()
        let watcher = Task { [stopFile] in
            guard let stopFile else { return }
            while ContinuousClock.now < deadline, !FileManager.default.fileExists(atPath: stopFile) {
                try? await Task.sleep(for: .milliseconds(10))
            }
            stopped.set()
        }
        let operations = await withTaskGroup(of: [WorkerOperation].self) { group in
            for task in 0..<tasks {
                group.addTask {
                    var random = SplitMix64(seed: seed &* 1_000 &+ UInt64(task))
                    var operations: [WorkerOperation] = []
                    var step = 0
                    while ContinuousClock.now < deadline, !stopped.isSet {
                        step += 1
                        let key = Int64(random.next() % UInt64(keys)) + 1
                        let roll = random.next() % 100
                        var operation = WorkerOperation(
                            kind: roll < 50 ? "read" : roll < 85 ? "write" : "delete",
                            key: key,
                            value: nil,
                            start: 0,
                            end: 0,
                            failed: false,
                            error: nil
                        )
                        if operation.kind == "write" { operation.value = "p\(seed)-t\(task)-\(step)" }
                        operation.start = realtimeNanoseconds()
                        do {
                            switch operation.kind {
                            case "read":
                                operation.value = try await proxy.read(key).map { String(decoding: $0, as: UTF8.self) }
                            case "write":
                                try await proxy.write(key, Array((operation.value ?? "").utf8))
                            default:
                                try await proxy.delete(key)
                            }
                        } catch {
                            operation.failed = true
                            operation.error = "\(error)"
                        }
                        operation.end = realtimeNanoseconds()
                        operations.append(operation)
                    }
                    return operations
                }
            }
            var all: [WorkerOperation] = []
            for await part in group { all += part }
            return all
        }
        watcher.cancel()
        states.record(proxy.gate)
        return Outcome(operations: operations, gateStates: states.all)
    }
}

/// Set once, read by every traffic task.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    var isSet: Bool { flag.load(ordering: .relaxed) }

    func set() { flag.store(true, ordering: .relaxed) }
}

/// `CLOCK_REALTIME` in nanoseconds: one clock for every process of the machine.
func realtimeNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}
