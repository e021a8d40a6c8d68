import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import ZDDM
import ZDDMCLI
import ZDDMTesting

/// What the demo runs.
struct DemoSettings: Sendable {
    var rows: Int
    var clients: Int
    var instances: Int
    var phaseSeconds: Double
    var seed: UInt64
    var location: FleetStores.Location
    var folder: URL
    var oldDescription: String
    var newDescription: String
}

/// Runs a whole live migration while a fleet of instance processes (`zddm worker --fleet`) and a bypass writer use
/// the stores, and reports what happened.
///
/// The demo process is the operator: it fills Old, starts the instances, and changes the fleet's shared state
/// (rate 0 → 1 % → 10 % → 50 %, a New outage during which the killswitch goes on, recovery, 100 %); it runs the
/// backfill as one more instance of the fleet, with clients still running. Then the clients stop, the change
/// applier catches up, and a verify pass compares the stores. Every call of every instance is checked for stale
/// reads with the ``ConsistencyChecker``.
struct DemoRunner: Sendable {
    let stores: FleetStores
    let settings: DemoSettings
    let display: LiveDisplay

    private static let migration = "demo"

    private struct PhasePlan {
        var name: String
        var rate: Double
    }

    func run() async throws -> DemoReport {
        let clock = ContinuousClock()
        let started = clock.now
        var report = DemoReport(
            old: settings.oldDescription,
            new: settings.newDescription,
            rows: settings.rows,
            clients: settings.clients,
            instances: settings.instances
        )
        try await populate()
        let fleetState = stores.fleetState
        let migration = Self.migration
        _ = try await fleetState.update(migration, FleetControlChange(stage: .live, rate: 0))

        // The demo's own instance, for the backfill and the verify.
        let gate = try TrafficGate(rate: 0)
        let fleetOptions = FleetOptions(viewLease: .milliseconds(500))
        let member = try FleetMember(store: fleetState, migration: migration, gate: gate, options: fleetOptions)
        let core = try MigrationCore(name: migration, old: stores.old, new: stores.new, gate: gate, fleet: member)
        let proxy = try MigrationProxy(core: core)
        try await member.refresh()
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: proxy), .init(service: member)],
                logger: Logger(label: "zddm.demo", factory: { _ in SwiftLogNoOpLogHandler() })
            )
        )
        let services = Task { try await group.run() }
        defer { services.cancel() }

        let fleet = try DemoFleet(settings: settings)
        defer { fleet.terminate() }
        display.log("starting \(settings.instances) instances and a bypass writer…")
        guard await fleet.waitUntilAll(say: "traffic started") else {
            throw DemoError("the instances did not start: \(fleet.lastErrors)")
        }

        let plans = [
            PhasePlan(name: "rate 0%", rate: 0),
            PhasePlan(name: "rate 1%", rate: 0.01),
            PhasePlan(name: "rate 10%", rate: 0.1),
            PhasePlan(name: "rate 50%", rate: 0.5),
            PhasePlan(name: "New outage, killswitch", rate: 0.5),
            PhasePlan(name: "recovery", rate: 0.5),
            PhasePlan(name: "rate 100%", rate: 1),
            PhasePlan(name: "backfill (live)", rate: 1),
            PhasePlan(name: "after backfill", rate: 1),
        ]
        let plannedSeconds = settings.phaseSeconds * Double(plans.count - 1) + Double(settings.rows) / 20_000
        let trafficStarted = clock.now
        let phase = Mutex<(index: Int, name: String, rate: Double, killswitch: Bool)>((0, "starting", 0, false))
        let samples = Mutex<[DemoReport.Sample]>([])
        let running = Atomic<Bool>(true)
        let sampler = Task {
            var tail = WorkerLogTail(logs: fleet.logs)
            var previous = FleetCounters()
            var lastShare = 0.0
            var tick = 0
            while running.load(ordering: .acquiring) {
                tick += 1
                try? await Task.sleep(for: .milliseconds(250))
                let now = tail.totals()
                let delta = now - previous
                previous = now
                if delta.reads > 0 { lastShare = Double(delta.readsServedByNew) / Double(delta.reads) }
                let elapsed = (clock.now - trafficStarted).seconds
                let (index, name, rate, killswitch) = phase.withLock { ($0.index, $0.name, $0.rate, $0.killswitch) }
                samples.withLock {
                    $0.append(
                        DemoReport.Sample(
                            seconds: elapsed,
                            shareOfReadsServedByNew: lastShare,
                            rate: killswitch ? 0 : rate,
                            phase: name
                        )
                    )
                }
                let text = String(
                    format: "phase %d/%d %@ | rate %g%%%@ | reads served by New %5.1f%% | requests %lld | failed %lld",
                    index + 1,
                    plans.count,
                    name,
                    rate * 100,
                    killswitch ? " (killswitch on)" : "",
                    lastShare * 100,
                    now.operations,
                    now.failed
                )
                // On a terminal the line is redrawn four times a second; in a log, one line a second.
                if display.isTerminal || tick % 4 == 0 {
                    display.update(text, progress: min(1, elapsed / max(plannedSeconds, 1)))
                }
            }
        }

        var windows: [(plan: PhasePlan, start: UInt64, end: UInt64, seconds: Double)] = []
        for (index, plan) in plans.enumerated() {
            phase.withLock { $0 = (index, plan.name, plan.rate, $0.killswitch) }
            _ = try await fleetState.update(migration, FleetControlChange(rate: plan.rate))
            if plan.name == "after backfill" {
                // Measured once the change applier has caught up with what the backfill and the outage left.
                _ = try await waitForCatchUp(backlog: false)
            }
            let phaseStart = clock.now
            let start = realtimeNanoseconds()
            switch plan.name {
            case "New outage, killswitch":
                try fleet.setOutage(true)
                try await Task.sleep(for: .seconds(settings.phaseSeconds / 3))
                _ = try await fleetState.update(migration, FleetControlChange(killswitch: true))  // the operator reacts
                phase.withLock { $0.killswitch = true }
                try await Task.sleep(for: .seconds(settings.phaseSeconds * 2 / 3))
            case "recovery":
                try fleet.setOutage(false)
                _ = try await fleetState.update(migration, FleetControlChange(killswitch: false))
                phase.withLock { $0.killswitch = false }
                try await Task.sleep(for: .seconds(settings.phaseSeconds))
            case "backfill (live)":
                // The demo's instance follows the shared state: wait until it has seen rate 1.
                let deadline = clock.now + .seconds(30)
                while gate.rate < 1, clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
                var options = BackfillOptions()
                options.batchSize = 1_000
                options.batchesInFlight = 2
                options.expectedTotal = settings.rows
                let backfill = try Backfill(
                    proxy: proxy,
                    checkpoints: MemoryCheckpointStore<Int64>(),
                    name: "demo",
                    options: options
                )
                let progress = try await backfill.runPass()
                report.backfilledRows = progress.rowsCopied
                report.backfilledDeletions = progress.deletionsCopied
            default:
                try await Task.sleep(for: .seconds(settings.phaseSeconds))
            }
            windows.append((plan, start, realtimeNanoseconds(), (clock.now - phaseStart).seconds))
        }
        running.store(false, ordering: .releasing)
        await sampler.value
        display.finishLine()

        // Quiescence: the clients stop, the change applier catches up, then verify compares the stores.
        try fleet.stopTraffic()
        guard await fleet.waitUntilAll(say: "traffic stopped") else {
            throw DemoError("the instances did not stop their traffic: \(fleet.lastErrors)")
        }
        display.log("waiting for the change applier to catch up…")
        let caughtUp = try await waitForCatchUp()
        report.applierCaughtUp = caughtUp
        display.log("verifying \(settings.rows) keys…")
        let verify = try await Verify(proxy: proxy).verify()
        report.verify = DemoReport.VerifySummary(
            keysInOld: verify.keysInOld,
            keysInNew: verify.keysInNew,
            mismatches: verify.mismatches,
            missingInNew: verify.counts[.missingInNew] ?? 0,
            extraInNew: verify.counts[.extraInNew] ?? 0,
            differentValues: verify.counts[.differentValue] ?? 0,
            tombstonesInNew: verify.counts[.tombstoneInNew] ?? 0
        )
        try fleet.exit()
        report.instancesExitedCleanly = await fleet.waitForExit()
        if !report.instancesExitedCleanly { display.log("an instance failed: \(fleet.lastErrors)") }

        display.log("checking every call for stale reads…")
        let initial = Dictionary(uniqueKeysWithValues: (1...Int64(settings.rows)).map { ($0, "row-\($0)") })
        let history = try FleetHistory(logs: fleet.logs, initial: initial)
        for window in windows {
            let figures = history.figures(from: window.start, to: window.end)
            report.phases.append(
                DemoReport.Phase(
                    name: window.plan.name,
                    rate: window.plan.rate,
                    seconds: window.seconds,
                    requests: Int64(figures.operations),
                    failedRequests: Int64(figures.failed),
                    reads: figures.sampledReads,
                    shareOfReadsServedByNew: figures.shareServedByNew,
                    staleReads: figures.staleReads,
                    bypassLagP50Milliseconds: figures.bypassLagP50Milliseconds,
                    bypassLagP99Milliseconds: figures.bypassLagP99Milliseconds
                )
            )
        }
        let total = history.figures(from: 0, to: .max)
        report.requests = Int64(total.operations)
        report.failedRequests = Int64(total.failed)
        report.readsChecked = history.checkedReads
        report.staleReads = total.staleReads
        report.phantomReads = total.phantomReads
        report.barrierWaits = total.barrierWaits
        report.newFailuresAbsorbed = total.newFailures
        report.changesApplied = total.applied
        report.bypassWrites = total.bypassWrites
        report.bypassLagP50Milliseconds = total.bypassLagP50Milliseconds
        report.bypassLagP99Milliseconds = total.bypassLagP99Milliseconds
        if let after = windows.last {
            report.shareOfReadsServedByNewAfterBackfill =
                history.figures(from: after.start, to: after.end)
                .shareServedByNew
        }
        report.samples = samples.withLock { $0 }
        report.wallTimeSeconds = (clock.now - started).seconds
        await group.triggerGracefulShutdown()
        _ = try? await services.value
        return report
    }

    /// Fills Old with the demo's rows (`row-K`), in batches.
    private func populate() async throws {
        let batch = 1_000
        var next: Int64 = 1
        let total = Int64(settings.rows)
        while next <= total {
            let last = min(total, next + Int64(batch) - 1)
            _ = try await stores.old.insertManyIfAbsent((next...last).map { (key: $0, value: Array("row-\($0)".utf8)) })
            display.update("filling Old: \(last) of \(total) rows", progress: Double(last) / Double(total))
            next = last + 1
        }
        display.finishLine()
    }

    /// Waits (at most a minute) until the fleet has caught up and, with `backlog`, Old's change table is empty.
    private func waitForCatchUp(backlog: Bool = true) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let entries = backlog ? try await stores.old.changeBacklog().entries : 0
            let state = try await stores.fleetState.state(of: Self.migration)
            if entries == 0, state.isCaughtUp { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }
}

