import Foundation
import GRDB
import ZDDM
import ZDDMSQL

/// Conversions between ZDDM's driver-independent values and GRDB's.
enum SQLiteBinding {
    static func databaseValue(_ key: SQLKeyValue) -> DatabaseValue {
        switch key {
        case .text(let text): text.databaseValue
        case .integer(let integer): integer.databaseValue
        case .bytes(let bytes): Data(bytes).databaseValue
        }
    }

    static func databaseValue(_ value: SQLValue) -> DatabaseValue {
        switch value {
        case .null: .null
        case .bool(let bool): bool.databaseValue
        case .integer(let integer): integer.databaseValue
        case .real(let real): real.databaseValue
        case .text(let text): text.databaseValue
        case .bytes(let bytes): Data(bytes).databaseValue
        }
    }

    static func keyValue(_ value: DatabaseValue) throws -> SQLKeyValue {
        switch value.storage {
        case .int64(let integer): return .integer(integer)
        case .string(let text): return .text(text)
        case .blob(let data): return .bytes(Array(data))
        case .double, .null:
            throw ZDDMError(
                .mappingFailed,
                message: "the key column holds a value that is not text, integer or bytes"
            )
        }
    }

    static func sqlValue(_ value: DatabaseValue) -> SQLValue {
        switch value.storage {
        case .null: .null
        case .int64(let integer): .integer(integer)
        case .double(let real): .real(real)
        case .string(let text): .text(text)
        case .blob(let data): .bytes(Array(data))
        }
    }

    /// The column type used when creating a table for a key kind.
    static func columnType(_ kind: SQLKeyKind) -> String {
        switch kind {
        case .text: "TEXT"
        case .integer: "INTEGER"
        case .bytes: "BLOB"
        }
    }

    /// Whether a declared column type has the affinity that holds keys of a kind (SQLite's affinity rules).
    static func affinityMatches(declaredType: String, kind: SQLKeyKind) -> Bool {
        let type = declaredType.uppercased()
        let affinityInteger = type.contains("INT")
        let affinityText = !affinityInteger && (type.contains("CHAR") || type.contains("CLOB") || type.contains("TEXT"))
        let affinityBlob = !affinityInteger && !affinityText && (type.contains("BLOB") || type.isEmpty)
        switch kind {
        case .integer: return affinityInteger
        case .text: return affinityText
        case .bytes: return affinityBlob
        }
    }

    /// `?, ?, ?` with `count` placeholders.
    static func placeholders(_ count: Int) -> String {
        Array(repeating: "?", count: count).joined(separator: ", ")
    }

    /// Checks a table's columns: that it exists, has the given columns, and that the key column can hold the key
    /// kind.
    static func checkTable(
        _ db: Database,
        table: SQLIdentifier,
        keyColumn: SQLIdentifier,
        keyKind: SQLKeyKind,
        otherColumns: [SQLIdentifier]
    ) throws {
        let rows = try Row.fetchAll(db, sql: "PRAGMA table_info(\(table.quoted))")
        guard !rows.isEmpty else {
            throw ZDDMError(.invalidArgument, operation: .prepare, message: "table \(table) does not exist")
        }
        var types: [String: String] = [:]
        for row in rows {
            let name: String = row["name"]
            let type: String = row["type"] ?? ""
            types[name.lowercased()] = type
        }
        for column in [keyColumn] + otherColumns where types[column.name.lowercased()] == nil {
            throw ZDDMError(
                .invalidArgument,
                operation: .prepare,
                message: "table \(table) has no column \(column)"
            )
        }
        let keyType = types[keyColumn.name.lowercased()] ?? ""
        guard affinityMatches(declaredType: keyType, kind: keyKind) else {
            throw ZDDMError(
                .invalidArgument,
                operation: .prepare,
                message: "column \(keyColumn) of table \(table) is declared \(String(reflecting: keyType)), "
                    + "which does not hold \(keyKind) keys (expected a \(columnType(keyKind)) column)"
            )
        }
    }
}

extension SQLiteBinding {
    /// A version as an SQLite integer.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for a version above
    ///   `Int64.max`, which SQLite cannot store.
    static func databaseValue(version: UInt64, for operation: StoreOperation) throws -> DatabaseValue {
        guard let stored = Int64(exactly: version) else {
            throw ZDDMError(
                .invalidArgument,
                operation: operation,
                message: "a version must be at most \(Int64.max) to be stored in SQLite"
            )
        }
        return stored.databaseValue
    }

    /// A version read back from a version column.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/mappingFailed`` when the column holds no
    ///   non-negative integer.
    static func version(_ value: DatabaseValue) throws -> UInt64 {
        switch value.storage {
        case .int64(let integer) where integer >= 0: return UInt64(integer)
        case .null: return 0
        default:
            throw ZDDMError(.mappingFailed, message: "the version column holds a value that is not a version")
        }
    }
}
