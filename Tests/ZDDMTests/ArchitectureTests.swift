import Foundation
import InMemoryTracing
import Synchronization
import Testing
import Tracing
import ZDDMTesting

@testable import ZDDM

@Suite("Plans: each call decided from one gate snapshot, without stores")
struct CallPlanTests {
    func gate(
        rate: Double,
        highWater: Double? = nil,
        killswitch: Bool = false,
        stage: MigrationStage = .live
    ) -> GateSnapshot {
        GateSnapshot(rate: rate, highWaterRate: highWater ?? rate, killswitch: killswitch, stage: stage)
    }

    @Test("Reads: stage, killswitch and the key's hash rate decide the route")
    func reads() {
        #expect(CallPlan.read(gate(rate: 0.5), hashRate: { 0.1 }) == .newFirst)
        #expect(CallPlan.read(gate(rate: 0.5), hashRate: { 0.7 }) == .oldOnly)
        #expect(CallPlan.read(gate(rate: 1, killswitch: true), hashRate: { 0.1 }) == .oldOnly)
        #expect(CallPlan.read(gate(rate: 1, stage: .shadow), hashRate: { 0.1 }) == .shadow)
        #expect(CallPlan.read(gate(rate: 1, stage: .dualwrite), hashRate: { 0.1 }) == .oldOnly)
        #expect(CallPlan.read(gate(rate: 1, stage: .off), hashRate: { 0.1 }) == .oldOnly)
        #expect(
            CallPlan.read(gate(rate: 1, stage: .rampdown), hashRate: { 0.1 }) == .newAuthoritative(fillFromOld: true)
        )
        #expect(
            CallPlan.read(gate(rate: 1, stage: .complete), hashRate: { 0.1 }) == .newAuthoritative(fillFromOld: false)
        )
        // An open breaker takes New out of the request path, and only there.
        #expect(CallPlan.Read.newFirst.withNewUnavailable() == .oldOnly)
        #expect(CallPlan.Read.shadow.withNewUnavailable() == .oldOnly)
        #expect(
            CallPlan.Read.newAuthoritative(fillFromOld: true).withNewUnavailable()
                == .newAuthoritative(fillFromOld: true)
        )
    }

    @Test("Writes: admitted keys go to both; keys New may hold are invalidated, or held back while New is off")
    func mutations() {
        #expect(CallPlan.mutation(gate(rate: 0.5), hashRate: { 0.1 }) == .oldThenNew)
        #expect(CallPlan.mutation(gate(rate: 0.5), hashRate: { 0.7 }) == .oldOnly)
        #expect(CallPlan.mutation(gate(rate: 0.2, highWater: 0.8), hashRate: { 0.5 }) == .oldThenInvalidate)
        #expect(CallPlan.mutation(gate(rate: 0.2, highWater: 0.8), hashRate: { 0.9 }) == .oldOnly)
        #expect(CallPlan.mutation(gate(rate: 0.5, killswitch: true), hashRate: { 0.1 }) == .oldThenHoldBack)
        #expect(CallPlan.mutation(gate(rate: 0.5, killswitch: true), hashRate: { 0.9 }) == .oldOnly)
        #expect(CallPlan.mutation(gate(rate: 0.5, stage: .off), hashRate: { 0.1 }) == .oldThenHoldBack)
        #expect(CallPlan.mutation(gate(rate: 0.5, stage: .dualwrite), hashRate: { 0.1 }) == .oldThenNew)
        #expect(CallPlan.mutation(gate(rate: 1, stage: .rampdown), hashRate: { 0.1 }) == .newThenOld)
        #expect(CallPlan.mutation(gate(rate: 1, stage: .complete), hashRate: { 0.1 }) == .newOnly)
        #expect(CallPlan.Mutation.oldThenNew.withNewUnavailable() == .oldThenHoldBack)
        #expect(CallPlan.Mutation.oldThenInvalidate.withNewUnavailable() == .oldThenHoldBack)
        #expect(CallPlan.Mutation.oldOnly.withNewUnavailable() == .oldOnly)
        #expect(!CallPlan.Mutation.oldOnly.mayBeInNew)
        #expect(CallPlan.Mutation.oldThenHoldBack.mayBeInNew)
    }

    @Test("The key is hashed at most once per call, and not at all at rate 0 or 1")
    func hashesOnce() {
        let count = Mutex(0)
        func hash() -> Double {
            count.withLock { $0 += 1 }
            return 0.5
        }
        _ = CallPlan.mutation(gate(rate: 0.2, highWater: 0.8), hashRate: hash)
        #expect(count.withLock { $0 } == 1)
        _ = CallPlan.mutation(gate(rate: 1), hashRate: hash)
        _ = CallPlan.read(gate(rate: 1), hashRate: hash)
        _ = CallPlan.mutation(gate(rate: 0), hashRate: hash)
        _ = CallPlan.read(gate(rate: 0), hashRate: hash)
        #expect(count.withLock { $0 } == 1)
    }
}

