package import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMSQLite

/// `zddm backfill`: copy cold keys from one table to another, resumably, by one process or by workers anywhere.
package struct BackfillCommand: AsyncParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "backfill",
        abstract: "Copy keys the gate admits from Old to New, resumably; alone or with workers on many machines.",
        subcommands: [BackfillCopyCommand.self, BackfillStatusCommand.self],
        defaultSubcommand: BackfillCopyCommand.self
    )

    package init() {}
}

/// `zddm backfill [copy]`.
struct BackfillCopyCommand: AsyncParsableCommand, StorePairAction {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy keys the gate admits from Old to New (the default subcommand).",
        discussion: """
            Values are copied as raw bytes, so any key-value table of this library works. With change capture on \
            Old (see zddm capture), rows are copied with their versions through New's fence, deletions as \
            tombstones; without it, with insert-if-absent. Ctrl-C stops after the batches in hand and saves the \
            checkpoint; run the same command again to resume.

            A run (--run NAME, or --workers above 1) is split into chunks in coordination tables (see \
            --coordinator; PostgreSQL for workers on several machines, an SQLite file for one): start it on one \
            machine, add workers on others with --join NAME, watch it with zddm backfill status NAME. Only rows that exist when the run is planned \
            are copied. A worker that dies loses at most its batch in hand; its chunks are taken over when their \
            lease expires. --max-rows-per-second is shared by every worker of a run.
            """
    )

    @OptionGroup var stores: StorePairOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: "Keys per batch (memory grows with it: about 3 × batch × row size; lower it for large rows).")
    var batch: Int = 5_000

    @Option(help: "The most rows per second (for a run: across all its workers); no limit by default.")
    var maxRowsPerSecond: Double?

    @Option(help: "Folder for a checkpoint file; by default the checkpoint is kept in New's database.")
    var checkpoint: String?

    @Option(help: "The checkpoint's name (without --run or --join).")
    var name: String = "zddm-backfill"

    @Option(help: "Start (or continue) a run of this name, split into chunks that workers anywhere can share.")
    var run: String?

    @Option(help: "Join the run of this name, which must exist, with this process's workers.")
    var join: String?

    @Option(help: "Workers in this process (a run is created under --name when neither --run nor --join is given).")
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

    @Option(help: "Seconds a worker holds a chunk without a checkpoint before others may take it over.")
    var leaseSeconds: Double = 30

    @Option(help: "This process's workers' name (each gets -1, -2, …); by default host:pid.")
    var workerName: String?

    @Option(
        help: """
            Pause while New's PostgreSQL replicas replay more than this many seconds behind it \
            (pg_stat_replication's replay_lag); no bound by default.
            """
    )
    var maxReplicationLag: Double?

    @Option(help: "Pause after a batch whose copy into New took longer than this many seconds; no bound by default.")
    var maxCommitLatency: Double?

    init() {}

    func validate() throws {
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
        for (option, value) in [
            ("--max-replication-lag", maxReplicationLag), ("--max-commit-latency", maxCommitLatency),
        ] {
            if let value, !(value.isFinite && value > 0 && value <= 86_400) {
                throw ValidationError("\(option) must be a number of seconds in (0, 86400]")
            }
        }
        if maxReplicationLag != nil, !(stores.to.hasPrefix("postgres://") || stores.to.hasPrefix("postgresql://")) {
            throw ValidationError("--max-replication-lag needs New (--to) in PostgreSQL")
        }
        for (option, value) in [("--run", run), ("--join", join), ("--worker-name", workerName)] {
            if let value, value.isEmpty || value.count > 200 || value.contains(where: \.isNewline) {
                throw ValidationError("\(option) must be 1…200 characters without line breaks")
            }
        }
        if isRun, checkpoint != nil {
            throw ValidationError("--checkpoint is for a single-process backfill, not a run")
        }
        if !isRun, coordinator != nil { throw ValidationError("--coordinator needs --run, --join or --workers") }
    }

    /// Whether this is a chunked run rather than a single-process pass with one checkpoint.
    private var isRun: Bool { run != nil || join != nil || workers > 1 }

    func run() async throws {
        // The metrics system first: the migration's core takes its metrics factory when it is created.
        // Each worker keeps one connection of each pool busy.
        try await metrics.run {
            try await stores.run(self, migration: run ?? join ?? name, createNew: true, steadyConnections: workers)
        }
    }

    func run<Key: SQLKey & Codable>(_ pair: StorePair<Key>) async throws {
        var options = BackfillOptions()
        options.batchSize = batch
        options.maxRowsPerSecond = maxRowsPerSecond
        options.maxNewLatency = maxCommitLatency.map { .milliseconds(Int64(($0 * 1000).rounded())) }
        guard let maxReplicationLag else {
            try await copy(pair, options)
            return
        }
        // Back-pressure: New's replicas' replay lag, read on a connection of its own before every batch.
        let database = try await PostgresDatabase.connect(url: PostgresURL(stores.to))
        let bound = Duration.milliseconds(Int64((maxReplicationLag * 1000).rounded()))
        options.backPressure = { (try await database.replicationLag() ?? .zero) > bound }
        do {
            try await copy(pair, options)
        } catch {
            await database.shutdown()
            throw error
        }
        await database.shutdown()
    }

    private func copy<Key: SQLKey & Codable>(_ pair: StorePair<Key>, _ options: BackfillOptions) async throws {
        if isRun {
            try await chunked(pair, options)
        } else {
            try await single(pair, options)
        }
    }

    /// One process, one checkpoint.
    private func single<Key: SQLKey & Codable>(_ pair: StorePair<Key>, _ options: BackfillOptions) async throws {
        let (new, core) = (pair.new, pair.core)
        let checkpoints: AnyCheckpointStore<Key>
        if let checkpoint {
            checkpoints = AnyCheckpointStore(FileCheckpointStore<Key>(directory: URL(fileURLWithPath: checkpoint)))
        } else {
            try await new.prepareCheckpoints()
            checkpoints = new.checkpoints
        }
        let display = LiveDisplay()
        let backfill = try Backfill(core: core, checkpoints: checkpoints, name: name, options: options) { progress in
            display.update(Self.line(progress), progress: nil)
        }
        let progress = try await runAsService { try await backfill.runPass() }
        display.finishLine()
        print(progress.finished ? "backfill finished: \(progress)" : "backfill stopped, checkpoint saved: \(progress)")
        if !progress.finished { throw ExitCode(130) }
    }

    /// A run shared through the coordination tables.
    private func chunked<Key: SQLKey & Codable>(_ pair: StorePair<Key>, _ options: BackfillOptions) async throws {
        var options = options
        options.workers = workers
        options.chunkRows = chunkRows
        options.leaseDuration = .milliseconds(Int64((leaseSeconds * 1000).rounded()))
        options.workerName = workerName
        options.runScope = "table \(stores.table) → \(stores.toTable ?? stores.table)"
        let runName = run ?? join ?? name
        let url = try stores.coordinatorURL(coordinator, kind: "backfill")
        try await withCoordinator(url, steadyConnections: workers) { (coordinator: AnyBackfillCoordinator<Key>) in
            let display = LiveDisplay()
            let backfill = try ChunkedBackfill(
                core: pair.core,
                coordinator: coordinator,
                run: runName,
                create: join == nil,
                options: options
            ) { progress in
                display.update("this process: " + Self.line(progress), progress: nil)
            }
            let info = try await backfill.prepare()
            print("run \(runName): \(info.chunks) chunks; \(workers) workers in this process")
            let progress = try await runAsService { try await backfill.runPass() }
            display.finishLine()
            if let status = try await coordinator.status(runName) { print(status.line) }
            print(
                progress.finished
                    ? "backfill run finished; this process: \(progress)"
                    : "backfill workers stopped, chunks released; this process: \(progress)"
            )
            if !progress.finished { throw ExitCode(130) }
        }
    }

    private static func line(_ progress: BackfillProgress) -> String {
        var text = "\(progress.rowsScanned) rows scanned, \(progress.rowsCopied) copied"
        if progress.deletionsCopied > 0 { text += ", \(progress.deletionsCopied) deletions copied" }
        return text + String(format: ", %.0f rows/s", progress.rowsPerSecond)
    }
}