/// The demo's instance processes and its bypass writer.
final class DemoFleet: Sendable {
    private let processes: [Process]
    let logs: [URL]
    private let errors: [URL]
    private let folder: URL

    init(settings: DemoSettings) throws {
        let folder = settings.folder
        self.folder = folder
        for name in ["stop", "exit", "outage"] {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
        }
        let executable = try Self.executable()
        let location = settings.location
        let common = [
            "worker", "--fleet", "--old", location.old, "--new", location.new, "--table", location.table,
            "--new-table", location.newTable, "--fleet-table", location.fleetTable, "--migration", "demo",
            "--keys", "\(settings.rows)", "--skew", "--seconds", "600",
            "--stop-file", folder.appendingPathComponent("stop").path,
            "--exit-file", folder.appendingPathComponent("exit").path,
            "--new-outage-file", folder.appendingPathComponent("outage").path,
            "--view-lease-milliseconds", "500", "--applier-lease-milliseconds", "2000",
            "--sample-milliseconds", "25",
        ]
        let tasks = max(1, settings.clients / settings.instances)
        var processes: [Process] = []
        var logs: [URL] = []
        var errors: [URL] = []
        for index in 0...settings.instances {
            let bypass = index == settings.instances
            let name = bypass ? "bypass" : "instance-\(index + 1)"
            let log = folder.appendingPathComponent("\(name).jsonl")
            let output = folder.appendingPathComponent("\(name).out")
            let error = folder.appendingPathComponent("\(name).err")
            try? FileManager.default.removeItem(at: log)
            for url in [output, error] {
                guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                    throw DemoError("cannot create \(url.path)")
                }
            }
            let process = Process()
            process.executableURL = executable
            process.arguments =
                common + [
                    "--seed", "\(settings.seed &+ UInt64(index))", "--log", log.path, "--tasks", "\(tasks)",
                ] + (bypass ? ["--bypass"] : [])
            process.standardOutput = try FileHandle(forWritingTo: output)
            process.standardError = try FileHandle(forWritingTo: error)
            process.standardInput = FileHandle.nullDevice
            try process.run()
            processes.append(process)
            logs.append(log)
            errors.append(error)
        }
        self.processes = processes
        self.logs = logs
        self.errors = errors
    }

    /// This program, to start the instances with.
    private static func executable() throws -> URL {
        let proc = URL(fileURLWithPath: "/proc/self/exe")
        if FileManager.default.fileExists(atPath: proc.path) { return proc.resolvingSymlinksInPath() }
        if let url = Bundle.main.executableURL { return url }
        throw DemoError("cannot find the zddm executable to start the instances")
    }

    /// The end of each process's standard error, for a failure message.
    var lastErrors: String {
        errors.map { (try? String(contentsOf: $0, encoding: .utf8)).map { String($0.suffix(500)) } ?? "" }
            .joined(separator: "\n")
    }

    /// Waits (at most a minute) until every process has logged `message` on standard error; `false` at once when
    /// one has exited.
    func waitUntilAll(say message: String) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if processes.contains(where: { !$0.isRunning }) { return false }
            let said = errors.allSatisfy { ((try? String(contentsOf: $0, encoding: .utf8)) ?? "").contains(message) }
            if said { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    func setOutage(_ on: Bool) throws {
        let file = folder.appendingPathComponent("outage")
        if on { try Data().write(to: file) } else { try FileManager.default.removeItem(at: file) }
    }

    func stopTraffic() throws { try Data().write(to: folder.appendingPathComponent("stop")) }

    func exit() throws { try Data().write(to: folder.appendingPathComponent("exit")) }

    /// Waits (at most a minute) for every process to exit; whether all exited with status 0.
    func waitForExit() async -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline, processes.contains(where: \.isRunning) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return processes.allSatisfy { !$0.isRunning && $0.terminationStatus == 0 }
    }

    /// Ends any process still running.
    func terminate() {
        for process in processes where process.isRunning { process.terminate() }
    }
}

