/// Turns store values into bytes for a database column and back.
///
/// The SQL key-value stores keep each value as the bytes its codec makes. Built in: ``JSONValueCodec`` for any
/// `Codable` value (the default) and ``RawBytesValueCodec`` for `[UInt8]` values stored as they are.
/// Codec errors must not quote the value: they end up in error descriptions.
public protocol ValueCodec<Value>: Sendable {
    /// The value type.
    associatedtype Value: Sendable

    /// Encodes a value.
    /// - Parameter value: The value.
    /// - Returns: The bytes to store.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` when the value cannot be encoded.
    func encode(_ value: Value) throws -> [UInt8]

    /// Decodes stored bytes.
    /// - Parameter bytes: The stored bytes.
    /// - Returns: The value.
    /// - Throws: ``ZDDM/ZDDMError`` when the bytes are not a valid encoding.
    func decode(_ bytes: [UInt8]) throws -> Value
}
