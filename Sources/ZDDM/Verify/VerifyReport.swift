/// How New differs from Old for one key.
public enum MismatchKind: String, Sendable, CaseIterable, Codable, CodingKeyRepresentable {
    /// Old has a value, the gate admits the key, New has nothing.
    case missingInNew = "missing_in_new"
    /// New has a value, Old has nothing.
    case extraInNew = "extra_in_new"
    /// Both have a value and they differ.
    case differentValue = "different_value"
    /// Old has a value, New has a tombstone.
    case tombstoneInNew = "tombstone_in_new"
}

/// One mismatched key, for the report's sample.
public struct VerifyMismatch<Key: Sendable>: Sendable {
    /// The key.
    public var key: Key
    /// How it differs.
    public var kind: MismatchKind
}

/// What a verify pass found.
public struct VerifyReport<Key: Sendable>: Sendable, CustomStringConvertible {
    /// Keys with a value in Old that were compared.
    public var keysInOld = 0
    /// Keys with a value in New that were compared.
    public var keysInNew = 0
    /// Keys found in both stores whose versions were compared, without reading their values (a pass by versions).
    public var comparedByVersion = 0
    /// Keys whose values were read and compared: every key Old holds a value for in a pass without versions or
    /// with ``VerifyOptions/deep``; in a pass by versions, only the keys whose versions differ or that one side
    /// lacks.
    public var comparedByValue = 0
    /// Mismatches by kind (each key counted once, after a re-check that rules out writes in flight).
    public var counts: [MismatchKind: Int] = [:]
    /// Keys the pass made agree with Old (invalidated in New, and copied from Old where Old has a value).
    public var repaired = 0
    /// Up to the sample limit of mismatched keys, in the order found.
    public var sample: [VerifyMismatch<Key>] = []
    /// Mismatches found but left for later: New traffic was off (killswitch, stage `off`, breaker open), or an
    /// operation on the key was in flight.
    public var notRepaired = 0
    /// Mismatches whose repair failed because New failed; the pass went on.
    public var repairFailed = 0
    /// The proxy's safety-memory mark when the pass started, for ``MigrationProxy/resetAfterVerify(_:)``.
    public internal(set) var safetyMark: UInt64 = 0
    /// Whether the pass was clean: complete (not cancelled), at rate 1, no mismatch found, no key in the
    /// migration's safety memory and the migration not degraded. Only a clean pass permits `rampdown`.
    public internal(set) var isClean = false
    /// With a ``FleetMember``: the value of ``FleetState/behind`` before the pass began, as recorded in the shared
    /// state for this clean pass (``FleetState/verifiedBehind``); `nil` when the pass recorded nothing there (no
    /// fleet, not clean, or the shared state failed).
    public internal(set) var fleetVerifiedBehind: UInt64?

    /// All mismatches.
    public var mismatches: Int { counts.values.reduce(0, +) }

    /// Mismatches where New holds something Old does not (a stale value, an extra key, a wrong tombstone): the
    /// ones that would serve wrong data. Missing keys are only incomplete.
    public var staleMismatches: Int { mismatches - (counts[.missingInNew] ?? 0) }

    public var description: String {
        let kinds = MismatchKind.allCases.map { "\($0.rawValue) \(counts[$0] ?? 0)" }.joined(separator: ", ")
        return
            "\(keysInOld) keys in Old, \(keysInNew) in New, \(mismatches) mismatches (\(kinds)), \(repaired) repaired"
            + "; \(comparedByVersion) compared by version, \(comparedByValue) by value"
            + (notRepaired > 0 ? ", \(notRepaired) not repaired" : "")
            + (repairFailed > 0 ? ", \(repairFailed) repairs failed" : "")
    }
}

extension VerifyReport {
    /// Adds another part's findings (a chunk of a chunked run), keeping up to `sampleLimit` mismatches in the
    /// sample.
    mutating func add(_ part: VerifyReport<Key>, sampleLimit: Int) {
        keysInOld += part.keysInOld
        keysInNew += part.keysInNew
        comparedByVersion += part.comparedByVersion
        comparedByValue += part.comparedByValue
        counts.merge(part.counts, uniquingKeysWith: +)
        repaired += part.repaired
        notRepaired += part.notRepaired
        repairFailed += part.repairFailed
        sample.append(contentsOf: part.sample.prefix(max(0, sampleLimit - sample.count)))
    }
}

extension VerifyMismatch: Codable where Key: Codable {}
extension VerifyReport: Codable where Key: Codable {}
