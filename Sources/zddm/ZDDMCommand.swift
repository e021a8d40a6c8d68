import ArgumentParser
import ZDDMCLI
import ZDDMDemo

/// `zddm`: the operator commands (from `ZDDMCLI`, which depends on no testing module) and the demo with its
/// hidden multi-process worker (from `ZDDMDemo`, built on `ZDDMTesting`).
@main
struct ZDDMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zddm",
        abstract:
            "Zero-downtime data migration: demo, backfill, verify, the change applier, gate, change capture and fleet control.",
        subcommands: [
            DemoCommand.self, BackfillCommand.self, VerifyCommand.self, ApplyCommand.self, GateCommand.self,
            CaptureCommand.self,
            ControlCommand.self, WorkerCommand.self,
        ],
        defaultSubcommand: nil
    )
}
