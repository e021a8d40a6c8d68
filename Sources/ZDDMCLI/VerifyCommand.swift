package import ArgumentParser
import Foundation
import ZDDM
import ZDDMSQL

/// `zddm verify`: compare two tables key by key; exit 0 iff they agree.
package struct VerifyCommand: AsyncParsableCommand, StorePairAction {
    package static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Compare Old and New key by key; exit 0 only when no mismatch is found.",
        discussion: """
            Values are compared as stored bytes. With change capture on Old (see --versions), each key's version \
            is compared on both sides and values are read only where versions differ or one side lacks the key; \
            --deep reads every value. --repair fixes New from Old (never writing older data). \
            In a fleet, --migration names the migration in the fleet's shared state (the --state-table in Old's \
            database, or in --state): its barrier is read before the pass, and a clean pass (at rate 1, no \
            mismatch) is recorded there, which permits zddm control set --stage rampdown until New falls behind \
            again.
            """
    )

    @OptionGroup var stores: StorePairOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: "The most mismatched keys to list.")
    var sample: Int = 20

    @Option(help: "Keys per page read from each side.")
    var batch: Int = 5_000

    @Flag(help: "Repair mismatches from Old.")
    var repair = false

    @Flag(help: "With versions, compare every value too (by default only keys whose versions differ are read).")
    var deep = false

    @Option(help: "In a fleet: the migration's name in the shared state, where a clean pass is recorded.")
    var migration: String?

    @Option(help: "With --migration: the shared state's database (sqlite:PATH or postgres://…); Old's by default.")
    var state: String?

    @Option(help: "With --migration: the shared state's table.")
    var stateTable: String = "zddm_fleet"

    package init() {}

    package func validate() throws {
        guard sample >= 0 else { throw ValidationError("--sample must be at least 0, got \(sample)") }
        guard batch >= 1, batch <= 100_000 else { throw ValidationError("--batch must be in 1…100000, got \(batch)") }
        if let migration, migration.isEmpty { throw ValidationError("--migration must not be empty") }
        if migration == nil, state != nil { throw ValidationError("--state needs --migration") }
        do {
            _ = try SQLIdentifier(stateTable, role: "--state-table")
        } catch let error as ZDDMError {
            throw ValidationError(error.message)
        }
    }

    package func run() async throws {
        // The metrics system first: the migration's core takes its metrics factory when it is created.
        try await metrics.run { try await stores.run(self, migration: "verify", createNew: false) }
    }

    func run<Key: SQLKey & Codable>(_ pair: StorePair<Key>) async throws {
        guard let migration else {
            try await verify(pair)
            return
        }
        try await OpenedDatabase.withFleetStateStore(
            state ?? stores.from,
            option: state == nil ? "--from" : "--state",
            table: stateTable,
            prepare: false
        ) { store in
            // The barrier before the pass: a fall-behind during the pass revokes it.
            let before = try await store.state(of: migration)
            guard before != FleetState() else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "migration '\(migration)' has no shared state in table \(stateTable) (check --migration, "
                        + "--state-table and --state; zddm control set creates it)"
                )
            }
            let report = try await verify(pair, exitOnMismatch: false)
            if report.isClean {
                let after = try await store.recordCleanVerify(migration, startedAt: before.behind)
                print("fleet: recorded a clean pass that began at behind \(before.behind) for migration '\(migration)'")
                print("fleet: " + FleetStateReport(migration: migration, state: after).line)
            } else {
                print("fleet: nothing recorded for migration '\(migration)': the pass was not clean" + notClean(report))
            }
            if report.mismatches > 0, !repair { throw ExitCode(1) }
        }
    }

    /// Why a pass without mismatches was not clean.
    private func notClean<Key>(_ report: VerifyReport<Key>) -> String {
        guard report.mismatches == 0 else { return "" }
        return (try? parseRate(stores.rate, option: "--rate")) == 1
            ? " (the migration's safety memory was not empty, or it was degraded)"
            : " (only a pass at --rate 1 counts)"
    }

    /// Runs the pass and prints its report.
    /// - Parameter exitOnMismatch: Whether a mismatch without `--repair` ends the command with exit code 1.
    @discardableResult
    private func verify<Key: SQLKey & Codable>(
        _ pair: StorePair<Key>,
        exitOnMismatch: Bool = true
    ) async throws -> VerifyReport<Key> {
        var options = VerifyOptions()
        options.repair = repair
        options.sampleLimit = sample
        options.batchSize = batch
        options.deep = deep
        let report = try await Verify(core: pair.core, options: options).verify()
        print("verify: \(report)")
        for mismatch in report.sample { print("  \(mismatch.kind.rawValue)\t\(mismatch.key)") }
        if report.mismatches > sample, sample > 0 { print("  … \(report.mismatches - sample) more") }
        if exitOnMismatch, report.mismatches > 0, !repair { throw ExitCode(1) }
        return report
    }
}
