/// Stores `[UInt8]` values as they are.
public struct RawBytesValueCodec: ValueCodec {
    /// Creates the codec.
    public init() {}

    /// Returns the bytes unchanged.
    /// - Parameter value: The bytes.
    /// - Returns: The same bytes.
    public func encode(_ value: [UInt8]) -> [UInt8] { value }

    /// Returns the bytes unchanged.
    /// - Parameter bytes: The stored bytes.
    /// - Returns: The same bytes.
    public func decode(_ bytes: [UInt8]) -> [UInt8] { bytes }
}

extension ValueCodec where Self == RawBytesValueCodec {
    /// Raw bytes, stored as they are.
    public static var rawBytes: RawBytesValueCodec { RawBytesValueCodec() }
}
