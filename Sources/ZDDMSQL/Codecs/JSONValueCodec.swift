import Foundation
import ZDDM

/// Stores `Codable` values as JSON text (UTF-8), with sorted keys so equal values give equal bytes.
///
/// Errors name the coding path that failed but never quote the value or the stored bytes.
public struct JSONValueCodec<Value: Codable & Sendable>: ValueCodec {
    /// Creates the codec.
    public init() {}

    /// Encodes a value as JSON.
    /// - Parameter value: The value.
    /// - Returns: The JSON text's UTF-8 bytes.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` when JSON cannot represent the
    ///   value.
    public func encode(_ value: Value) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            return Array(try encoder.encode(value))
        } catch let error as EncodingError {
            throw ZDDMError(
                .invalidArgument,
                message: "the value could not be encoded as JSON\(Self.path(of: error))"
            )
        } catch {
            throw ZDDMError(.invalidArgument, message: "the value could not be encoded as JSON")
        }
    }

    /// Decodes JSON bytes.
    /// - Parameter bytes: The stored JSON.
    /// - Returns: The value.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/mappingFailed`` when the bytes are not JSON for
    ///   `Value`.
    public func decode(_ bytes: [UInt8]) throws -> Value {
        do {
            return try JSONDecoder().decode(Value.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw ZDDMError(
                .mappingFailed,
                message: "a stored value (\(bytes.count) bytes) is not valid JSON for \(Value.self)"
                    + Self.path(of: error)
            )
        } catch {
            throw ZDDMError(
                .mappingFailed,
                message: "a stored value (\(bytes.count) bytes) is not valid JSON for \(Value.self)"
            )
        }
    }

    private static func path(of error: EncodingError) -> String {
        switch error {
        case .invalidValue(_, let context): describe(context.codingPath)
        @unknown default: ""
        }
    }

    private static func path(of error: DecodingError) -> String {
        switch error {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context),
            .dataCorrupted(let context):
            describe(context.codingPath)
        @unknown default: ""
        }
    }

    private static func describe(_ path: [any CodingKey]) -> String {
        path.isEmpty ? "" : " at \(path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: "."))"
    }
}

extension ValueCodec {
    /// A JSON codec for a `Codable` value type.
    /// - Parameter type: The value type.
    /// - Returns: The codec.
    public static func json<V>(_ type: V.Type = V.self) -> JSONValueCodec<V> where Self == JSONValueCodec<V> {
        JSONValueCodec<V>()
    }
}
