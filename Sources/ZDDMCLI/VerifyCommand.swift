package import ArgumentParser
import Foundation
import ZDDM
import ZDDMSQL

/// `zddm verify`: compare two tables key by key; exit 0 iff they agree.
package struct VerifyCommand: AsyncParsableCommand, StorePairAction {
    package static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Compare Old and New key by key; exit 0 only when no mismatch is found.",
        discussion: "Values are compared as stored bytes. --repair fixes New from Old (never writing older data)."
    )

    @OptionGroup var stores: StorePairOptions

    @Option(help: "The most mismatched keys to list.")
    var sample: Int = 20

    @Flag(help: "Repair mismatches from Old.")
    var repair = false

    package init() {}

    package func validate() throws {
        guard sample >= 0 else { throw ValidationError("--sample must be at least 0, got \(sample)") }
    }

    package func run() async throws {
        try await stores.run(self, migration: "verify", createNew: false)
    }

    func run<Key: SQLKey & Codable>(_ pair: StorePair<Key>) async throws {
        var options = VerifyOptions()
        options.repair = repair
        options.sampleLimit = sample
        let report = try await Verify(core: pair.core, options: options).verify()
        print("verify: \(report)")
        for mismatch in report.sample { print("  \(mismatch.kind.rawValue)\t\(mismatch.key)") }
        if report.mismatches > sample, sample > 0 { print("  … \(report.mismatches - sample) more") }
        if report.mismatches > 0, !repair { throw ExitCode(1) }
    }
}
