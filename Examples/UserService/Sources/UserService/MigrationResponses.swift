public import Hummingbird
import ZDDM

/// The answer of `GET /migration` and of the operator's `PUT`s: the gate and the proxy's safety memory.
public struct MigrationStatus: ResponseCodable, Sendable, Equatable {
    /// The migration's name.
    public var migration: String
    /// The gate's rate: the share of keys that take part.
    public var rate: Double
    /// The largest rate ever used: keys below it may have a copy in New.
    public var highWaterRate: Double
    /// Whether the killswitch is on (New is not touched at all).
    public var killswitch: Bool
    /// Keys the proxy keeps out of New until they are repaired.
    public var unsafeKeys: Int
    /// Whether the proxy lost track of unsafe keys and reads everything from Old until a verify pass.
    public var degraded: Bool
    /// For a change: whether it was also saved for the next run (`false` when the database refused; the change
    /// is in force in this process all the same). Absent for `GET`.
    public var saved: Bool?
}

/// The answer of `POST /migration/backfill`.
public struct BackfillResult: ResponseCodable, Sendable, Equatable {
    /// Old's rows listed in this pass (including those before a checkpoint it resumed from).
    public var rowsScanned: Int
    /// Rows copied into New.
    public var rowsCopied: Int
    /// Rows the gate did not admit.
    public var rowsSkipped: Int
    /// Rows New already had (live traffic, a tombstone, an earlier pass) or Old no longer had.
    public var rowsPresent: Int
    /// Rows held back because the proxy keeps New out of them until they are repaired.
    public var rowsHeldBack: Int
    /// Rows scanned per second.
    public var rowsPerSecond: Double
    /// How long the pass ran.
    public var elapsedSeconds: Double
    /// Whether the pass reached the end of Old; `false` when the killswitch stopped it (the next call resumes).
    public var finished: Bool

    init(_ progress: BackfillProgress) {
        rowsScanned = progress.rowsScanned
        rowsCopied = progress.rowsCopied
        rowsSkipped = progress.rowsSkipped
        rowsPresent = progress.rowsPresent
        rowsHeldBack = progress.rowsHeldBack
        rowsPerSecond = progress.rowsPerSecond
        let elapsed = progress.elapsed.components
        elapsedSeconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        finished = progress.finished
    }
}

/// The answer of `POST /migration/verify`.
public struct VerifyResult: ResponseCodable, Sendable, Equatable {
    /// One mismatched key.
    public struct Mismatch: Codable, Sendable, Equatable {
        /// The user id.
        public var id: Int64
        /// How New differs: `missing_in_new`, `extra_in_new`, `different_value` or `tombstone_in_new`.
        public var kind: String

        /// Creates a mismatch.
        /// - Parameters:
        ///   - id: The user id.
        ///   - kind: How New differs.
        public init(id: Int64, kind: String) {
            self.id = id
            self.kind = kind
        }
    }

    /// Users in Old that were compared.
    public var keysInOld: Int
    /// Users in New that were compared.
    public var keysInNew: Int
    /// All mismatches.
    public var mismatches: Int
    /// Mismatches that would serve wrong data (all but keys merely missing in New).
    public var staleMismatches: Int
    /// Mismatches by kind, every kind present.
    public var counts: [String: Int]
    /// Keys repaired from Old (with `?repair=true`).
    public var repaired: Int
    /// Keys the proxy kept out of New that were invalidated there (with `?repair=true`).
    public var unsafeKeysRepaired: Int
    /// Up to 20 mismatched ids, in the order found.
    public var sample: [Mismatch]

    init(_ report: VerifyReport<Int64>, unsafeKeysRepaired: Int) {
        keysInOld = report.keysInOld
        keysInNew = report.keysInNew
        mismatches = report.mismatches
        staleMismatches = report.staleMismatches
        counts = Dictionary(uniqueKeysWithValues: MismatchKind.allCases.map { ($0.rawValue, report.counts[$0] ?? 0) })
        repaired = report.repaired
        self.unsafeKeysRepaired = unsafeKeysRepaired
        sample = report.sample.map { Mismatch(id: $0.key, kind: $0.kind.rawValue) }
    }
}
