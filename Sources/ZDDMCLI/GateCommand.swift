package import ArgumentParser
import Foundation
import ZDDM

/// `zddm gate`: which keys a rate admits, for operators.
package struct GateCommand: ParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "gate",
        abstract: "Print each key's hash rate and whether the gate admits it at a rate.",
        discussion: """
            One line a key: KEY<TAB>HASH_RATE<TAB>in|out, the hash rate with 17 significant digits. \
            Keys are hashed as their UTF-8 bytes, so an integer key given in decimal hashes as the integer does.
            """
    )

    enum HasherName: String, ExpressibleByArgument, CaseIterable {
        case sha1
        case fast
    }

    @Option(help: "The gate's rate, a number in [0, 1].")
    var rate: String

    @Option(help: "The hasher: sha1 (the original ZDDM's, default) or fast (FNV-1a 64 + fmix64).")
    var hasher: HasherName = .sha1

    @Option(help: "A salt (for example the migration's name); none by default.")
    var salt: String?

    @Flag(help: "Read keys from standard input, one a line.")
    var stdin = false

    @Argument(help: "The keys.")
    var keys: [String] = []

    package init() {}

    package func validate() throws {
        _ = try parseRate(rate, option: "--rate")
        if !stdin, keys.isEmpty { throw ValidationError("give at least one KEY, or --stdin") }
        if stdin, !keys.isEmpty { throw ValidationError("give keys as arguments or with --stdin, not both") }
    }

    package func run() throws {
        let gateHasher: any GateHasher =
            switch hasher {
            case .sha1: SHA1RateHasher(salt: salt)
            case .fast: FastRateHasher(salt: salt)
            }
        let gate = try TrafficGate(rate: parseRate(rate, option: "--rate"), hasher: gateHasher)
        func emit(_ key: String) {
            let hashRate = gateHasher.hashRate(of: key)
            let verdict = gate.admits(key) ? "in" : "out"
            print("\(key)\t\(String(format: "%.17g", hashRate))\t\(verdict)")
        }
        if stdin {
            while let line = readLine(strippingNewline: true) { emit(line) }
        } else {
            keys.forEach(emit)
        }
    }
}

/// Parses a rate given on the command line, with an error that names the option and the value.
func parseRate(_ text: String, option: String) throws -> Double {
    guard let rate = Double(text.trimmingCharacters(in: .whitespaces)) else {
        throw ValidationError("\(option) must be a number in [0, 1], got '\(text)'")
    }
    do {
        try TrafficGate.validate(rate)
    } catch {
        throw ValidationError("\(option) must be a number in [0, 1], got \(text)")
    }
    return rate
}
