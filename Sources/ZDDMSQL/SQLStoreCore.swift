package import ZDDM

/// What every SQL store does around its driver's SQL: it knows its table, turns values into column values and
/// back (through a codec or a row mapping) with the size limit checked, reads keys back from rows, and turns
/// failures into ``ZDDM/ZDDMError``s that name the table and the operation, never a value.
///
/// A store keeps one of these and adds only its driver's statements, bindings and error sanitising. Its errors
/// name no store role: the proxy adds Old or New.
package struct SQLStoreCore<Key: SQLKey, Value: Sendable>: Sendable {
    private enum Encoding: Sendable {
        /// One bytes column, the codec's bytes.
        case codec(any ValueCodec<Value>)
        /// The mapping's columns.
        case mapping(RowMapping<Value>)
    }

    /// The table holding the values.
    package let table: SQLIdentifier
    /// The largest encoded value accepted, in bytes (summed over the columns of a row mapping).
    package let maxValueSize: Int
    private let encoding: Encoding

    /// The default largest encoded value: 16 MiB.
    package static var defaultMaxValueSize: Int { 16 << 20 }

    private init(table: SQLIdentifier, encoding: Encoding, maxValueSize: Int) throws {
        guard maxValueSize >= 1 else {
            throw ZDDMError(.invalidArgument, message: "maxValueSize must be at least 1, got \(maxValueSize)")
        }
        self.table = table
        self.encoding = encoding
        self.maxValueSize = maxValueSize
    }

    /// A core for a key-value table, whose value column holds a codec's bytes.
    /// - Parameters:
    ///   - schema: The table's names.
    ///   - codec: How values become bytes.
    ///   - maxValueSize: The largest encoded value accepted, in bytes.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for a size below 1.
    package init(schema: KeyValueTableSchema, codec: some ValueCodec<Value>, maxValueSize: Int) throws {
        try self.init(table: schema.table, encoding: .codec(codec), maxValueSize: maxValueSize)
    }

    /// A core for the user's own table, through a row mapping.
    /// - Parameters:
    ///   - mapping: The table, its columns and how values map to them.
    ///   - maxValueSize: The largest value accepted, in bytes, summed over its columns.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for a size below 1.
    package init(mapping: RowMapping<Value>, maxValueSize: Int) throws {
        try self.init(table: mapping.table, encoding: .mapping(mapping), maxValueSize: maxValueSize)
    }

    /// A value's column values, ready to bind: one bytes column for a codec, the mapping's value columns in order
    /// otherwise.
    /// - Parameters:
    ///   - value: The value.
    ///   - operation: The operation, named in errors.
    /// - Returns: The column values.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` when the value is larger than
    ///   ``maxValueSize`` or cannot be encoded, or ``ZDDM/ZDDMError/Code/mappingFailed`` when the mapping gives
    ///   other columns than it declares.
    package func encode(_ value: Value, for operation: StoreOperation) throws -> [SQLValue] {
        let columns: [SQLValue]
        let what: String
        do {
            switch encoding {
            case .codec(let codec):
                columns = [.bytes(try codec.encode(value))]
                what = "the encoded value"
            case .mapping(let mapping):
                columns = try mapping.encode(value)
                what = "the value"
            }
        } catch var error as ZDDMError {
            error.operation = error.operation ?? operation
            throw error
        } catch {
            throw ZDDMError(
                .invalidArgument,
                operation: operation,
                message: "the value could not be encoded for table \(table)",
                underlying: error
            )
        }
        let size = columns.reduce(0) { $0 + $1.byteCount }
        guard size <= maxValueSize else {
            throw ZDDMError(
                .invalidArgument,
                operation: operation,
                message: "\(what) is \(size) bytes, more than the \(maxValueSize) bytes table \(table) accepts; "
                    + "nothing was written"
            )
        }
        return columns
    }

    /// Makes a value from the column values read back: the value column (bytes or text) for a codec, the mapping's
    /// value columns in order otherwise.
    /// - Parameters:
    ///   - operation: The operation, named in errors.
    ///   - columns: Reads the column values from the driver's row.
    /// - Returns: The value.
    /// - Throws: ``ZDDM/ZDDMError`` naming the table, with code ``ZDDM/ZDDMError/Code/mappingFailed`` when the
    ///   columns do not hold a value (or the code the codec or mapping gave).
    package func value(for operation: StoreOperation, reading columns: () throws -> [SQLValue]) throws -> Value {
        do {
            return try decode(columns())
        } catch {
            throw annotated(error, operation: operation)
        }
    }

    /// Makes a record from a row of a key-value table: a tombstone when the flag is set, the value otherwise.
    /// - Parameters:
    ///   - operation: The operation, named in errors.
    ///   - row: Reads the tombstone flag (a boolean, an integer or `NULL`) and the value's columns from the
    ///     driver's row.
    /// - Returns: The record.
    /// - Throws: ``ZDDM/ZDDMError`` naming the table, with code ``ZDDM/ZDDMError/Code/mappingFailed`` when the row
    ///   holds no record.
    package func record(
        for operation: StoreOperation,
        reading row: () throws -> (tombstone: SQLValue, columns: [SQLValue])
    ) throws -> StoreRecord<Value> {
        do {
            let (tombstone, columns) = try row()
            let isTombstone: Bool
            switch tombstone {
            case .null: isTombstone = false
            case .bool(let flag): isTombstone = flag
            case .integer(let flag): isTombstone = flag != 0
            default:
                throw ZDDMError(.mappingFailed, message: "the tombstone column holds neither a boolean nor an integer")
            }
            return isTombstone ? .tombstone : .value(try decode(columns))
        } catch {
            throw annotated(error, operation: operation)
        }
    }

    /// A key read back from a row.
    /// - Parameters:
    ///   - operation: The operation, named in errors.
    ///   - value: Reads the key column's value from the driver's row.
    /// - Returns: The key.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/mappingFailed`` naming the table when the column
    ///   holds no key of this type.
    package func key(for operation: StoreOperation, reading value: () throws -> SQLKeyValue) throws -> Key {
        do {
            return try Key(sqlKeyValue: value())
        } catch {
            throw annotated(error, operation: operation)
        }
    }

    private func decode(_ columns: [SQLValue]) throws -> Value {
        switch encoding {
        case .codec(let codec):
            switch columns.first {
            case .bytes(let bytes): return try codec.decode(bytes)
            case .text(let text): return try codec.decode(Array(text.utf8))
            default: throw ZDDMError(.mappingFailed, message: "the value column holds neither bytes nor text")
            }
        case .mapping(let mapping):
            return try mapping.decode(columns)
        }
    }

    /// Checks the limit of a key listing.
    /// - Parameter limit: The most keys asked for.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` for a limit below 1.
    package func checkListLimit(_ limit: Int) throws {
        guard limit >= 1 else {
            throw ZDDMError(.invalidArgument, operation: .listKeys, message: "limit must be at least 1, got \(limit)")
        }
    }

    /// Splits items into batches of at most `size`, for statements with a bounded number of parameters.
    /// - Parameters:
    ///   - items: The items.
    ///   - size: The largest batch.
    /// - Returns: The batches, in order.
    package static func batches<Item>(_ items: [Item], size: Int) -> [ArraySlice<Item>] {
        stride(from: 0, to: items.count, by: max(1, size)).map { items[$0..<min(items.count, $0 + max(1, size))] }
    }

    /// Turns an error of a store operation into what the store throws: cancellation as it is, a
    /// ``ZDDM/ZDDMError`` with the operation added, anything else a ``ZDDM/ZDDMError/Code/storeFailed`` naming the
    /// table and the database, with the driver's error sanitised.
    /// - Parameters:
    ///   - error: The error.
    ///   - operation: The operation that failed.
    ///   - database: Where the table is, for the message (`in sqlite:…`, `on HOST:PORT/DB`).
    ///   - hint: What the driver's error means, when the driver recognises it (a missing table, a read-only
    ///     database).
    ///   - sanitized: The driver's error reduced to what may be shown.
    /// - Returns: The error to throw.
    package func wrap(
        _ error: any Error,
        operation: StoreOperation,
        database: String,
        hint: String?,
        sanitized: (any Error) -> any Error
    ) -> any Error {
        if error is CancellationError { return error }
        if var known = error as? ZDDMError {
            known.operation = known.operation ?? operation
            return known
        }
        var message = "table \(table) \(database)"
        if let hint { message += ": " + hint }
        return ZDDMError(.storeFailed, operation: operation, message: message, underlying: sanitized(error))
    }

    /// A failure to read a row back, with the operation and the table added to it; an error that is not a
    /// ``ZDDM/ZDDMError`` (thrown by a codec or a mapping) becomes ``ZDDM/ZDDMError/Code/mappingFailed``.
    private func annotated(_ error: any Error, operation: StoreOperation) -> ZDDMError {
        guard var known = error as? ZDDMError else {
            return ZDDMError(
                .mappingFailed,
                operation: operation,
                message: "table \(table): a row could not be read back as a key and value",
                underlying: error
            )
        }
        known.operation = known.operation ?? operation
        known.message = "table \(table): " + known.message
        return known
    }
}
