import ArgumentParser

/// The options `backfill` and `verify` share: which two tables, and the gate.
struct StorePairOptions: ParsableArguments {
    @Option(help: "Old's URL (sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB).")
    var from: String

    @Option(help: "New's URL.")
    var to: String

    @Option(help: "The table, in both databases.")
    var table: String = "zddm_kv"

    @Option(help: "New's table, when its name differs.")
    var toTable: String?

    @Option(help: "The key column's type: integer, text or bytes.")
    var keyType: KeyType = .integer

    @Option(help: "The gate's rate: only keys it admits are copied, or expected in New.")
    var rate: String = "1"

    func validate() throws {
        _ = try parseRate(rate, option: "--rate")
    }

    /// The gate's rate, validated.
    func gateRate() throws -> Double {
        try parseRate(rate, option: "--rate")
    }
}