/// Opens the coordination tables in a PostgreSQL or SQLite database (creating them when missing), runs `body`,
/// and closes the database.
func withCoordinator<Key: Codable & Sendable, T: Sendable>(
    _ url: String,
    option: String = "--coordinator",
    prefix: String = "zddm_backfill",
    steadyConnections: Int = 1,
    _ body: (AnyBackfillCoordinator<Key>) async throws -> T
) async throws -> T {
    let database = try await OpenedDatabase.open(url, option: option, steadyConnections: steadyConnections)
    do {
        let coordinator: AnyBackfillCoordinator<Key>
        switch database {
        case .postgres(let postgres, _):
            let tables = try PostgresBackfillCoordinator<Key>(database: postgres, prefix: prefix)
            try await tables.prepare()
            coordinator = AnyBackfillCoordinator(tables)
        case .sqlite(let sqlite):
            let tables = try SQLiteBackfillCoordinator<Key>(database: sqlite, prefix: prefix)
            try await tables.prepare()
            coordinator = AnyBackfillCoordinator(tables)
        }
        let result = try await body(coordinator)
        await database.close()
        return result
    } catch {
        await database.close()
        throw error
    }
}

/// `zddm backfill status RUN`.
struct BackfillStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a backfill run's progress across all its workers.",
        discussion: """
            Prints one line (or a JSON object with --json): rows scanned of those planned, rows copied, rows per \
            second since the run began, ETA, chunks done / in flight / waiting, workers seen. Exits 0 when the \
            run is finished, 3 while it is not, 1 when there is no such run. Changes nothing.
            """
    )

    @Argument(help: "The run's name.")
    var run: String

    @Option(help: "The run's coordination database (postgres://… or sqlite:PATH).")
    var coordinator: String

    @Flag(help: "Print a JSON object instead of a line.")
    var json = false

    func run() async throws {
        let status = try await runStatus(run, coordinator: coordinator, prefix: "zddm_backfill", kind: "backfill")
        print(json ? try sortedJSON(BackfillStatusReport(status)) : status.line)
        if !status.finished { throw ExitCode(3) }
    }
}