@Suite("Gate control state: one value, one lock, events acted on outside it")
struct GateControlStateTests {
    final class Counter: Sendable {
        private let count = Atomic(0)
        func increment() { count.wrappingAdd(1, ordering: .relaxed) }
        var value: Int { count.load(ordering: .relaxed) }
    }

    @Test("Changes return what happened; no-ops return nothing; refused changes leave the state as it was")
    func events() throws {
        var state = try GateControlState(rate: 0.5, killswitch: false, stage: .live)
        #expect(try state.setRate(0.5).isEmpty)
        #expect(try state.setRate(0.8) == .published)
        #expect(try state.setRate(0.2) == [.published, .newFellBehind])
        #expect(state.highWaterRate == 0.8)
        #expect(state.setKillswitch(true) == [.published, .newFellBehind])
        #expect(state.setKillswitch(true).isEmpty)
        #expect(state.setKillswitch(false) == .published)
        let before = state
        #expect(throws: ZDDMError.self) { try state.setStage(.rampdown) }
        #expect(throws: ZDDMError.self) { try state.setRate(1.5) }
        #expect(state == before)
        #expect(try state.setStage(.shadow) == [.published, .stageChanged])
        #expect(try state.raiseHighWaterRate(to: 0.5).isEmpty)
        #expect(try state.raiseHighWaterRate(to: 0.9) == .published)
    }

    @Test("Rampdown needs a clean verify recorded since New last fell behind")
    func rampdownPermit() throws {
        var state = try GateControlState(rate: 1, killswitch: false, stage: .live)
        #expect(!state.isRampdownPermitted)
        state.recordCleanVerify(startedAt: state.newBehindEpoch)
        #expect(state.isRampdownPermitted)
        _ = state.markNewBehind()
        #expect(!state.isRampdownPermitted)
        state.recordCleanVerify(startedAt: state.newBehindEpoch)
        #expect(try state.setStage(.rampdown).contains(.stageChanged))
        let error = #expect(throws: ZDDMError.self) { try state.setRate(0.5) }
        #expect(error?.code == .refusedTransition)
    }

    @Test("A snapshot is never torn: rate and high-water rate come from one change, under concurrent changes")
    func snapshotsAreConsistent() async throws {
        let gate = try TrafficGate(rate: 0)
        let steps = 20_000
        let torn = Counter()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // Rising rates: after every change the high-water rate equals the rate.
                for step in 1...steps { try? gate.setRate(Double(step) / Double(steps)) }
            }
            for _ in 0..<2 {
                group.addTask {
                    var last = 0.0
                    while last < 1 {
                        let snapshot = gate.snapshot
                        if snapshot.highWaterRate != snapshot.rate || snapshot.rate < last {
                            torn.increment()
                        }
                        last = snapshot.rate
                    }
                }
            }
        }
        #expect(torn.value == 0)
    }
}

@Suite("Safety memory callbacks run outside its locks")
struct LedgerCallbackTests {
    final class Box: Sendable {
        let ledger = Mutex<KeyLedger<String>?>(nil)
        let plans = Mutex<[KeyLedger<String>.ReadPlan]>([])
    }

