import Foundation
import InMemoryTracing
import Logging
import ServiceLifecycle
import Synchronization
import Tracing
import ZDDM
import ZDDMTesting

/// One instance of a fleet in its own process (`zddm worker --fleet`): a proxy over Old (change capture, versions)
/// and New (versions), a ``FleetMember`` following the shared state in Old's database, and a ``ChangeApplier``
/// (the lease makes one of the fleet's appliers active), all run in a `ServiceGroup` while random traffic goes
/// through the proxy. Or, with `bypass`, a writer that updates Old with plain SQL, past the proxy and the store
/// API, and measures how long New takes to hold each of its writes.
///
/// Every call is appended to the log as it returns (a write or delete also when it begins), so a process killed
/// with SIGKILL leaves its history. The traffic follows three files: it pauses while the pause file exists (and
/// says `traffic paused` on standard error once no call is in flight), stops when the stop file appears, and New
/// fails every call while the outage file exists. After the traffic, the services keep running until the exit file
/// appears, so the change applier can catch up. A pause that waits more than 10 s for calls in flight logs which
/// calls, and, with `ZDDM_WORKER_TRACE` set in the environment, the spans they have open (the step each waits on).
struct FleetWorker: Sendable {
    struct Settings: Sendable {
        var location: FleetStores.Location
        var migration: String
        var seed: UInt64
        var keys: Int64
        var skew: Bool
        var tasks: Int
        var duration: Duration
        var log: String
        var stopFile: String?
        var pauseFile: String?
        var exitFile: String?
        var outageFile: String?
        var newFailureRate: Double
        var viewLease: Duration
        var applierLease: Duration
        var sampleInterval: Duration
        var bypass: Bool
    }

    /// What the worker prints on standard output when it is done.
    struct Summary: Codable, Sendable {
        var operations: Int64
        var failed: Int64
        var reads: Int64
        var readsServedByNew: Int64
        var barrierWaits: Int64
        var applied: Int64
        var newFailures: Int64
        var bypassWrites: Int64
    }

    let settings: Settings
    let logger: Logger

    /// The control files' effect, shared by the traffic tasks.
    private final class Control: Sendable {
        let stopped = Atomic<Bool>(false)
        let paused = Atomic<Bool>(false)
        let inFlight = Atomic<Int>(0)
        let operations = Atomic<Int64>(0)
        let failed = Atomic<Int64>(0)
        let bypassWrites = Atomic<Int64>(0)

        var isStopped: Bool { stopped.load(ordering: .sequentiallyConsistent) }

        /// Marks a call in flight unless the traffic is paused; the watcher sees either the call or the pause.
        func enter() -> Bool {
            inFlight.add(1, ordering: .sequentiallyConsistent)
            if paused.load(ordering: .sequentiallyConsistent) {
                inFlight.subtract(1, ordering: .sequentiallyConsistent)
                return false
            }
            return true
        }

        func leave() { inFlight.subtract(1, ordering: .sequentiallyConsistent) }

        /// What each call in flight is doing, by call identifier, for a pause that takes long to say why.
        private let calls = Mutex<[String: (what: String, since: ContinuousClock.Instant)]>([:])
        /// With `ZDDM_WORKER_TRACE` set, the spans of calls in flight, so a slow pause names the step it waits on.
        let tracer: InMemoryTracer?

        init(tracing: Bool = false) { tracer = tracing ? InMemoryTracer() : nil }

        func note(_ id: String, _ what: String) { calls.withLock { $0[id] = (what, .now) } }

        func done(_ id: String) { _ = calls.withLock { $0.removeValue(forKey: id) } }

