import ArgumentParser
import Foundation
import ZDDM

/// `zddm verify`: compare two tables key by key; exit 0 iff they agree.
struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Compare Old and New key by key; exit 0 only when no mismatch is found.",
        discussion: "Values are compared as stored bytes. --repair fixes New from Old (never writing older data)."
    )

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

    @Option(help: "The gate's rate: keys it does not admit may be missing from New.")
    var rate: String = "1"

    @Option(help: "The most mismatched keys to list.")
    var sample: Int = 20

    @Flag(help: "Repair mismatches from Old.")
    var repair = false

    func validate() throws {
        _ = try parseRate(rate, option: "--rate")
        guard sample >= 0 else { throw ValidationError("--sample must be at least 0, got \(sample)") }
    }

    func run() async throws {
        switch keyType {
        case .integer: try await compare(Int64.self)
        case .text: try await compare(String.self)
        case .bytes: try await compare(KeyBytes.self)
        }
    }

    private func compare<Key: SQLKey & Codable>(_: Key.Type) async throws {
        let old: OpenedStore<Key, [UInt8]> = try await StoreOpener.open(
            from,
            table: table,
            codec: RawBytesValueCodec(),
            create: false
        )
        let new: OpenedStore<Key, [UInt8]> = try await StoreOpener.open(
            to,
            table: toTable ?? table,
            codec: RawBytesValueCodec(),
            create: false
        )
        let proxy = try MigrationProxy(
            name: "verify",
            old: old.store,
            new: new.store,
            gate: TrafficGate(rate: parseRate(rate, option: "--rate"))
        )
        var options = VerifyOptions()
        options.repair = repair
        options.sampleLimit = sample
        let report = try await Verify(proxy: proxy, options: options).verify()
        await old.close()
        await new.close()
        print("verify: \(report)")
        for mismatch in report.sample { print("  \(mismatch.kind.rawValue)\t\(mismatch.key)") }
        if report.mismatches > sample, sample > 0 { print("  … \(report.mismatches - sample) more") }
        if report.mismatches > 0, !repair { throw ExitCode(1) }
    }
}
