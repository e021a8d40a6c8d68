package import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import ZDDM
import ZDDMSQL

/// `zddm backfill`: copy cold keys from one table to another, resumable.
package struct BackfillCommand: AsyncParsableCommand, StorePairAction {
    package static let configuration = CommandConfiguration(
        commandName: "backfill",
        abstract: "Copy keys the gate admits from Old to New with insert-if-absent, resumably.",
        discussion: """
            Values are copied as raw bytes, so any key-value table of this library works. Ctrl-C stops after the \
            batches in hand and saves the checkpoint; run the same command again to resume.
            """
    )

    @OptionGroup var stores: StorePairOptions

    @Option(help: "Keys per batch.")
    var batch: Int = 1_000

    @Option(help: "The most rows per second; no limit by default.")
    var maxRowsPerSecond: Double?

    @Option(help: "Folder for a checkpoint file; by default the checkpoint is kept in New's database.")
    var checkpoint: String?

    @Option(help: "The checkpoint's name.")
    var name: String = "zddm-backfill"

    package init() {}

    package func validate() throws {
        guard batch >= 1, batch <= 100_000 else { throw ValidationError("--batch must be in 1…100000, got \(batch)") }
        if let maxRowsPerSecond, !(maxRowsPerSecond > 0) {
            throw ValidationError("--max-rows-per-second must be above 0, got \(maxRowsPerSecond)")
        }
    }

    package func run() async throws {
        try await stores.run(self, migration: name, createNew: true)
    }

    func run<Key: SQLKey & Codable>(_ pair: StorePair<Key>) async throws {
        let (new, core) = (pair.new, pair.core)
        let checkpoints: AnyCheckpointStore<Key>
        if let checkpoint {
            checkpoints = AnyCheckpointStore(FileCheckpointStore<Key>(directory: URL(fileURLWithPath: checkpoint)))
        } else {
            try await new.prepareCheckpoints()
            checkpoints = new.checkpoints
        }
        var options = BackfillOptions()
        options.batchSize = batch
        options.maxRowsPerSecond = maxRowsPerSecond
        let display = LiveDisplay()
        let backfill = try Backfill(core: core, checkpoints: checkpoints, name: name, options: options) { progress in
            var text = "\(progress.rowsScanned) rows scanned, \(progress.rowsCopied) copied"
            if progress.deletionsCopied > 0 { text += ", \(progress.deletionsCopied) deletions copied" }
            text += String(format: ", %.0f rows/s", progress.rowsPerSecond)
            display.update(text, progress: nil)
        }
        var logger = Logger(label: "zddm")
        logger.logLevel = .warning
        let result = ResultBox()
        let service = BackfillRunner(pass: { try await backfill.runPass() }, result: result)
        // Ctrl-C (SIGINT) or SIGTERM: finish the batches in hand, save the checkpoint, return.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigint, .sigterm],
                logger: logger
            )
        )
        try await group.run()
        display.finishLine()
        guard let progress = result.progress else { throw ExitCode(1) }
        print(progress.finished ? "backfill finished: \(progress)" : "backfill stopped, checkpoint saved: \(progress)")
        if !progress.finished { throw ExitCode(130) }
    }
}
