public import ZDDM

/// What ``SQLiteChangeCapture/status()`` found on a table: whether change capture is installed and current, what is
/// missing, and how far the change applier is behind.
public struct SQLiteChangeCaptureStatus: Sendable, Hashable {
    /// What is missing or out of date (the version column, a side table, a trigger), by name; empty when change
    /// capture is installed and current.
    public var missing: [String]
    /// The change table's size and the age of its oldest entry; `nil` when there is no change table.
    public var backlog: ChangeBacklog?

    /// Whether change capture is installed and its triggers are the current ones.
    public var isInstalled: Bool { missing.isEmpty }

    /// Creates a status.
    /// - Parameters:
    ///   - missing: What is missing or out of date.
    ///   - backlog: The change table's backlog, when it exists.
    public init(missing: [String], backlog: ChangeBacklog?) {
        self.missing = missing
        self.backlog = backlog
    }
}
