import ZDDM

/// The names of a key-value table used by the SQL key-value stores: a table with a key column, a value column
/// and a tombstone flag.
///
/// All names are validated as ``SQLIdentifier``s when the schema is created, before any SQL runs.
public struct KeyValueTableSchema: Sendable, Hashable {
    /// The table.
    public let table: SQLIdentifier
    /// The key column (the primary key).
    public let keyColumn: SQLIdentifier
    /// The value column: the codec's bytes, `NULL` for a tombstone.
    public let valueColumn: SQLIdentifier
    /// The tombstone flag column: `true` when the row records a deletion.
    public let tombstoneColumn: SQLIdentifier

    /// Validates the names of a key-value table.
    /// - Parameters:
    ///   - table: The table name.
    ///   - keyColumn: The key column's name; `key` by default.
    ///   - valueColumn: The value column's name; `value` by default.
    ///   - tombstoneColumn: The tombstone column's name; `tombstone` by default.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` naming the invalid name, or
    ///   when two columns share a name.
    public init(
        table: String,
        keyColumn: String = "key",
        valueColumn: String = "value",
        tombstoneColumn: String = "tombstone"
    ) throws {
        self.table = try SQLIdentifier(table, role: "table name")
        self.keyColumn = try SQLIdentifier(keyColumn, role: "key column name")
        self.valueColumn = try SQLIdentifier(valueColumn, role: "value column name")
        self.tombstoneColumn = try SQLIdentifier(tombstoneColumn, role: "tombstone column name")
        let lowered = Set([keyColumn, valueColumn, tombstoneColumn].map { $0.lowercased() })
        guard lowered.count == 3 else {
            throw ZDDMError(.invalidArgument, message: "the key, value and tombstone columns need distinct names")
        }
    }
}
