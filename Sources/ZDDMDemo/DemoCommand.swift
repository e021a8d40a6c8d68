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
            Creates an Old store with --rows rows, change capture and versions, and an empty New store (SQLite \
            files in --out by default, or --old/--new URLs), starts --instances instance processes sharing the \
            migration's state in Old's database, and a writer that updates Old with plain SQL past the proxy; \
            ramps the rate 0 → 1% → 10% → 50% → 100% while clients read, write and delete, takes New down in \
            the middle (an operator turns the killswitch on), backfills the cold keys, waits for the change \
            applier to catch up and verifies. Checks every call for stale reads. Writes report.json and chart.svg \
            to --out. Exits 0 only when no request failed, no read was stale and verify found no mismatch.
            """
    )

    @Option(help: "Rows in Old.")
    var rows: Int = 100_000

    @Option(help: "Simulated client tasks, shared by the instance processes.")
    var clients: Int = 9

    @Option(help: "Instance processes (each a `zddm worker --fleet`), besides the bypass writer.")
    var instances: Int = 3

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
        guard instances >= 1, instances <= 16 else {
            throw ValidationError("--instances must be in 1…16, got \(instances)")
        }
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
        let location = FleetStores.Location(
            old: old ?? "sqlite:" + folder.appendingPathComponent("old.sqlite").path,
            new: new ?? "sqlite:" + folder.appendingPathComponent("new.sqlite").path,
            table: "zddm_demo_old",
            newTable: "zddm_demo_new",
            fleetTable: "zddm_demo_fleet"
        )
        try await FleetStores.reset(location)
        let stores = try await FleetStores.open(location, prepare: true)
        display.log(
            "ZDDM demo: \(rows) rows, \(clients) clients in \(instances) instance processes and a bypass writer, "
                + "Old \(stores.oldDescription), New \(stores.newDescription)"
        )
        let settings = DemoSettings(
            rows: rows,
            clients: clients,
            instances: instances,
            phaseSeconds: phaseSeconds,
            seed: seed,
            location: location,
            folder: folder,
            oldDescription: stores.oldDescription,
            newDescription: stores.newDescription
        )
        let report: DemoReport
        do {
            report = try await DemoRunner(stores: stores, settings: settings, display: display).run()
        } catch {
            await stores.close()
            throw error
        }
        await stores.close()
        let reportURL = folder.appendingPathComponent("report.json")
        let chartURL = folder.appendingPathComponent("chart.svg")
        try report.writeJSON(to: reportURL)
        try Data(report.svgChart().utf8).write(to: chartURL, options: .atomic)
        print(report.summary())
        print("  report: \(reportURL.path)\n  chart:  \(chartURL.path)")
        if !report.succeeded { throw ExitCode(1) }
    }
}