        func describeInFlight() -> String {
            let now = ContinuousClock.now
            let epoch = DefaultTracerClock.now.nanosecondsSinceEpoch
            let spans = (tracer?.activeSpans ?? []).map { span in
                "span \(span.operationName) open for \((epoch &- span.startInstant.nanosecondsSinceEpoch) / 1_000_000) ms"
            }
            return calls.withLock { calls in
                calls.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.what) for \(now - $0.value.since)" }
                    .joined(separator: "; ")
            } + " | " + spans.joined(separator: "; ")
        }
    }

    func run() async throws -> Summary {
        let stores = try await FleetStores.open(settings.location, prepare: false)
        let log = try FleetLogWriter(path: settings.log)
        defer { log.close() }
        let summary: Summary
        do {
            summary =
                try await settings.bypass ? runBypass(stores: stores, log: log) : runInstance(stores: stores, log: log)
        } catch {
            await stores.close()
            throw error
        }
        await stores.close()
        return summary
    }

    // MARK: An instance

    private func runInstance(stores: FleetStores, log: FleetLogWriter) async throws -> Summary {
        let control = Control(tracing: ProcessInfo.processInfo.environment["ZDDM_WORKER_TRACE"] != nil)
        let metrics = DemoMetrics()
        let migration = settings.migration
        let faulty = FaultInjectingStore(
            stores.new,
            faults: FaultInjectingStore.Faults(failureRate: settings.newFailureRate),
            seed: settings.seed
        )
        let gate = try TrafficGate(rate: 0)
        let fleetOptions = FleetOptions(viewLease: settings.viewLease)
        let member = try FleetMember(
            store: stores.fleetState,
            migration: migration,
            gate: gate,
            options: fleetOptions,
            logger: logger,
            metricsFactory: metrics
        )
        let core = try MigrationCore(
            name: migration,
            old: stores.old,
            new: faulty,
            gate: gate,
            logger: logger,
            metricsFactory: metrics,
            tracer: control.tracer,
            fleet: member
        )
        let proxy = try MigrationProxy(core: core)
        let applier = try ChangeApplier(
            core: core,
            fleetState: stores.fleetState,
            fleetOptions: fleetOptions,
            options: ChangeApplierOptions(leaseDuration: settings.applierLease, metricsFactory: metrics),
            holder: "worker-\(settings.seed)-\(ProcessInfo.processInfo.processIdentifier)"
        )
        // The first view before any call: without one, every call would wait out the barrier.
        try await member.refresh()
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: proxy), .init(service: member), .init(service: applier)],
                logger: Logger(label: "zddm.worker", factory: { _ in SwiftLogNoOpLogHandler() })
            )
        )
        func counters() -> FleetCounters {
            var counters = FleetCounters()
            counters.operations = control.operations.load(ordering: .relaxed)
            counters.failed = control.failed.load(ordering: .relaxed)
            let reads = metrics.reads(migration: migration)
            counters.reads = reads.total
            counters.readsServedByNew = reads.new
            counters.barrierWaits = metrics.value("zddm_fleet_barrier_waits_total", [("migration", migration)])
            counters.applied = metrics.value("zddm_applier_applied_total", [("migration", migration)])
            counters.newFailures = Int64(faulty.injectedFailures)
            return counters
        }
        try await withThrowingTaskGroup(of: Void.self) { running in
            running.addTask { try await group.run() }
            await proxy.core.waitUntilAcceptingBackgroundWork()
            let watcher = Task { await watch(control, outage: faulty) }
            let sampler = Task {
                while !Task.isCancelled {
                    var sample = FleetLogEntry(kind: .sample, start: realtimeNanoseconds())
                    sample.counters = counters()
                    log.append(sample)
                    control.tracer?.clearFinishedSpans()
                    try? await Task.sleep(for: settings.sampleInterval)
                }
            }
            logger.info("traffic started")
            await traffic(proxy: proxy, control: control, log: log)
            logger.info("traffic stopped")
            await proxy.waitForBackgroundWork()
            await waitForExitFile()
            watcher.cancel()
            sampler.cancel()
            await sampler.value
            var last = FleetLogEntry(kind: .sample, start: realtimeNanoseconds())
            last.counters = counters()
            log.append(last)
            await group.triggerGracefulShutdown()
            for try await _ in running {}
        }
        let totals = counters()
        return Summary(
            operations: totals.operations,
            failed: totals.failed,
            reads: totals.reads,
            readsServedByNew: totals.readsServedByNew,
            barrierWaits: totals.barrierWaits,
            applied: totals.applied,
            newFailures: totals.newFailures,
            bypassWrites: 0
        )
    }

    private func traffic(
        proxy: MigrationProxy<FleetStores.Store, FaultInjectingStore<FleetStores.Store>>,
        control: Control,
        log: FleetLogWriter
    ) async {
        let settings = self.settings
        let deadline = ContinuousClock.now + settings.duration
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<settings.tasks {
                group.addTask {
                    var random = SplitMix64(seed: settings.seed &* 1_000 &+ UInt64(task))
                    var step = 0
                    while ContinuousClock.now < deadline, !control.isStopped {
                        guard control.enter() else {
                            try? await Task.sleep(for: .milliseconds(5))
                            continue
                        }
                        step += 1
                        let key = settings.key(&random)
                        let roll = random.next() % 100
                        let kind: FleetLogEntry.Kind = roll < 50 ? .read : roll < 85 ? .write : .delete
                        var entry = FleetLogEntry(kind: kind, start: 0)
                        entry.id = "t\(task)-\(step)"
                        entry.key = key
                        if kind == .write { entry.value = "p\(settings.seed)-t\(task)-\(step)" }
                        control.note(entry.id ?? "", "\(kind.rawValue) of key \(key)")
                        if kind != .read {
                            var begin = FleetLogEntry(kind: .begin, start: realtimeNanoseconds())
                            begin.id = entry.id
                            begin.key = key
                            begin.value = entry.value
                            begin.operation = kind.rawValue
                            log.append(begin)
                        }
                        entry.start = realtimeNanoseconds()
                        do {
                            switch kind {
                            case .read:
                                entry.value = try await proxy.read(key).map { String(decoding: $0, as: UTF8.self) }
                            case .write:
                                try await proxy.write(key, Array((entry.value ?? "").utf8))
                            default:
                                try await proxy.delete(key)
                            }
                        } catch {
                            entry.failed = true
                            entry.error = "\(error)"
                            control.failed.add(1, ordering: .relaxed)
                        }
                        entry.end = realtimeNanoseconds()
                        log.append(entry)
                        control.operations.add(1, ordering: .relaxed)
                        control.done(entry.id ?? "")
                        control.leave()
                    }
                }
            }
        }
    }

    // MARK: The bypass writer

    private func runBypass(stores: FleetStores, log: FleetLogWriter) async throws -> Summary {
        let sql = try await PlainSQL.open(settings.location)
        let hasher = SHA1RateHasher()
        let control = Control()
        let watcher = Task { await watch(control, outage: nil) }
        logger.info("traffic started")
        let deadline = ContinuousClock.now + settings.duration
        var random = SplitMix64(seed: settings.seed &* 1_000)
        var step = 0
        while ContinuousClock.now < deadline, !control.isStopped {
            guard control.enter() else {
                try? await Task.sleep(for: .milliseconds(5))
                continue
            }
            step += 1
            var entry = FleetLogEntry(kind: .bypass, start: realtimeNanoseconds())
            let key = settings.key(&random)
            entry.id = "b-\(step)"
            entry.key = key
            entry.value = "b\(settings.seed)-\(step)"
            let version: UInt64
            control.note(entry.id ?? "", "bypass write of key \(key)")
            do {
                version = try await sql.writeOld(key, Array((entry.value ?? "").utf8))
            } catch {
                // Nothing was written (one statement): say so, without the value, and go on.
                logger.debug("bypass write failed", metadata: ["zddm.error_type": "\(type(of: error))"])
                control.done(entry.id ?? "")
                control.leave()
                try? await Task.sleep(for: .milliseconds(5))
                continue
            }
            let end = realtimeNanoseconds()
            entry.end = end
            control.bypassWrites.add(1, ordering: .relaxed)
            // New takes only keys below the fleet's high-water rate; the lag is measured for those.
            let highWater = (try? await stores.fleetState.state(of: settings.migration))?.highWaterRate ?? 0
            let measured = highWater >= 1 || (highWater > 0 && hasher.hashRate(of: key) < highWater)
            entry.measured = measured
            // How long until New holds this version (or a newer one); given up after 60 s or at the stop.
            control.note(entry.id ?? "", "waiting for New to hold version \(version) of key \(key)")
            let giveUp = ContinuousClock.now + .seconds(60)
            while measured, ContinuousClock.now < giveUp, !control.isStopped {
                if let held = try? await sql.newVersion(key), held >= version {
                    entry.lag = realtimeNanoseconds() - end
                    break
                }
                try? await Task.sleep(for: .milliseconds(2))
            }
            log.append(entry)
            control.done(entry.id ?? "")
            control.leave()
        }
        logger.info("traffic stopped")
        await waitForExitFile()
        watcher.cancel()
        await sql.close()
        return Summary(
            operations: 0,
            failed: 0,
            reads: 0,
            readsServedByNew: 0,
            barrierWaits: 0,
            applied: 0,
            newFailures: 0,
            bypassWrites: control.bypassWrites.load(ordering: .relaxed)
        )
    }

    // MARK: Control files

    /// Follows the stop, pause and outage files until cancelled.
    private func watch(_ control: Control, outage: FaultInjectingStore<FleetStores.Store>?) async {
        let files = FileManager.default
        var inOutage = false
        while !Task.isCancelled {
            if let stop = settings.stopFile, files.fileExists(atPath: stop) {
                control.stopped.store(true, ordering: .sequentiallyConsistent)
            }
            if let outage, let file = settings.outageFile {
                let now = files.fileExists(atPath: file)
                if now != inOutage {
                    outage.setOutage(now)
                    inOutage = now
                    logger.info(now ? "New outage started" : "New outage ended")
                }
            }
            if let pause = settings.pauseFile {
                let wanted = files.fileExists(atPath: pause)
                if wanted, !control.paused.load(ordering: .sequentiallyConsistent) {
                    control.paused.store(true, ordering: .sequentiallyConsistent)
                    var report = ContinuousClock.now + .seconds(10)
                    while control.inFlight.load(ordering: .sequentiallyConsistent) > 0, !Task.isCancelled {
                        if ContinuousClock.now >= report {
                            // For whoever wonders why a pause takes long: which calls it is waiting for.
                            logger.info(
                                "pause waiting for calls in flight",
                                metadata: [
                                    "zddm.in_flight": "\(control.inFlight.load(ordering: .sequentiallyConsistent))",
                                    "zddm.calls": "\(control.describeInFlight())",
                                ]
                            )
                            report = ContinuousClock.now + .seconds(10)
                        }
                        try? await Task.sleep(for: .milliseconds(1))
                    }
                    logger.info("traffic paused")
                } else if !wanted, control.paused.load(ordering: .sequentiallyConsistent) {
                    control.paused.store(false, ordering: .sequentiallyConsistent)
                }
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Waits until the exit file exists (at most ten minutes), when one was given.
    private func waitForExitFile() async {
        guard let exit = settings.exitFile else { return }
        let giveUp = ContinuousClock.now + .seconds(600)
        while ContinuousClock.now < giveUp, !FileManager.default.fileExists(atPath: exit) {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Prepares the stores for a fleet, and fills Old with `rows` rows (`row-K` for keys 1…rows).
    static func prepare(_ location: FleetStores.Location, rows: Int) async throws {
        let stores = try await FleetStores.open(location, prepare: true)
        do {
            var next: Int64 = 1
            while next <= Int64(rows) {
                let last = min(Int64(rows), next + 999)
                _ = try await stores.old.insertManyIfAbsent(
                    (next...last).map { (key: $0, value: Array("row-\($0)".utf8)) }
                )
                next = last + 1
            }
        } catch {
            await stores.close()
            throw error
        }
        await stores.close()
    }
}

extension FleetWorker.Settings {
    /// A random key in 1…keys: uniform, or skewed towards small keys (keys · u³) so a few are hot.
    func key(_ random: inout SplitMix64) -> Int64 {
        if skew {
            let u = Double(random.next() >> 11) / Double(1 << 53)
            return 1 + Int64(min(Double(keys - 1), (Double(keys) * u * u * u).rounded(.down)))
        }
        return Int64(random.next() % UInt64(keys)) + 1
    }
}
