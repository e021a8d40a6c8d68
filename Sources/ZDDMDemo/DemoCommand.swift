package import ArgumentParser
import Foundation
import ZDDM
import ZDDMCLI
import ZDDMSQL

/// `zddm demo`: the main job, a whole live migration on an embedded default.
package struct DemoCommand: AsyncParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a whole live migration while simulated clients use the stores, then report.",
        discussion: """
            Creates an Old store with --rows rows and an empty New store (SQLite files in --out by default, or \
            --old/--new URLs), ramps the gate 0 → 1% → 10% → 50% → 100% while clients read, write and delete, \
            takes New down in the middle (an operator turns the killswitch on), backfills the cold keys and \
            verifies. Writes report.json and chart.svg to --out. Exits 0 only when no request failed and verify \
            found no mismatch.
            """
    )

    @Option(help: "Rows in Old.")
    var rows: Int = 100_000

    @Option(help: "Simulated client tasks.")
    var clients: Int = 8

    @Option(help: "Seconds per phase.")
    var phaseSeconds: Double = 3

    @Option(help: "Random seed for the clients.")
    var seed: UInt64 = 42

    @Option(help: "Folder for the report, the chart and the default SQLite files.")
    var out: String = "zddm-demo"

    @Option(help: "Old store URL (sqlite:PATH or postgres://…); an SQLite file in --out by default.")
    var old: String?

    @Option(help: "New store URL (sqlite:PATH or postgres://…); an SQLite file in --out by default.")
    var new: String?

    package init() {}

    package func validate() throws {
        guard rows >= 1, rows <= 50_000_000 else { throw ValidationError("--rows must be in 1…50000000, got \(rows)") }
        guard clients >= 1, clients <= 256 else { throw ValidationError("--clients must be in 1…256, got \(clients)") }
        guard phaseSeconds > 0, phaseSeconds <= 600 else {
            throw ValidationError("--phase-seconds must be in (0, 600], got \(phaseSeconds)")
        }
    }

    package func run() async throws {
        let folder = URL(fileURLWithPath: out, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw ValidationError("cannot create the output folder \(out): \(error.localizedDescription)")
        }
        let display = LiveDisplay()
        let oldURL = old ?? "sqlite:" + folder.appendingPathComponent("old.sqlite").path
        let newURL = new ?? "sqlite:" + folder.appendingPathComponent("new.sqlite").path
        let codec = JSONValueCodec<Account>()
        let oldStore: OpenedStore<Int64, Account> = try await StoreOpener.open(
            oldURL,
            table: "zddm_demo_old",
            codec: codec,
            create: true,
            fresh: true
        )
        let newStore: OpenedStore<Int64, Account> = try await StoreOpener.open(
            newURL,
            table: "zddm_demo_new",
            codec: codec,
            create: true,
            fresh: true
        )
        try await newStore.prepareCheckpoints()
        display.log(
            "ZDDM demo: \(rows) rows, \(clients) clients, Old \(oldStore.description), New \(newStore.description)"
        )
        let settings = DemoSettings(
            rows: rows,
            clients: clients,
            phaseSeconds: phaseSeconds,
            seed: seed,
            oldDescription: oldStore.description,
            newDescription: newStore.description
        )
        let report = try await DemoRunner(
            old: oldStore.store,
            new: newStore.store,
            checkpoints: newStore.checkpoints,
            settings: settings,
            display: display
        ).run()
        await oldStore.close()
        await newStore.close()
        let reportURL = folder.appendingPathComponent("report.json")
        let chartURL = folder.appendingPathComponent("chart.svg")
        try report.writeJSON(to: reportURL)
        try Data(report.svgChart().utf8).write(to: chartURL, options: .atomic)
        print(report.summary())
        print("  report: \(reportURL.path)\n  chart:  \(chartURL.path)")
        if !report.succeeded { throw ExitCode(1) }
    }
}
