/// A key made of raw bytes, ordered the way SQLite and PostgreSQL order `BLOB`/`bytea` values.
///
/// Ordering is lexicographic over unsigned bytes; a proper prefix comes first. The gate hashes the bytes as
/// they are.
public struct KeyBytes: GateKey, Comparable, Sendable, CustomStringConvertible {
    /// The key's bytes.
    public var bytes: [UInt8]

    /// Creates a key from bytes.
    /// - Parameter bytes: The key's bytes.
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Creates a key from any sequence of bytes.
    /// - Parameter bytes: The key's bytes.
    public init(_ bytes: some Sequence<UInt8>) {
        self.bytes = Array(bytes)
    }

    public static func < (lhs: KeyBytes, rhs: KeyBytes) -> Bool {
        lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }

    public func withGateBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try bytes.withUnsafeBytes(body)
    }

    /// The bytes in lowercase hexadecimal, prefixed with `0x`.
    public var description: String {
        let digits: [Character] = Array("0123456789abcdef")
        var text = "0x"
        text.reserveCapacity(2 + bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return text
    }
}

extension KeyBytes: Codable {
    /// Decodes the key from a lowercase or uppercase hexadecimal string, with or without `0x`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let bytes = KeyBytes(hex: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a hexadecimal byte string")
        }
        self = bytes
    }

    /// Encodes the key as its ``description``, a `0x`-prefixed hexadecimal string.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// Parses a hexadecimal string, with or without a `0x` prefix.
    /// - Parameter hex: An even number of hexadecimal digits.
    public init?(hex: String) {
        var digits = Substring(hex)
        if digits.hasPrefix("0x") { digits = digits.dropFirst(2) }
        guard digits.count.isMultiple(of: 2) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            guard let byte = UInt8(digits[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self.bytes = bytes
    }
}
