/// How the `shadow` stage compares New with Old, like GitHub Scientist's experiments.
///
/// For a sample of the keys the gate admits (deterministic per key: a key is always or never sampled at a given
/// ratio), a read goes to Old and to New at the same time. The caller gets Old's answer as soon as Old has
/// answered; the comparison happens afterwards, off the request's path. A mismatch is counted, published to
/// ``publish``, and (by default) repaired by invalidating the key in New.
public struct ShadowComparison<Value: Sendable>: Sendable {
    /// The share of admitted keys compared, in `[0, 1]`.
    public var sampleRatio: Double
    /// Decides whether two values match; `nil` uses `==` when the value type is `Equatable`.
    public var areEqual: (@Sendable (Value, Value) -> Bool)?
    /// Turns a value into the text published with a mismatch; `nil` publishes no values at all (the default, so
    /// that no row value leaves the process by accident).
    public var clean: (@Sendable (Value) -> String)?
    /// Receives each mismatch, on a background task.
    public var publish: (@Sendable (ShadowMismatch) -> Void)?
    /// The most comparisons waiting for New at once; past it, sampled reads are not compared (and counted).
    public var maxInFlight: Int
    /// Whether a mismatched key is invalidated in New, so a later `live` read fills it from Old.
    public var repairMismatches: Bool

    /// Creates a comparison.
    /// - Parameters:
    ///   - sampleRatio: The share of admitted keys compared; all by default.
    ///   - areEqual: The comparison; `==` by default for `Equatable` values.
    ///   - clean: What to publish of a value; nothing by default.
    ///   - publish: Receives mismatches.
    ///   - maxInFlight: The most comparisons in flight; 64 by default.
    ///   - repairMismatches: Invalidate mismatched keys in New; on by default.
    public init(
        sampleRatio: Double = 1,
        areEqual: (@Sendable (Value, Value) -> Bool)? = nil,
        clean: (@Sendable (Value) -> String)? = nil,
        publish: (@Sendable (ShadowMismatch) -> Void)? = nil,
        maxInFlight: Int = 64,
        repairMismatches: Bool = true
    ) {
        self.sampleRatio = sampleRatio
        self.areEqual = areEqual
        self.clean = clean
        self.publish = publish
        self.maxInFlight = maxInFlight
        self.repairMismatches = repairMismatches
    }
}

/// One key on which New disagreed with Old in the `shadow` stage.
public struct ShadowMismatch: Sendable, CustomStringConvertible {
    /// How they disagreed.
    public enum Kind: String, Sendable, CaseIterable {
        /// Both have a value, and the values differ.
        case differentValue = "different_value"
        /// New has a value, Old has none.
        case extraInNew = "extra_in_new"
        /// New has a tombstone, Old has a value.
        case tombstoneInNew = "tombstone_in_new"
        /// One store failed and the other answered.
        case differentOutcome = "different_outcome"
    }

    /// The key, as its gate bytes in text (UTF-8 when valid, hexadecimal otherwise).
    public var key: String
    /// How they disagreed.
    public var kind: Kind
    /// Old's side: the cleaned value, `"<none>"`, `"<tombstone>"`, an error's type, or `nil` when not published.
    public var old: String?
    /// New's side, likewise.
    public var new: String?

    public var description: String {
        "shadow mismatch (\(kind.rawValue)) on key \(key)" + (old.map { ": Old \($0)" } ?? "")
            + (new.map { ", New \($0)" } ?? "")
    }
}
