/// A key the traffic gate can hash the same way in every process and every language.
///
/// The gate never uses Swift's `Hasher` or `hashValue`: both are seeded per process, so two instances of one
/// service would disagree about which keys take part. A `GateKey` instead hands the hasher a fixed byte
/// representation of itself:
///
/// | key type | bytes |
/// | --- | --- |
/// | `String`, `Substring` | the UTF-8 bytes |
/// | every standard integer type | the decimal ASCII digits, with a leading `-` when negative (`42` → `"42"`, `-7` → `"-7"`) |
/// | `[UInt8]`, ``KeyBytes`` | the bytes as they are |
///
/// Conform your own key types by giving their canonical bytes, for example a UUID's lowercase string form.
/// Two keys that are equal must give equal bytes.
public protocol GateKey: Hashable, Sendable {
    /// Calls `body` with the key's canonical bytes and returns what it returns.
    ///
    /// - Parameter body: A closure that reads the bytes; the buffer is valid only during the call.
    /// - Returns: What `body` returns.
    /// - Throws: What `body` throws.
    func withGateBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result
}

extension GateKey {
    /// The key's canonical bytes, as given to the gate's hasher.
    public var gateBytes: [UInt8] {
        withGateBytes { Array($0) }
    }
}

extension String: GateKey {
    public func withGateBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        var copy = self
        return try copy.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
    }
}

extension Substring: GateKey {
    public func withGateBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        var copy = self
        return try copy.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
    }
}

extension Array: GateKey where Element == UInt8 {
    public func withGateBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try withUnsafeBytes(body)
    }
}

/// Writes the decimal digits of an integer without allocating.
func withDecimalDigits<I: BinaryInteger, Result>(
    of value: I,
    _ body: (UnsafeRawBufferPointer) throws -> Result
) rethrows -> Result {
    // 40 digits hold UInt128.max (39 digits) and a sign.
    try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 41) { buffer in
        var end = buffer.count
        var magnitude = value.magnitude
        repeat {
            let (quotient, remainder) = magnitude.quotientAndRemainder(dividingBy: 10)
            end -= 1
            buffer[end] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remainder)
            magnitude = quotient
        } while magnitude != 0
        if value < 0 {
            end -= 1
            buffer[end] = UInt8(ascii: "-")
        }
        return try body(UnsafeRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[end...])))
    }
}

extension GateKey where Self: BinaryInteger {
    /// Calls `body` with the integer's decimal ASCII digits, with a leading `-` when negative.
    ///
    /// - Parameter body: A closure that reads the bytes; the buffer is valid only during the call.
    /// - Returns: What `body` returns.
    /// - Throws: What `body` throws.
    public func withGateBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try withDecimalDigits(of: self, body)
    }
}

extension Int: GateKey {}
extension Int8: GateKey {}
extension Int16: GateKey {}
extension Int32: GateKey {}
extension Int64: GateKey {}
extension UInt: GateKey {}
extension UInt8: GateKey {}
extension UInt16: GateKey {}
extension UInt32: GateKey {}
extension UInt64: GateKey {}
