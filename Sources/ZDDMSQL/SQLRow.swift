import ZDDM

/// One row of a user's table as a ``RowMapping`` sees it: the mapped columns' values by name.
public struct SQLRow: Sendable, Hashable {
    /// The values, by column name.
    public let values: [String: SQLValue]

    /// Creates a row.
    /// - Parameter values: The values, by column name.
    public init(_ values: [String: SQLValue]) {
        self.values = values
    }

    /// A column's value.
    /// - Parameter column: The column name.
    /// - Returns: The value.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/mappingFailed`` when the row has no such
    ///   column.
    public func value(_ column: String) throws -> SQLValue {
        guard let value = values[column] else {
            throw ZDDMError(
                .mappingFailed,
                message: "the row mapping read column \"\(column)\", which it did not declare"
            )
        }
        return value
    }

    /// A text column's value.
    /// - Parameter column: The column name.
    /// - Returns: The text.
    /// - Throws: ``ZDDM/ZDDMError`` when the column is missing or does not hold text.
    public func text(_ column: String) throws -> String {
        try typed(column, "text") { $0.text }
    }

    /// An integer column's value.
    /// - Parameter column: The column name.
    /// - Returns: The integer.
    /// - Throws: ``ZDDM/ZDDMError`` when the column is missing or does not hold an integer.
    public func integer(_ column: String) throws -> Int64 {
        try typed(column, "an integer") { $0.integer }
    }

    /// A byte-string column's value.
    /// - Parameter column: The column name.
    /// - Returns: The bytes.
    /// - Throws: ``ZDDM/ZDDMError`` when the column is missing or does not hold bytes.
    public func bytes(_ column: String) throws -> [UInt8] {
        try typed(column, "bytes") { $0.bytes }
    }

    /// A nullable text column's value.
    /// - Parameter column: The column name.
    /// - Returns: The text, or `nil` for `NULL`.
    /// - Throws: ``ZDDM/ZDDMError`` when the column is missing or holds neither text nor `NULL`.
    public func optionalText(_ column: String) throws -> String? {
        let value = try value(column)
        return value.isNull ? nil : try text(column)
    }

    private func typed<T>(_ column: String, _ expected: String, _ extract: (SQLValue) -> T?) throws -> T {
        let value = try value(column)
        guard let result = extract(value) else {
            throw ZDDMError(
                .mappingFailed,
                message: "column \"\(column)\" holds \(Self.kind(of: value)), the row mapping expected \(expected)"
            )
        }
        return result
    }

    private static func kind(of value: SQLValue) -> String {
        switch value {
        case .null: "NULL"
        case .bool: "a boolean"
        case .integer: "an integer"
        case .real: "a real number"
        case .text: "text"
        case .bytes: "bytes"
        }
    }
}
