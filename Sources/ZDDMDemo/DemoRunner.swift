import Foundation
import Logging
import Synchronization
import ZDDM
import ZDDMCLI
import ZDDMTesting

/// What the demo runs.
struct DemoSettings: Sendable {
    var rows: Int
    var clients: Int
    var phaseSeconds: Double
    var seed: UInt64
    var oldDescription: String
    var newDescription: String
}

/// Runs a whole live migration on two stores while simulated clients use them, and reports what happened.
///
/// Phases: rate 0 → 1 % → 10 % → 50 %, a New outage during which an operator turns the killswitch on, recovery,
/// 100 %, then a backfill of the cold keys with clients still running; then clients stop, keys left unsafe by the
/// outage are repaired and caught up, and a verify pass compares the stores.
struct DemoRunner<Old: KeyValueStore, New: KeyValueStore, Checkpoints: BackfillCheckpointStore>: Sendable
where
    Old.Key == Int64,
    New.Key == Int64,
    Old.Value == Account,
    New.Value == Account,
    Checkpoints.Key == Int64
{
    let old: Old
    let new: New
    let checkpoints: Checkpoints
    let settings: DemoSettings
    let display: LiveDisplay

    private final class Shared: Sendable {
        let running = Atomic<Bool>(true)
        let requests = Atomic<Int64>(0)
        let failed = Atomic<Int64>(0)
        let phase = Mutex<(index: Int, name: String)>((0, "starting"))
        let samples = Mutex<[DemoReport.Sample]>([])
        let lastFailure = Mutex<String?>(nil)
    }

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
            clients: settings.clients
        )
        try await populate()

        let metrics = DemoMetrics()
        let faultyNew = FaultInjectingStore(new)
        let gate = try TrafficGate(rate: 0)
        let proxy = try MigrationProxy(
            name: "demo",
            old: old,
            new: faultyNew,
            gate: gate,
            metricsFactory: metrics
        )
        let shared = Shared()
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

        let trafficStarted = clock.now  // the chart's time axis starts with the traffic, after Old is filled
        let clients = Task { await runClients(proxy: proxy, shared: shared) }
        let sampler = Task {
            var previous = metrics.reads(migration: "demo")
            var lastShare = 0.0
            var tick = 0
            while shared.running.load(ordering: .acquiring) {
                tick += 1
                try? await Task.sleep(for: .milliseconds(250))
                let now = metrics.reads(migration: "demo")
                let delta = now - previous
                previous = now
                if delta.total > 0 { lastShare = delta.shareServedByNew }
                let elapsed = (clock.now - trafficStarted).seconds
                let phase = shared.phase.withLock { $0.name }
                let sample = DemoReport.Sample(
                    seconds: elapsed,
                    shareOfReadsServedByNew: lastShare,
                    rate: gate.isKillswitchOn ? 0 : gate.rate,
                    phase: phase
                )
                shared.samples.withLock { $0.append(sample) }
                let (index, name) = shared.phase.withLock { ($0.index, $0.name) }
                let text = String(
                    format: "phase %d/%d %@ | rate %g%%%@ | reads served by New %5.1f%% | requests %lld | failed %lld",
                    index + 1,
                    plans.count,
                    name,
                    gate.rate * 100,
                    gate.isKillswitchOn ? " (killswitch on)" : "",
                    lastShare * 100,
                    shared.requests.load(ordering: .relaxed),
                    shared.failed.load(ordering: .relaxed)
                )
                // On a terminal the line is redrawn four times a second; in a log, one line a second.
                if display.isTerminal || tick % 4 == 0 {
                    display.update(text, progress: min(1, elapsed / max(plannedSeconds, 1)))
                }
            }
        }

        var backfilled = 0
        for (index, plan) in plans.enumerated() {
            shared.phase.withLock { $0 = (index, plan.name) }
            let phaseStart = clock.now
            let requestsBefore = shared.requests.load(ordering: .relaxed)
            let failedBefore = shared.failed.load(ordering: .relaxed)
            let readsBefore = metrics.reads(migration: "demo")
            try gate.setRate(plan.rate)
            switch plan.name {
            case "New outage, killswitch":
                faultyNew.setOutage(true)
                try await Task.sleep(for: .seconds(settings.phaseSeconds / 3))
                gate.setKillswitch(true)  // the operator reacts
                try await Task.sleep(for: .seconds(settings.phaseSeconds * 2 / 3))
            case "recovery":
                faultyNew.setOutage(false)
                gate.setKillswitch(false)
                try await Task.sleep(for: .seconds(settings.phaseSeconds))
            case "backfill (live)":
                var options = BackfillOptions()
                options.batchSize = 1_000
                options.batchesInFlight = 2
                options.expectedTotal = settings.rows
                let backfill = try Backfill(proxy: proxy, checkpoints: checkpoints, name: "demo", options: options)
                backfilled = try await backfill.runPass().rowsCopied
            default:
                try await Task.sleep(for: .seconds(settings.phaseSeconds))
            }
            let reads = metrics.reads(migration: "demo") - readsBefore
            report.phases.append(
                DemoReport.Phase(
                    name: plan.name,
                    rate: plan.rate,
                    seconds: (clock.now - phaseStart).seconds,
                    requests: shared.requests.load(ordering: .relaxed) - requestsBefore,
                    failedRequests: shared.failed.load(ordering: .relaxed) - failedBefore,
                    reads: reads,
                    shareOfReadsServedByNew: reads.shareServedByNew
                )
            )
        }
        shared.running.store(false, ordering: .releasing)
        await clients.value
        await sampler.value
        display.finishLine()

        // Quiescence: repair keys the outage left unsafe, copy them back, then verify.
        report.keysRepairedAfterOutage = await proxy.repairUnsafeKeys()
        var catchUpOptions = BackfillOptions()
        catchUpOptions.batchSize = 1_000
        let catchUp = try Backfill(
            proxy: proxy,
            checkpoints: MemoryCheckpointStore<Int64>(),
            name: "demo-catch-up",
            options: catchUpOptions
        )
        report.catchUpRows = try await catchUp.runPass().rowsCopied
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
        if let failure = shared.lastFailure.withLock({ $0 }) { display.log("last failed request: \(failure)") }

        report.requests = shared.requests.load(ordering: .relaxed)
        report.failedRequests = shared.failed.load(ordering: .relaxed)
        report.backfilledRows = backfilled
        report.fills = metrics.value("zddm_fills_total", [("migration", "demo"), ("outcome", "inserted")])
        report.fillsLostToConcurrentWrites = metrics.value(
            "zddm_fills_total",
            [("migration", "demo"), ("outcome", "lost")]
        )
        report.newFailuresAbsorbed = StoreOperation.allCases.reduce(0) { total, operation in
            total
                + metrics.value("zddm_new_failures_total", [("migration", "demo"), ("operation", operation.rawValue)])
        }
        report.samples = shared.samples.withLock { $0 }
        report.wallTimeSeconds = (clock.now - started).seconds
        return report
    }

    /// Fills Old with the demo's rows, in batches.
    private func populate() async throws {
        let batch = 1_000
        var next: Int64 = 1
        let total = Int64(settings.rows)
        while next <= total {
            let last = min(total, next + Int64(batch) - 1)
            let entries = (next...last).map { key in
                (key: key, value: Account(owner: "user-\(key)", balance: Int(key % 1_000), version: 0))
            }
            _ = try await old.insertManyIfAbsent(entries)
            display.update("filling Old: \(last) of \(total) rows", progress: Double(last) / Double(total))
            next = last + 1
        }
        display.finishLine()
    }

    /// Simulated clients: skewed key popularity; 80 % reads, 15 % writes, 5 % deletes.
    private func runClients(proxy: MigrationProxy<Old, FaultInjectingStore<New>>, shared: Shared) async {
        let rows = settings.rows
        let seed = settings.seed
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<settings.clients {
                group.addTask {
                    var random = SplitMix64(seed: seed &+ UInt64(client))
                    var step = 0
                    while shared.running.load(ordering: .relaxed) {
                        step += 1
                        // A few hot keys get most of the traffic: key = rows · u³.
                        let u = Double.random(in: 0..<1, using: &random)
                        let key = 1 + Int64(min(Double(rows - 1), (Double(rows) * u * u * u).rounded(.down)))
                        let roll = Int.random(in: 0..<100, using: &random)
                        do {
                            if roll < 80 {
                                _ = try await proxy.read(key)
                            } else if roll < 95 {
                                let account = Account(
                                    owner: "user-\(key)",
                                    balance: Int.random(in: 0..<10_000, using: &random),
                                    version: step
                                )
                                try await proxy.write(key, account)
                            } else {
                                try await proxy.delete(key)
                            }
                        } catch {
                            shared.failed.add(1, ordering: .relaxed)
                            shared.lastFailure.withLock { $0 = String(describing: error) }
                        }
                        shared.requests.add(1, ordering: .relaxed)
                        if step % 64 == 0 { await Task.yield() }
                    }
                }
            }
        }
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
