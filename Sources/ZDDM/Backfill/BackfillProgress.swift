import Foundation

/// A backfill's progress, reported after every batch and at the end.
public struct BackfillProgress: Sendable, Codable, CustomStringConvertible {
    /// Rows read from Old's key list in this pass (resumed runs include the rows before the checkpoint).
    public var rowsScanned: Int
    /// Rows copied into New.
    public var rowsCopied: Int
    /// Deleted keys whose deletion was copied into New as a tombstone in this run (with versions: Old remembers a
    /// deleted key's version, and the backfill lists those keys too, so that reads of them are served by New).
    public var deletionsCopied: Int = 0
    /// Rows the gate did not admit.
    public var rowsSkipped: Int
    /// Rows New already held (written by live traffic, a tombstone, or an earlier run), or Old no longer had.
    public var rowsPresent: Int
    /// Rows held back because the proxy keeps New out of them until they are repaired.
    public var rowsHeldBack: Int
    /// Rows scanned per second in this run.
    public var rowsPerSecond: Double
    /// The expected number of rows, when known.
    public var expectedTotal: Int?
    /// Time since this run started.
    public var elapsed: Duration
    /// Whether the pass reached the end of Old's keys.
    public var finished: Bool

    /// The share of rows scanned, when the total is known.
    public var fractionDone: Double? {
        guard let expectedTotal, expectedTotal > 0 else { return finished ? 1 : nil }
        return min(1, Double(rowsScanned) / Double(expectedTotal))
    }

    /// The estimated time to finish, when the total is known.
    public var estimatedRemaining: Duration? {
        guard let expectedTotal, rowsPerSecond > 0 else { return nil }
        let remaining = max(0, expectedTotal - rowsScanned)
        return .milliseconds(Int64(Double(remaining) / rowsPerSecond * 1000))
    }

    public var description: String {
        var text = "\(rowsScanned) rows scanned, \(rowsCopied) copied, \(rowsPresent) present, \(rowsSkipped) skipped"
        if deletionsCopied > 0 { text += ", \(deletionsCopied) deletions copied" }
        text += String(format: ", %.0f rows/s", rowsPerSecond)
        if let eta = estimatedRemaining, !finished { text += ", ETA \(eta.components.seconds) s" }
        if finished { text += ", finished" }
        return text
    }
}
