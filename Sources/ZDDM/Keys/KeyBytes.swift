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
