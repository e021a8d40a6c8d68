public import ZDDM

/// The SQL column type a key is stored in.
public enum SQLKeyKind: Sendable, Hashable, CustomStringConvertible {
    /// A text column (`TEXT`), ordered by bytes (SQLite `BINARY`, PostgreSQL `COLLATE "C"`).
    case text
    /// A 64-bit integer column (`INTEGER` in SQLite, `bigint` in PostgreSQL).
    case integer
    /// A byte-string column (`BLOB` in SQLite, `bytea` in PostgreSQL), ordered by bytes.
    case bytes

    public var description: String {
        switch self {
        case .text: "text"
        case .integer: "integer"
        case .bytes: "bytes"
        }
    }
}

/// A key as it is bound to an SQL statement or read back from a row.
public enum SQLKeyValue: Sendable, Hashable {
    /// A text key.
    case text(String)
    /// An integer key.
    case integer(Int64)
    /// A byte-string key.
    case bytes([UInt8])

    /// The column kind this key needs.
    public var kind: SQLKeyKind {
        switch self {
        case .text: .text
        case .integer: .integer
        case .bytes: .bytes
        }
    }
}

/// A key type the SQL stores can bind as a parameter and read back.
///
/// Built in: `String` (text), `Int64` (integer) and ``ZDDM/KeyBytes`` (bytes). Conform your own key types by
/// mapping them to one of these, for example a UUID to its lowercase text form.
public protocol SQLKey: GateKey {
    /// The column kind keys of this type are stored in.
    static var sqlKeyKind: SQLKeyKind { get }

    /// The key as an SQL parameter.
    var sqlKeyValue: SQLKeyValue { get }

    /// Reads a key back from a row.
    /// - Parameter sqlKeyValue: The value read from the key column.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/mappingFailed`` when the value has the wrong
    ///   kind.
    init(sqlKeyValue: SQLKeyValue) throws
}

extension SQLKeyValue {
    /// The error thrown when a key column holds a value of another kind than the key type.
    static func mismatch(expected: SQLKeyKind, found: SQLKeyValue) -> ZDDMError {
        ZDDMError(
            .mappingFailed,
            message: "the key column holds a \(found.kind) value where a \(expected) key was expected"
        )
    }
}

extension String: SQLKey {
    public static var sqlKeyKind: SQLKeyKind { .text }
    public var sqlKeyValue: SQLKeyValue { .text(self) }
    public init(sqlKeyValue: SQLKeyValue) throws {
        guard case .text(let text) = sqlKeyValue else {
            throw SQLKeyValue.mismatch(expected: .text, found: sqlKeyValue)
        }
        self = text
    }
}

extension Int64: SQLKey {
    public static var sqlKeyKind: SQLKeyKind { .integer }
    public var sqlKeyValue: SQLKeyValue { .integer(self) }
    public init(sqlKeyValue: SQLKeyValue) throws {
        guard case .integer(let integer) = sqlKeyValue else {
            throw SQLKeyValue.mismatch(expected: .integer, found: sqlKeyValue)
        }
        self = integer
    }
}

extension KeyBytes: SQLKey {
    public static var sqlKeyKind: SQLKeyKind { .bytes }
    public var sqlKeyValue: SQLKeyValue { .bytes(bytes) }
    public init(sqlKeyValue: SQLKeyValue) throws {
        guard case .bytes(let bytes) = sqlKeyValue else {
            throw SQLKeyValue.mismatch(expected: .bytes, found: sqlKeyValue)
        }
        self.init(bytes)
    }
}

extension SQLKeyValue {
    /// Whether this key is listed before another by the SQL stores: integers by value, text by its UTF-8 bytes
    /// (SQLite's `BINARY`, PostgreSQL's `COLLATE "C"`), byte strings by their bytes.
    /// - Parameter other: Another key of the same kind (keys of different kinds order by kind: integer, text,
    ///   bytes).
    /// - Returns: `true` when this key comes first.
    public func sortsBefore(_ other: SQLKeyValue) -> Bool {
        switch (self, other) {
        case (.integer(let a), .integer(let b)): a < b
        case (.text(let a), .text(let b)): a.utf8.lexicographicallyPrecedes(b.utf8)
        case (.bytes(let a), .bytes(let b)): a.lexicographicallyPrecedes(b)
        default: rank < other.rank
        }
    }

    private var rank: Int {
        switch self {
        case .integer: 0
        case .text: 1
        case .bytes: 2
        }
    }
}