/// `zddm backfill status --json`.
struct BackfillStatusReport: Encodable {
    var run: String
    var rate: Double
    var finished: Bool
    var chunks: Int
    var chunksDone: Int
    var chunksInFlight: Int
    var chunksWaiting: Int
    var rowsPlanned: Int
    var rowsScanned: Int
    var rowsCopied: Int
    var rowsPerSecond: Double
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
        rowsPlanned = status.plannedRows
        rowsScanned = status.rowsScanned
        rowsCopied = status.rowsCopied
        rowsPerSecond = status.rowsPerSecond
        etaSeconds = status.etaSeconds
        workersSeen = status.workersSeen
        elapsedSeconds = status.elapsedSeconds
    }
}

/// A run's status from its coordination tables (`zddm backfill status`, `zddm verify status`).
func runStatus(_ run: String, coordinator url: String, prefix: String, kind: String) async throws -> BackfillRunStatus {
    let status = try await withCoordinator(url, prefix: prefix) { (coordinator: AnyBackfillCoordinator<String>) in
        try await coordinator.status(run)
    }
    guard let status else {
        throw ZDDMError(.invalidArgument, message: "there is no \(kind) run named '\(run)' in --coordinator")
    }
    return status
}

/// A value as JSON with sorted keys, for `--json`.
func sortedJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

extension StorePairOptions {
    /// A run's coordination database: `explicit` (`--coordinator`), else New's database when it is PostgreSQL,
    /// else Old's, else New's SQLite file (one machine).
    func coordinatorURL(_ explicit: String?, kind: String) throws -> String {
        if let explicit { return explicit }
        for url in [to, from] where url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            return url
        }
        if to.hasPrefix("sqlite:"), (try? SQLiteURL(to))?.filePath != nil { return to }
        throw ZDDMError(
            .invalidArgument,
            message: "a \(kind) run needs a coordination database every worker reaches: pass --coordinator "
                + "postgres://… (or sqlite:PATH for one machine)"
        )
    }
}