/// Reads the counter samples the instances append to their logs, as they come.
struct WorkerLogTail {
    private var offsets: [URL: UInt64] = [:]
    private var latest: [URL: FleetCounters] = [:]
    private var partial: [URL: Data] = [:]
    private let logs: [URL]
    private let decoder = JSONDecoder()

    init(logs: [URL]) { self.logs = logs }

    /// The sum of every log's latest counters.
    mutating func totals() -> FleetCounters {
        for log in logs { read(log) }
        return latest.values.reduce(FleetCounters(), +)
    }

    private mutating func read(_ log: URL) {
        guard let handle = try? FileHandle(forReadingFrom: log) else { return }
        defer { try? handle.close() }
        let offset = offsets[log] ?? 0
        guard (try? handle.seek(toOffset: offset)) != nil, let data = try? handle.readToEnd(), !data.isEmpty else {
            return
        }
        offsets[log] = offset + UInt64(data.count)
        var buffer = (partial[log] ?? Data()) + data
        guard let lastNewline = buffer.lastIndex(of: 0x0A) else {
            partial[log] = buffer
            return
        }
        let complete = buffer[buffer.startIndex...lastNewline]
        buffer = Data(buffer[buffer.index(after: lastNewline)...])
        partial[log] = buffer
        let marker = Data(#""kind":"sample""#.utf8)
        for line in complete.split(separator: 0x0A) where line.range(of: marker) != nil {
            if let counters = (try? decoder.decode(FleetLogEntry.self, from: Data(line)))?.counters {
                latest[log] = counters
            }
        }
    }
}

/// A demo failure, with a message that holds no value.
struct DemoError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) { self.description = description }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
