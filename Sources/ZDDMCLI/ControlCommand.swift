package import ArgumentParser
import Foundation
import ZDDM
import ZDDMSQL

/// `zddm control`: read or change a migration's shared fleet state.
package struct ControlCommand: AsyncParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "control",
        abstract: "Show or change a migration's shared fleet state (stage, rate, killswitch).",
        discussion: """
            Every instance of a fleet follows one row per migration in a shared table (zddm_fleet by default, \
            usually in Old's database): stage, rate, the high-water rate (the largest rate used), the killswitch, \
            the barrier counters behind and caught up, and the latest clean verify pass. Turning the killswitch on \
            (or the stage to off) moves behind on: instances read New again only once the change applier has caught \
            up past it. Rampdown is permitted once a clean zddm verify pass (run with --migration) began after New \
            last fell behind.
            """,
        subcommands: [ControlShowCommand.self, ControlSetCommand.self]
    )

    package init() {}
}

/// The options both `control` subcommands take.
struct ControlOptions: ParsableArguments {
    @Option(
        help: "The shared state's database: sqlite:PATH or postgres://USER@HOST:PORT/DB (password from PGPASSWORD)."
    )
    var state: String

    @Option(help: "The shared state's table.")
    var table: String = "zddm_fleet"

    @Option(help: "The migration's name.")
    var migration: String

    @Flag(help: "Print a JSON object instead of a line.")
    var json = false

    func validate() throws {
        guard !migration.isEmpty else { throw ValidationError("--migration must not be empty") }
        do {
            _ = try SQLIdentifier(table, role: "--table")
        } catch let error as ZDDMError {
            throw ValidationError(error.message)
        }
    }

    /// Opens the shared state's store, runs `body` with it and closes the database.
    /// - Parameters:
    ///   - prepare: Whether to create the table when missing.
    ///   - body: What to do with the store.
    func withStore<T: Sendable>(
        prepare: Bool,
        _ body: (any FleetStateStore) async throws -> T
    ) async throws -> T {
        try await OpenedDatabase.withFleetStateStore(state, option: "--state", table: table, prepare: prepare, body)
    }

    /// Prints a state as a line or as JSON.
    func print(_ state: FleetState) throws {
        let report = FleetStateReport(migration: migration, state: state)
        Swift.print(json ? try report.json() : report.line)
    }
}

/// `zddm control show`.
struct ControlShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print a migration's shared fleet state.",
        discussion: """
            One line, or a JSON object with --json, including the latest clean verify pass and whether live → \
            rampdown is permitted now (and if not, what it needs). A migration never set reads as stage off, rate 0. \
            The table must exist (control set creates it). Changes nothing.
            """
    )

    @OptionGroup var options: ControlOptions

    func run() async throws {
        let state = try await options.withStore(prepare: false) { store in
            try await store.state(of: options.migration)
        }
        try options.print(state)
    }
}

/// `zddm control set`.
struct ControlSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Change a migration's shared fleet state, then print it.",
        discussion: """
            Creates the table when missing. Only the options given change; the high-water rate never goes down. \
            The change is checked in the same transaction that makes it: complete only from rampdown; rampdown \
            only from live, at rate 1, with the killswitch off, the change applier caught up, and a clean verify \
            pass recorded (zddm verify --migration) that began after New last fell behind; rate 1 throughout \
            rampdown and complete; nothing out of complete. A refused change changes nothing and says what is \
            missing.
            """
    )

    enum Switch: String, ExpressibleByArgument, CaseIterable {
        case on
        case off
    }

    @OptionGroup var options: ControlOptions

    @Option(help: "The stage: \(MigrationStage.allCases.map(\.rawValue).joined(separator: ", ")).")
    var stage: String?

    @Option(help: "The gate's rate, a number in [0, 1].")
    var rate: String?

    @Option(help: "The killswitch: on or off.")
    var killswitch: Switch?

    func validate() throws {
        _ = try change()
    }

    /// The change the options ask for.
    func change() throws -> FleetControlChange {
        var change = FleetControlChange()
        if let stage {
            guard let parsed = MigrationStage(rawValue: stage.trimmingCharacters(in: .whitespaces).lowercased()) else {
                let stages = MigrationStage.allCases.map(\.rawValue).joined(separator: ", ")
                throw ValidationError("--stage must be one of \(stages), got '\(stage)'")
            }
            change.stage = parsed
        }
        if let rate { change.rate = try parseRate(rate, option: "--rate") }
        change.killswitch = killswitch.map { $0 == .on }
        guard change.stage != nil || change.rate != nil || change.killswitch != nil else {
            throw ValidationError("give at least one of --stage, --rate, --killswitch")
        }
        return change
    }

    func run() async throws {
        let change = try change()
        let state = try await options.withStore(prepare: true) { store in
            try await store.update(options.migration, change)
        }
        try options.print(state)
    }
}
