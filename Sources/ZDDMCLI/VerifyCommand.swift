package import ArgumentParser
import Foundation
import ZDDM
import ZDDMSQL

/// `zddm verify`: compare two tables key by key, alone or with workers on many machines; exit 0 iff they agree.
package struct VerifyCommand: AsyncParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Compare Old and New key by key, alone or with workers on many machines.",
        subcommands: [VerifyCompareCommand.self, VerifyStatusCommand.self],
        defaultSubcommand: VerifyCompareCommand.self
    )

    package init() {}
}

/// `zddm verify [compare]`.
struct VerifyCompareCommand: AsyncParsableCommand, StorePairAction {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract:
            "Compare Old and New key by key; exit 0 when they agree, 1 on a mismatch, 2 on an error (the default subcommand).",
        discussion: """
            Values are compared as stored bytes. With change capture on Old (see --versions), each key's version \
            is compared on both sides and values are read only where versions differ or one side lacks the key; \
            --deep reads every value. --repair fixes New from Old (never writing older data). \
            In a fleet, --migration names the migration in the fleet's shared state (the --state-table in Old's \
            database, or in --state): its barrier is read before the pass, and a clean pass (at rate 1, no \
            mismatch) is recorded there, which permits zddm control set --stage rampdown until New falls behind \
            again.

            A run (--run NAME, or --workers above 1) is split into chunks of keys in coordination tables \
            (zddm_verify_runs and zddm_verify_chunks; see --coordinator): start it on one machine, add workers on \
            others with --join NAME, watch it with zddm verify status NAME. Every process ends when the whole run \
            is done, and exits 1 when the run found a mismatch (without --repair), 2 on an error. A worker that dies loses its \
            chunk in hand, which another worker verifies again once its lease expires. With --migration, the \
            barrier recorded for a clean run is the one read by the process that planned it.
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

    @Option(help: "The most keys compared per second (for a run: across all its workers); no limit by default.")
    var maxRowsPerSecond: Double?

    @Option(help: "Start (or continue) a run of this name, split into chunks that workers anywhere can share.")
    var run: String?

    @Option(help: "Join the run of this name, which must exist, with this process's workers.")
    var join: String?

    @Option(
        help:
            "Workers in this process (a run is created under the name 'zddm-verify' when neither --run nor --join is given)."
    )
    var workers: Int = 1

    @Option(
        help: """
            The run's coordination database: postgres://… (workers on any machine), or sqlite:PATH (one machine); \
            by default New's database if PostgreSQL, else Old's, else New's SQLite file.
            """
    )
    var coordinator: String?

    @Option(help: "Keys per chunk when a run is planned.")
    var chunkRows: Int = 10_000

    @Option(help: "Seconds a worker holds a chunk without renewing it before others may take it over.")
    var leaseSeconds: Double = 30

    @Option(help: "This process's workers' name (each gets -1, -2, …); by default host:pid.")
    var workerName: String?

    init() {}

    /// Whether this is a chunked run rather than a single pass in this process.
    private var isRun: Bool { run != nil || join != nil || workers > 1 }

    func validate() throws {
        guard sample >= 0 else { throw ValidationError("--sample must be at least 0, got \(sample)") }
        guard batch >= 1, batch <= 100_000 else { throw ValidationError("--batch must be in 1…100000, got \(batch)") }
        if let maxRowsPerSecond, !(maxRowsPerSecond > 0) {
            throw ValidationError("--max-rows-per-second must be above 0, got \(maxRowsPerSecond)")
        }
        guard workers >= 1, workers <= 256 else { throw ValidationError("--workers must be in 1…256, got \(workers)") }
        guard chunkRows >= 1, chunkRows <= 10_000_000 else {
            throw ValidationError("--chunk-rows must be in 1…10000000, got \(chunkRows)")
        }
        guard leaseSeconds.isFinite, leaseSeconds >= 0.1, leaseSeconds <= 86_400 else {
            throw ValidationError("--lease-seconds must be a number of seconds in [0.1, 86400]")
        }
        if run != nil, join != nil { throw ValidationError("give --run or --join, not both") }
        for (option, value) in [("--run", run), ("--join", join), ("--worker-name", workerName)] {
            if let value, value.isEmpty || value.count > 200 || value.contains(where: \.isNewline) {
                throw ValidationError("\(option) must be 1…200 characters without line breaks")
            }
        }
        if !isRun, coordinator != nil { throw ValidationError("--coordinator needs --run, --join or --workers") }
        if let migration, migration.isEmpty { throw ValidationError("--migration must not be empty") }
        if migration == nil, state != nil { throw ValidationError("--state needs --migration") }
        do {
            _ = try SQLIdentifier(stateTable, role: "--state-table")
        } catch let error as ZDDMError {
            throw ValidationError(error.message)
        }
    }

    func run() async throws {
        try await Self.exitingTwoOnTrouble {
            // The metrics system first: the migration's core takes its metrics factory when it is created.
            try await metrics.run {
                try await stores.run(self, migration: "verify", createNew: false, steadyConnections: workers)
            }
        }
    }

    func run<Key: SQLKey & Codable>(_ pair: StorePair<Key>) async throws {
        guard let migration else {
            if isRun {
                let (_, _, runMismatches) = try await chunked(pair, fleetMark: nil)
                if (runMismatches ?? 0) > 0, !repair { throw ExitCode(1) }
            } else {
                try await verify(pair)
            }
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
            let (report, mark, runMismatches) =
                isRun
                ? try await chunked(pair, fleetMark: before.behind)
                : (try await verify(pair, exitOnMismatch: false), before.behind, nil)
            if report.isClean, let mark {
                let after = try await store.recordCleanVerify(migration, startedAt: mark)
                print("fleet: recorded a clean pass that began at behind \(mark) for migration '\(migration)'")
                print("fleet: " + FleetStateReport(migration: migration, state: after).line)
            } else if report.isClean {
                print("fleet: nothing recorded for migration '\(migration)': the run was planned without --migration")
            } else {
                let reason =
                    (runMismatches ?? 0) > 0 ? " (the run found \(runMismatches ?? 0) mismatches)" : notClean(report)
                print("fleet: nothing recorded for migration '\(migration)': the pass was not clean" + reason)
            }
            if (runMismatches ?? report.mismatches) > 0, !repair { throw ExitCode(1) }
        }
    }

    /// Why a pass without mismatches was not clean.
    private func notClean<Key>(_ report: VerifyReport<Key>) -> String {
        guard report.mismatches == 0 else { return "" }
        return (try? parseRate(stores.rate, option: "--rate")) == 1
            ? " (the migration's safety memory was not empty, or it was degraded)"
            : " (only a pass at --rate 1 counts)"
    }

    private var options: VerifyOptions {
        var options = VerifyOptions()
        options.repair = repair
        options.sampleLimit = sample
        options.batchSize = batch
        options.deep = deep
        options.maxRowsPerSecond = maxRowsPerSecond
        options.workers = workers
        options.chunkRows = chunkRows
        options.leaseDuration = .milliseconds(Int64((leaseSeconds * 1000).rounded()))
        options.workerName = workerName
        options.runScope = "table \(stores.table) → \(stores.toTable ?? stores.table)"
        return options
    }

    /// A name for a run of this process's workers only: the time and the process, so a later run never reuses it.
    private static func newRunName() -> String {
        let seconds = Int(Date().timeIntervalSince1970)
        return "zddm-verify-\(seconds)-\(ProcessInfo.processInfo.processIdentifier)"
    }

    /// Runs this process's workers of a run and prints this process's report and the run's status.
    /// - Returns: This process's report, the fleet mark the run recorded when it was planned, and the mismatches
    ///   the whole run found (`nil` when the run is not finished).
    private func chunked<Key: SQLKey & Codable>(
        _ pair: StorePair<Key>,
        fleetMark: UInt64?
    ) async throws -> (VerifyReport<Key>, UInt64?, Int?) {
        let runName = run ?? join ?? Self.newRunName()
        let url = try stores.coordinatorURL(coordinator, kind: "verify")
        return try await withCoordinator(url, prefix: "zddm_verify", steadyConnections: workers) {
            (coordinator: AnyBackfillCoordinator<Key>) in
            let verify = try ChunkedVerify(
                core: pair.core,
                coordinator: coordinator,
                run: runName,
                create: join == nil,
                options: options,
                fleetMark: fleetMark
            )
            let info = try await verify.prepare()
            print("run \(runName): \(info.chunks) chunks; \(workers) workers in this process")
            let report = try await runAsService { try await verify.verify() }
            print("verify: this process: \(report)")
            for mismatch in report.sample { print("  \(mismatch.kind.rawValue)\t\(mismatch.key)") }
            if report.mismatches > sample, sample > 0 { print("  … \(report.mismatches - sample) more") }
            let status = try await coordinator.status(runName)
            if let status { print(status.verifyLine) }
            guard let status, status.finished else {
                print("verify workers stopped, chunks released")
                throw ExitCode(130)
            }
            return (report, info.fleetMark, status.rowsCopied)
        }
    }

    /// Runs the pass and prints its report.
    /// - Parameter exitOnMismatch: Whether a mismatch without `--repair` ends the command with exit code 1.
    @discardableResult
    private func verify<Key: SQLKey & Codable>(
        _ pair: StorePair<Key>,
        exitOnMismatch: Bool = true
    ) async throws -> VerifyReport<Key> {
        let report = try await Verify(core: pair.core, options: options).verify()
        print("verify: \(report)")
        for mismatch in report.sample { print("  \(mismatch.kind.rawValue)\t\(mismatch.key)") }
        if report.mismatches > sample, sample > 0 { print("  … \(report.mismatches - sample) more") }
        if exitOnMismatch, report.mismatches > 0, !repair { throw ExitCode(1) }
        return report
    }
}

/// `zddm verify status RUN`.
struct VerifyStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a verify run's progress and findings across all its workers.",
        discussion: """
            Prints one line (or a JSON object with --json): keys compared of those planned, mismatches found, keys \
            per second since the run began, ETA, chunks done / in flight / waiting, workers seen. Exits 0 when the \
            run is finished without a mismatch, 1 when it is finished with mismatches, 2 on an error (there is no \
            such run, the coordinator cannot be read), 3 while it is not finished. Changes nothing.
            """
    )

    @Argument(help: "The run's name.")
    var run: String

    @Option(help: "The run's coordination database (postgres://… or sqlite:PATH).")
    var coordinator: String

    @Flag(help: "Print a JSON object instead of a line.")
    var json = false

    func run() async throws {
        try await Self.exitingTwoOnTrouble {
            let status = try await runStatus(run, coordinator: coordinator, prefix: "zddm_verify", kind: "verify")
            print(json ? try sortedJSON(VerifyStatusReport(status)) : status.verifyLine)
            if !status.finished { throw ExitCode(3) }
            if status.rowsCopied > 0 { throw ExitCode(1) }
        }
    }
}

/// `zddm verify status --json`.
struct VerifyStatusReport: Encodable {
    var run: String
    var rate: Double
    var finished: Bool
    var chunks: Int
    var chunksDone: Int
    var chunksInFlight: Int
    var chunksWaiting: Int
    var keysPlanned: Int
    var keysCompared: Int
    var mismatches: Int
    var keysPerSecond: Double
    var etaSeconds: Double?
    var workersSeen: Int
    var elapsedSeconds: Double

    init(_ status: BackfillRunStatus) {
        run = status.run
        rate = status.rate
        finished = status.finished
        chunks = status.chunks
        chunksDone = status.done
        chunksInFlight = status.inFlight
        chunksWaiting = status.waiting
        keysPlanned = status.plannedRows
        keysCompared = status.rowsScanned
        mismatches = status.rowsCopied
        keysPerSecond = status.rowsPerSecond
        etaSeconds = status.etaSeconds
        workersSeen = status.workersSeen
        elapsedSeconds = status.elapsedSeconds
    }
}

extension AsyncParsableCommand {
    /// Runs a command whose exit code 1 means "found a difference", as `diff` and `cmp` do: an error is printed as
    /// usual but ends the command with exit code 2, so a script can tell "the stores differ" from "the check could
    /// not be made". Exit codes the command chose, and errors in its arguments (64), are kept.
    static func exitingTwoOnTrouble(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let chosen as ExitCode {
            throw chosen
        } catch  where exitCode(for: error) == .failure {
            let message = fullMessage(for: error)
            if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
            throw ExitCode(2)
        }
    }
}
