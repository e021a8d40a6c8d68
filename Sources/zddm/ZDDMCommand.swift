import ArgumentParser

@main
struct ZDDMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zddm",
        abstract: "Zero-downtime data migration: demo, backfill, verify, and gate checks.",
        subcommands: [
            DemoCommand.self, BackfillCommand.self, VerifyCommand.self, GateCommand.self, WorkerCommand.self,
        ],
        defaultSubcommand: nil
    )
}
