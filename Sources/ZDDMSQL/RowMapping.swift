import ZDDM

/// How a value type maps to a row of your own table, so a store can read and write it without a key-value
/// table: the table, its key column, the value columns, and two functions between a value and those columns.
///
/// ```swift
/// let accounts = try RowMapping<Person>(
///     table: "accounts",
///     keyColumn: "id",
///     valueColumns: ["full_name", "email"],
///     encode: { ["full_name": .text($0.fullName), "email": .text($0.email)] },
///     decode: { Person(fullName: try $0.text("full_name"), email: try $0.text("email")) }
/// )
/// ```
///
/// The key column must be the table's primary key (or carry a unique constraint). Tombstones live in a side
/// table, by default `<table>_zddm_tombstones(key PRIMARY KEY)`, so the user's table holds only live rows.
public struct RowMapping<Value: Sendable>: Sendable {
    /// The user's table.
    public let table: SQLIdentifier
    /// Its key column.
    public let keyColumn: SQLIdentifier
    /// The columns a value is stored in, in a fixed order.
    public let valueColumns: [SQLIdentifier]
    /// The side table holding tombstones.
    public let tombstoneTable: SQLIdentifier
    /// The side table's only column, its primary key: `key`.
    public let tombstoneKeyColumn: SQLIdentifier

    private let encodeRow: @Sendable (Value) throws -> [String: SQLValue]
    private let decodeRow: @Sendable (SQLRow) throws -> Value

    /// Creates a mapping, validating every name before any SQL runs.
    /// - Parameters:
    ///   - table: The table name.
    ///   - keyColumn: The key column's name.
    ///   - valueColumns: The columns a value is stored in; at least one, none equal to the key column.
    ///   - tombstoneTable: The side table for tombstones; `<table>_zddm_tombstones` by default.
    ///   - encode: Returns a value's column values, by column name, for exactly `valueColumns`.
    ///   - decode: Makes a value from a row holding `valueColumns`.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` naming an invalid or duplicate
    ///   name.
    public init(
        table: String,
        keyColumn: String,
        valueColumns: [String],
        tombstoneTable: String? = nil,
        encode: @escaping @Sendable (Value) throws -> [String: SQLValue],
        decode: @escaping @Sendable (SQLRow) throws -> Value
    ) throws {
        self.table = try SQLIdentifier(table, role: "table name")
        self.keyColumn = try SQLIdentifier(keyColumn, role: "key column name")
        self.valueColumns = try valueColumns.map { try SQLIdentifier($0, role: "value column name") }
        let sideTable = tombstoneTable ?? table + "_zddm_tombstones"
        self.tombstoneTable = try SQLIdentifier(
            sideTable,
            role: tombstoneTable == nil
                ? "tombstone table name (derived; pass tombstoneTable:)" : "tombstone table name"
        )
        self.tombstoneKeyColumn = try SQLIdentifier("key", role: "tombstone key column name")
        guard !valueColumns.isEmpty else {
            throw ZDDMError(.invalidArgument, message: "a row mapping needs at least one value column")
        }
        let all = ([keyColumn] + valueColumns).map { $0.lowercased() }
        guard Set(all).count == all.count else {
            throw ZDDMError(.invalidArgument, message: "the key and value columns of a row mapping need distinct names")
        }
        guard sideTable.lowercased() != table.lowercased() else {
            throw ZDDMError(.invalidArgument, message: "the tombstone table must differ from the table")
        }
        self.encodeRow = encode
        self.decodeRow = decode
    }

    /// A value's column values, in ``valueColumns`` order.
    /// - Parameter value: The value.
    /// - Returns: One value per column.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/mappingFailed`` when `encode` gave other columns
    ///   than ``valueColumns``, or what `encode` throws.
    public func encode(_ value: Value) throws -> [SQLValue] {
        let columns = try encodeRow(value)
        let expected = Set(valueColumns.map(\.name))
        guard Set(columns.keys) == expected else {
            let extra = Set(columns.keys).subtracting(expected).sorted()
            let missing = expected.subtracting(columns.keys).sorted()
            throw ZDDMError(
                .mappingFailed,
                message: "the row mapping for \(table) must give exactly its value columns; missing: "
                    + "\(missing.joined(separator: ", ")); not declared: \(extra.count) column(s)"
            )
        }
        return valueColumns.map { columns[$0.name] ?? .null }
    }

    /// Makes a value from column values in ``valueColumns`` order.
    /// - Parameter values: One value per column.
    /// - Returns: The value.
    /// - Throws: What `decode` throws.
    public func decode(_ values: [SQLValue]) throws -> Value {
        var row: [String: SQLValue] = [:]
        for (column, value) in zip(valueColumns, values) { row[column.name] = value }
        return try decodeRow(SQLRow(row))
    }
}
