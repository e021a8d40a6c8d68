package import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import ZDDM
import ZDDMSQL

/// `zddm apply`: the change applier as a process of its own.
package struct ApplyCommand: AsyncParsableCommand, StorePairAction {
    package static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Apply Old's captured changes to New through the fence (the change applier), as a process.",
        discussion: """
            Needs change capture on Old's table (zddm capture install) and a fleet's shared state (the \
            --state-table in Old's database, or in --state). Only one applier per migration works at a time: it \
            holds the migration's lease in the shared state, under a fencing token, and others wait for it, so \
            running one next to every instance is safe. It applies the change table's entries in commit order, \
            removes them, and publishes when the fleet has caught up. Ctrl-C (or SIGTERM) finishes the batch in \
            hand and gives the lease up. With --until-caught-up it exits 0 once the change table is empty.
            """
    )

    @OptionGroup var stores: StorePairOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: "The migration's name in the shared state.")
    var migration: String

    @Option(help: "The shared state's database (sqlite:PATH or postgres://…); Old's by default.")
    var state: String?

    @Option(help: "The shared state's table.")
    var stateTable: String = "zddm_fleet"

    @Option(help: "This applier's name in the lease; a random one by default.")
    var holder: String?

    @Option(help: "Changes applied per batch.")
    var batch: Int = 500

    @Option(help: "Seconds the lease lasts without renewal; others take over after it.")
    var leaseSeconds: Double = 10

    @Flag(help: "Apply until the change table is empty, then exit.")
    var untilCaughtUp = false

    package init() {}

    package func validate() throws {
        if migration.isEmpty { throw ValidationError("--migration must not be empty") }
        guard batch >= 1, batch <= 100_000 else { throw ValidationError("--batch must be in 1…100000, got \(batch)") }
        guard leaseSeconds.isFinite, leaseSeconds >= 0.1, leaseSeconds <= 86_400 else {
            throw ValidationError("--lease-seconds must be a number of seconds in [0.1, 86400]")
        }
        if let holder, holder.isEmpty || holder.count > 200 {
            throw ValidationError("--holder must be 1…200 characters")
        }
        do {
            _ = try SQLIdentifier(stateTable, role: "--state-table")
        } catch let error as ZDDMError {
            throw ValidationError(error.message)
        }
    }

    package func run() async throws {
        // The metrics system first: the migration's core and the applier take the factory when they are created.
        try await metrics.run { try await stores.run(self, migration: migration, createNew: false) }
    }

    func run<Key: SQLKey & Codable>(_ pair: StorePair<Key>) async throws {
        guard pair.core.usesVersions else {
            throw ZDDMError(
                .invalidArgument,
                message: "the change applier needs change capture on Old's table \(stores.table) "
                    + "(zddm capture install) and --versions on or auto"
            )
        }
        var options = ChangeApplierOptions()
        options.batchSize = batch
        options.leaseDuration = .milliseconds(Int64((leaseSeconds * 1000).rounded()))
        options.idleInterval = .milliseconds(min(1_000, Int64(leaseSeconds * 250)))
        let applierOptions = options
        try await OpenedDatabase.withFleetStateStore(
            state ?? stores.from,
            option: state == nil ? "--from" : "--state",
            table: stateTable,
            prepare: true
        ) { store in
            let applier = try ChangeApplier(core: pair.core, fleetState: store, options: applierOptions, holder: holder)
            if untilCaughtUp {
                try await catchUp(applier, pair.old.store, idle: applierOptions.idleInterval)
            } else {
                var logger = Logger(label: "zddm")
                logger.logLevel = .warning
                let group = ServiceGroup(
                    configuration: ServiceGroupConfiguration(
                        services: [.init(service: applier)],
                        gracefulShutdownSignals: [.sigint, .sigterm],
                        logger: logger
                    )
                )
                print("applying changes to New for migration '\(migration)'; Ctrl-C stops")
                try await group.run()
                await applier.releaseLease()
            }
        }
    }

    /// Applies passes until the change table is empty; waits while another applier holds the lease.
    private func catchUp<Key: SQLKey & Codable>(
        _ applier: ChangeApplier<StorePair<Key>.Store, StorePair<Key>.Store>,
        _ old: StorePair<Key>.Store,
        idle: Duration
    ) async throws {
        var applied = 0
        while !Task.isCancelled {
            let pass = try await applier.applyPass()
            applied += pass.applied
            if pass.paused {
                await applier.releaseLease()
                throw ZDDMError(
                    .invalidArgument,
                    message: "migration '\(migration)' does not write New (its stage is off or its killswitch is on "
                        + "in the shared state; see zddm control show): nothing to apply to"
                )
            }
            if pass.holdsLease, pass.entries == 0, try await old.changeBacklog().entries == 0 { break }
            if !pass.holdsLease { try await Task.sleep(for: idle) }
        }
        await applier.releaseLease()
        print("caught up: \(applied) changes applied for migration '\(migration)'")
    }
}
