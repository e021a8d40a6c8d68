import ArgumentParser
import Foundation
import ZDDM
import ZDDMSQL

/// `zddm verify`: compare two tables key by key; exit 0 iff they agree.
struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Compare Old and New key by key; exit 0 only when no mismatch is found.",
        discussion: "Values are compared as stored bytes. --repair fixes New from Old (never writing older data)."
    )

    @OptionGroup var stores: StorePairOptions

    @Option(help: "The most mismatched keys to list.")
    var sample: Int = 20

    @Flag(help: "Repair mismatches from Old.")
    var repair = false

    func validate() throws {
        guard sample >= 0 else { throw ValidationError("--sample must be at least 0, got \(sample)") }
    }

    func run() async throws {
        switch stores.keyType {
        case .integer: try await compare(Int64.self)
        case .text: try await compare(String.self)
        case .bytes: try await compare(KeyBytes.self)
        }
    }

    private func compare<Key: SQLKey & Codable>(_: Key.Type) async throws {
        let old: OpenedStore<Key, [UInt8]> = try await StoreOpener.open(
            stores.from,
            table: stores.table,
            codec: RawBytesValueCodec(),
            create: false
        )
        let new: OpenedStore<Key, [UInt8]> = try await StoreOpener.open(
            stores.to,
            table: stores.toTable ?? stores.table,
            codec: RawBytesValueCodec(),
            create: false
        )
        let proxy = try MigrationProxy(
            name: "verify",
            old: old.store,
            new: new.store,
            gate: TrafficGate(rate: stores.gateRate())
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
