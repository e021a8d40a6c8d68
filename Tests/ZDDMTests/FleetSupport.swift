import Logging
import Synchronization
import ZDDM
import ZDDMTesting

/// Several in-process instances of one service, each with its own proxy, gate, fleet member and change applier,
/// over shared in-memory Old and New stores and one shared fleet state: a fleet without processes.
struct InProcessFleet: Sendable {
    typealias Store = InMemoryStore<String, String>
    typealias Faulty = FaultInjectingStore<Store>

    struct Instance: Sendable {
        let old: Faulty
        let new: Faulty
        let gate: TrafficGate
        let member: FleetMember
        let core: MigrationCore<Faulty, Faulty>
        let proxy: MigrationProxy<Faulty, Faulty>
        let applier: ChangeApplier<Faulty, Faulty>
    }

    static let migration = "fleet"
    let oldBase = Store(captureChanges: true)
    let newBase = Store()
    let state = InMemoryFleetStateStore()
    let options: FleetOptions
    let instances: [Instance]

    init(count: Int, viewLease: Duration = .milliseconds(300)) throws {
        options = FleetOptions(viewLease: viewLease)
        var instances: [Instance] = []
        for index in 0..<count {
            let old = Faulty(oldBase)
            let new = Faulty(newBase)
            let gate = try TrafficGate(rate: 0)
            let member = try FleetMember(store: state, migration: Self.migration, gate: gate, options: options)
            let core = try MigrationCore(name: Self.migration, old: old, new: new, gate: gate, fleet: member)
            let applier = try ChangeApplier(
                core: core,
                fleetState: state,
                fleetOptions: options,
                options: ChangeApplierOptions(idleInterval: .milliseconds(10), leaseDuration: .seconds(2)),
                holder: "instance-\(index)"
            )
            instances.append(
                Instance(
                    old: old,
                    new: new,
                    gate: gate,
                    member: member,
                    core: core,
                    proxy: try MigrationProxy(core: core),
                    applier: applier
                )
            )
        }
        self.instances = instances
    }

    /// Changes the shared state.
    @discardableResult
    func control(_ change: FleetControlChange) async throws -> FleetState {
        try await state.update(Self.migration, change)
    }

    /// Refreshes every instance's view.
    func refreshAll() async throws {
        for instance in instances { try await instance.member.refresh() }
    }

    /// Runs applier passes (the lease goes to the first instance) until the change table is empty and the fleet
    /// has caught up, then refreshes every view.
    func catchUp(within deadline: Duration = .seconds(60)) async throws -> Bool {
        let clock = ContinuousClock()
        let end = clock.now + deadline
        while clock.now < end {
            // A pass fails where New fails; it then gives the lease up to another instance.
            for instance in instances { _ = try? await instance.applier.applyPass() }
            let shared = try await state.state(of: Self.migration)
            if shared.isCaughtUp, try await oldBase.changeBacklog().entries == 0 {
                try await refreshAll()
                return true
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Keys whose record in New differs from Old's (a value in New that Old does not hold, or another value).
    func divergentKeys() -> [String] {
        let old = oldBase.snapshot()
        return newBase.snapshot().compactMap { key, record in
            record.value == old[key]?.value ? nil : key
        }
        .sorted()
    }
}

/// A shared clock for histories: nanoseconds since the first use.
enum HistoryClock {
    static let origin = ContinuousClock.now
    static var now: Int64 {
        let (seconds, attoseconds) = (ContinuousClock.now - origin).components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