    @Test(
        "A callback may call back into the safety memory (it would deadlock under the shard's lock)",
        .timeLimit(.minutes(1))
    )
    func reentrantCallback() {
        let box = Box()
        let ledger = KeyLedger<String>(
            maxUnsafeKeys: 1,
            onUnsafe: {
                guard let ledger = box.ledger.withLock({ $0 }) else { return }
                let plan = ledger.readPlan("k")
                box.plans.withLock { $0.append(plan) }
            },
            onDegraded: {
                guard let ledger = box.ledger.withLock({ $0 }) else { return }
                _ = ledger.readPlan("k")
            }
        )
        box.ledger.withLock { $0 = ledger }
        ledger.markUnsafe("k")
        ledger.markUnsafe("other")  // past the bound: degraded
        #expect(box.plans.withLock { $0.count } == 2)
        #expect(ledger.isDegraded)
    }
}

@Suite("Background work belongs to a service")
struct BackgroundWorkTests {
    final class Flag: Sendable {
        private let value = Atomic(false)
        func set() { value.store(true, ordering: .releasing) }
        var isSet: Bool { value.load(ordering: .acquiring) }
    }

    @Test(
        "Stopping the service ends its background work: a held step finishes before run() returns",
        .timeLimit(.minutes(1))
    )
    func stopEndsWork() async throws {
        let h = try Harness()
        let marker = FileWriteBackMarker(
            url: FileManager.default.temporaryDirectory.appendingPathComponent("zddm-bg-\(UUID())")
        )
        defer { try? FileManager.default.removeItem(at: marker.url) }
        let release = AsyncSignal()
        let ended = Flag()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await h.proxy.run()
                ended.set()
            }
            await h.proxy.core.waitUntilAcceptingBackgroundWork()
            try await h.proxy.startWriteBack(marker: marker)
            h.new.setHooks(before: { operation, _ in if operation == .write { await release.wait() } }, after: nil)
            try await h.proxy.write("k", "v")  // acknowledged; its New step is held in the background
            #expect(h.proxy.core.backgroundWorkPending == 1)
            group.cancelAll()
            #expect(!ended.isSet)  // the step is still running
            release.signal()
            try await group.waitForAll()
        }
        #expect(ended.isSet)
        #expect(h.proxy.core.backgroundWorkPending == 0)
        #expect(!h.proxy.core.isAcceptingBackgroundWork)
        #expect(h.proxy.writeBackPendingCount == 0)
        // Without the service, write-back steps run before the write returns.
        h.new.setHooks(before: nil, after: nil)
        try await h.proxy.write("k", "w")
        #expect(try await h.newRecord("k") == .value("w"))
    }
}

extension BackgroundWorkTests {
    @Test("A second run() (the proxy and its core both in a service group) waits instead of ending the group")
    func secondRunWaits() async throws {
        let h = try Harness()
        let core = h.proxy.core
        let secondEnded = Flag()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await h.proxy.run() }
            await core.waitUntilAcceptingBackgroundWork()
            group.addTask {
                try await core.run()
                secondEnded.set()
            }
            try await eventually { core.background.runCalls.load(ordering: .relaxed) == 2 }
            for _ in 0..<1_000 { await Task.yield() }
            #expect(!secondEnded.isSet)
            #expect(core.isAcceptingBackgroundWork)
            group.cancelAll()
        }
        #expect(secondEnded.isSet)
    }
}

