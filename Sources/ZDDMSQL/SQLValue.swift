/// One column's value in a row, independent of the database driver: what a ``RowMapping`` reads and writes.
public enum SQLValue: Sendable, Hashable {
    /// SQL `NULL`.
    case null
    /// A boolean.
    case bool(Bool)
    /// A 64-bit integer.
    case integer(Int64)
    /// A floating-point number.
    case real(Double)
    /// Text.
    case text(String)
    /// Bytes.
    case bytes([UInt8])

    /// The text, or `nil` for another kind.
    public var text: String? {
        if case .text(let text) = self { return text }
        return nil
    }

    /// The integer, or `nil` for another kind.
    public var integer: Int64? {
        if case .integer(let integer) = self { return integer }
        return nil
    }

    /// The bytes, or `nil` for another kind.
    public var bytes: [UInt8]? {
        if case .bytes(let bytes) = self { return bytes }
        return nil
    }

    /// The boolean, or `nil` for another kind.
    public var bool: Bool? {
        if case .bool(let bool) = self { return bool }
        return nil
    }

    /// Whether this is SQL `NULL`.
    public var isNull: Bool { self == .null }

    /// The number of bytes the value takes as data, for size limits (text as UTF-8, numbers 8, `NULL` 0).
    public var byteCount: Int {
        switch self {
        case .null: 0
        case .bool: 1
        case .integer, .real: 8
        case .text(let text): text.utf8.count
        case .bytes(let bytes): bytes.count
        }
    }
}
