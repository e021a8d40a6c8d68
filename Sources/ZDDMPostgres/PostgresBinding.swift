import Foundation
import PostgresNIO
import ZDDM
import ZDDMSQL

/// Conversions between ZDDM's driver-independent values and PostgresNIO's.
enum PostgresBinding {
    /// Bindings holding one key.
    static func bindings(_ key: SQLKeyValue) -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        append(key, to: &bindings)
        return bindings
    }

    static func append(_ key: SQLKeyValue, to bindings: inout PostgresBindings) {
        switch key {
        case .text(let text): bindings.append(text)
        case .integer(let integer): bindings.append(integer)
        case .bytes(let bytes): bindings.append(ByteBuffer(bytes: bytes))
        }
    }

    /// Binds keys of one kind as a single array parameter (`text[]`, `int8[]` or `bytea[]`), so a batch of any
    /// size is one statement with the same text (parsed once, no per-row placeholders).
    static func appendArray(_ keys: [SQLKeyValue], kind: SQLKeyKind, to bindings: inout PostgresBindings) {
        switch kind {
        case .text:
            bindings.append(
                keys.map { key -> String in
                    if case .text(let text) = key { return text } else { return "" }
                }
            )
        case .integer:
            bindings.append(
                keys.map { key -> Int64 in
                    if case .integer(let value) = key { return value } else { return 0 }
                }
            )
        case .bytes:
            bindings.append(
                keys.map { key -> ByteBuffer in
                    if case .bytes(let bytes) = key { return ByteBuffer(bytes: bytes) } else { return ByteBuffer() }
                }
            )
        }
    }

    static func append(_ value: SQLValue, to bindings: inout PostgresBindings) {
        switch value {
        case .null: bindings.appendNull()
        case .bool(let bool): bindings.append(bool)
        case .integer(let integer): bindings.append(integer)
        case .real(let real): bindings.append(real)
        case .text(let text): bindings.append(text)
        case .bytes(let bytes): bindings.append(ByteBuffer(bytes: bytes))
        }
    }

    /// A key column's value.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/mappingFailed`` when the column holds no text, integer or
    ///   bytes key.
    static func key(_ cell: PostgresCell) throws -> SQLKeyValue {
        try reading(cell) {
            switch cell.dataType {
            case .int2, .int4, .int8: return .integer(try cell.decode(Int64.self))
            case .bytea: return .bytes(Array(buffer: try cell.decode(ByteBuffer.self)))
            case .text, .varchar, .bpchar, .name: return .text(try cell.decode(String.self))
            default:
                throw ZDDMError(
                    .mappingFailed,
                    message: "the key column \(String(reflecting: cell.columnName)) has type \(cell.dataType), "
                        + "which holds no text, integer or bytes keys"
                )
            }
        }
    }

    /// A value column's value (JSON columns read as their text).
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/mappingFailed`` for a column type a value cannot come
    ///   from.
    static func value(_ cell: PostgresCell) throws -> SQLValue {
        guard cell.bytes != nil else { return .null }
        return try reading(cell) {
            switch cell.dataType {
            case .bool: return .bool(try cell.decode(Bool.self))
            case .int2, .int4, .int8: return .integer(try cell.decode(Int64.self))
            case .float4, .float8: return .real(try cell.decode(Double.self))
            case .text, .varchar, .bpchar, .name, .json, .jsonb: return .text(try cell.decode(String.self))
            case .bytea: return .bytes(Array(buffer: try cell.decode(ByteBuffer.self)))
            default:
                throw ZDDMError(
                    .mappingFailed,
                    message: "column \(String(reflecting: cell.columnName)) has type \(cell.dataType), which a "
                        + "store cannot read (use boolean, integer, real, text or bytea columns, or a view)"
                )
            }
        }
    }

    /// Runs `body`, turning the driver's decoding errors into ``ZDDMError/Code/mappingFailed``.
    private static func reading<T>(_ cell: PostgresCell, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as ZDDMError {
            throw error
        } catch {
            throw ZDDMError(
                .mappingFailed,
                message: "column \(String(reflecting: cell.columnName)) of type \(cell.dataType) could not be read",
                underlying: PostgresErrors.sanitized(error)
            )
        }
    }

    /// The column type used when creating a table for a key kind.
    static func columnType(_ kind: SQLKeyKind) -> String {
        switch kind {
        case .text: "text COLLATE \"C\""
        case .integer: "bigint"
        case .bytes: "bytea"
        }
    }

    /// The element type of a key array parameter (`$1::text[]`, `int8[]`, `bytea[]`).
    static func arrayElementType(_ kind: SQLKeyKind) -> String {
        switch kind {
        case .text: "text"
        case .integer: "bigint"
        case .bytes: "bytea"
        }
    }

    /// Whether a column type (as `format_type` spells it) holds keys of a kind.
    static func typeMatches(_ type: String, kind: SQLKeyKind) -> Bool {
        switch kind {
        case .integer: ["bigint", "integer", "smallint"].contains(type)
        case .text: type == "text" || type.hasPrefix("character varying") || type.hasPrefix("character(")
        case .bytes: type == "bytea"
        }
    }

    /// `$first, $first+1, …` with `count` placeholders.
    static func placeholders(from first: Int, count: Int) -> String {
        (first..<(first + count)).map { "$\($0)" }.joined(separator: ", ")
    }

    /// A lock id for `pg_advisory_xact_lock`, the same in every process: FNV-1a 64 over the table name and the
    /// key's kind and bytes.
    static func lockID(table: SQLIdentifier, key: SQLKeyValue) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ bytes: some Sequence<UInt8>) {
            for byte in bytes {
                hash ^= UInt64(byte)
                hash &*= 0x0000_0100_0000_01b3
            }
        }
        mix(table.name.utf8)
        mix([0])
        switch key {
        case .text(let text):
            mix([1])
            mix(text.utf8)
        case .integer(let integer):
            mix([2])
            mix(withUnsafeBytes(of: integer.bigEndian) { Array($0) })
        case .bytes(let bytes):
            mix([3])
            mix(bytes)
        }
        return Int64(bitPattern: hash)
    }

    /// Checks a table's columns: that it exists, has the given columns, and that the key column can hold the key
    /// kind.
    static func checkTable(
        _ database: PostgresDatabase,
        table: SQLIdentifier,
        keyColumn: SQLIdentifier,
        keyKind: SQLKeyKind,
        otherColumns: [SQLIdentifier]
    ) async throws {
        var bindings = PostgresBindings()
        bindings.append(table.quoted)
        let rows = try await database.collect(
            PostgresQuery(
                unsafeSQL: """
                    SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                    WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                    """,
                binds: bindings
            )
        )
        guard !rows.isEmpty else {
            throw ZDDMError(.invalidArgument, operation: .prepare, message: "table \(table) does not exist")
        }
        var types: [String: String] = [:]
        for row in rows {
            let (name, type) = try row.decode((String, String).self)
            types[name] = type
        }
        for column in [keyColumn] + otherColumns where types[column.name] == nil {
            throw ZDDMError(.invalidArgument, operation: .prepare, message: "table \(table) has no column \(column)")
        }
        let keyType = types[keyColumn.name] ?? ""
        guard typeMatches(keyType, kind: keyKind) else {
            throw ZDDMError(
                .invalidArgument,
                operation: .prepare,
                message: "column \(keyColumn) of table \(table) has type \(keyType), which does not hold \(keyKind) "
                    + "keys (expected \(columnType(keyKind)))"
            )
        }
    }

    /// A version as a `bigint` parameter.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/invalidArgument`` for a version above `Int64.max`.
    static func versionParameter(_ version: UInt64, for operation: StoreOperation) throws -> Int64 {
        guard let parameter = Int64(exactly: version) else {
            throw ZDDMError(
                .invalidArgument,
                operation: operation,
                message: "a version must be at most \(Int64.max) to fit a bigint column"
            )
        }
        return parameter
    }

    /// A version read back from a `bigint` column.
    /// - Throws: ``ZDDMError`` with code ``ZDDMError/Code/mappingFailed`` for a negative or non-integer version.
    static func version(_ cell: PostgresCell) throws -> UInt64 {
        try reading(cell) {
            guard let version = UInt64(exactly: try cell.decode(Int64.self)) else {
                throw ZDDMError(
                    .mappingFailed,
                    message: "the version column \(String(reflecting: cell.columnName)) holds a negative version"
                )
            }
            return version
        }
    }

    /// Runs one statement in its own transaction, again (up to 5 attempts) when it fails with a serialization
    /// failure (SQLSTATE 40001): change capture's trigger raises one when a concurrent delete of the same key
    /// committed while the statement waited, and a statement that failed took no effect.
    static func retryingSerializationFailures<T>(_ body: () async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await body()
            } catch  where attempt < 5 && PostgresErrors.sqlState(error) == "40001" {
                attempt += 1
            }
        }
    }
}
