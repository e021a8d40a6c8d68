public import Foundation

/// Stores `Data` values as they are.
public struct DataValueCodec: ValueCodec {
    /// Creates the codec.
    public init() {}

    /// Returns the bytes of the data.
    /// - Parameter value: The data.
    /// - Returns: Its bytes.
    public func encode(_ value: Data) -> [UInt8] { Array(value) }

    /// Wraps the stored bytes.
    /// - Parameter bytes: The stored bytes.
    /// - Returns: The data.
    public func decode(_ bytes: [UInt8]) -> Data { Data(bytes) }
}

extension ValueCodec where Self == DataValueCodec {
    /// `Data`, stored as it is.
    public static var data: DataValueCodec { DataValueCodec() }
}