@Suite("Tracing")
struct TracingTests {
    @Test("A span per call, child spans per store step, attributes without keys or values")
    func spans() async throws {
        let tracer = InMemoryTracer()
        let old = InMemoryStore<String, String>(["user-42": "secret-value"])
        let proxy = try MigrationProxy(
            name: "traced",
            old: old,
            new: InMemoryStore<String, String>(),
            gate: TrafficGate(rate: 1),
            tracer: tracer
        )
        #expect(try await proxy.read("user-42") == "secret-value")
        let spans = tracer.finishedSpans
        let read = try #require(spans.first { $0.operationName == "zddm.read" })
        #expect(read.attributes["zddm.migration"]?.toSpanAttribute() == "traced")
        #expect(read.attributes["zddm.served_by"]?.toSpanAttribute() == "old_after_miss")
        #expect(read.attributes["zddm.stage"]?.toSpanAttribute() == "live")
        #expect(read.attributes["zddm.admitted"]?.toSpanAttribute() == true)
        let children = spans.filter { $0.spanContext.parentSpanID == read.spanContext.spanID }.map(\.operationName)
        // Both in-memory stores keep versions: the fill is a fenced write.
        #expect(Set(children) == ["zddm.new.read", "zddm.old.read", "zddm.new.write_if_newer"])
        tracer.clearAll()
        try await proxy.write("user-42", "other-secret")
        let write = tracer.finishedSpans
        #expect(Set(write.map(\.operationName)) == ["zddm.write", "zddm.old.write", "zddm.new.write_if_newer"])
        // Nothing of a key or a value reaches a span.
        for span in spans + write {
            var texts: [String] = []
            // swift-format-ignore: ReplaceForEachWithForLoop
            span.attributes.forEach { name, attribute in texts.append("\(name)=\(attribute)") }
            for text in texts { #expect(!text.contains("user-42") && !text.contains("secret"), "\(text)") }
        }
    }

    @Test("With no tracer installed, no span is made")
    func noTracer() throws {
        let proxy = try MigrationProxy(
            name: "untraced",
            old: InMemoryStore<String, String>(),
            new: InMemoryStore<String, String>(),
            gate: TrafficGate(rate: 1)
        )
        #expect(proxy.core.tracer == nil)
    }
}

@Suite("Error codes mean one thing")
struct ErrorCodeTests {
    @Test("A file that cannot be written or read is an I/O error naming the file, not a bad argument")
    func io() async throws {
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("zddm-missing-\(UUID())")
        let marker = FileWriteBackMarker(url: missing.appendingPathComponent("marker"))
        let markerError = await #expect(throws: ZDDMError.self) { try await marker.set() }
        #expect(markerError?.code == .io)
        #expect(markerError?.description.contains("marker") == true)
        // A folder that cannot exist: its parent is a regular file.
        let blocker = FileManager.default.temporaryDirectory.appendingPathComponent("zddm-file-\(UUID())")
        try Data("x".utf8).write(to: blocker)
        defer { try? FileManager.default.removeItem(at: blocker) }
        let checkpoints = FileCheckpointStore<String>(directory: blocker.appendingPathComponent("sub"))
        let checkpoint = BackfillCheckpoint<String>(
            cursor: "k",
            rate: 1,
            rowsScanned: 1,
            rowsCopied: 1,
            finished: false
        )
        let saveError = await #expect(throws: ZDDMError.self) { try await checkpoints.save(checkpoint, name: "run") }
        #expect(saveError?.code == .io)
        // A refused stage change is a refused transition, not an invalid argument.
        let gate = try TrafficGate(rate: 1)
        let refused = #expect(throws: ZDDMError.self) { try gate.setStage(.complete) }
        #expect(refused?.code == .refusedTransition)
    }
}

@Suite("A repair clears a key's mark only when nothing else touched the key")
struct RepairClearingTests {
    @Test("A repair that overlapped writes in flight leaves the key unsafe; a lone repair clears it")
    func overlapKeepsMark() {
        let ledger = KeyLedger<String>(maxUnsafeKeys: 100)
        let w1 = ledger.beginMutation("k")
        let w2 = ledger.beginMutation("k")  // overlap: marked
        let repair = ledger.beginMutation("k")
        _ = ledger.endMutation("k", w2, .overwritten, mayRepair: false)
        _ = ledger.endMutation("k", w1, .overwritten, mayRepair: false)  // may land in New after w2
        _ = ledger.endMutation("k", repair, .invalidated, mayRepair: false)
        #expect(ledger.unsafeKeys == 1)
        #expect(ledger.readPlan("k") != .normal)

        ledger.markUnsafe("lone")
        let alone = ledger.beginMutation("lone")
        _ = ledger.endMutation("lone", alone, .invalidated, mayRepair: false)
        #expect(ledger.readPlan("lone") == .normal)
    }
}
