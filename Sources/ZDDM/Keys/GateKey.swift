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

/// Writes the decimal digits of an integer without allocating: on the stack, with a loop over `UInt64` for every
/// value that fits one (a caller that knows the integer type gets it specialized and inlined), and a generic loop for
/// wider ones.
@inlinable
func withDecimalDigits<I: BinaryInteger, Result>(
    of value: I,
    _ body: (UnsafeRawBufferPointer) throws -> Result
) rethrows -> Result {
    if let magnitude = UInt64(exactly: value.magnitude) {
        return try withDecimalDigits(magnitude: magnitude, negative: value < 0, body)
    }
    return try withWideDecimalDigits(of: value, body)
}

/// "00", "01", …, "99", one after another: a constant in the binary, read without any set-up.
@usableFromInline
let decimalPairs: StaticString = """
    00010203040506070809101112131415161718192021222324252627282930313233343536373839\
    40414243444546474849505152535455565758596061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899
    """

/// The decimal digits of `magnitude`, after a `-` when `negative`.
@inlinable
func withDecimalDigits<Result>(
    magnitude: UInt64,
    negative: Bool,
    _ body: (UnsafeRawBufferPointer) throws -> Result
) rethrows -> Result {
    // 20 digits hold UInt64.max, and one more byte the sign.
    try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 21) { buffer in
        var end = buffer.count
        var rest = magnitude
        // Two digits per step, from a table of the pairs "00" to "99": half as many divisions, each by a constant.
        let pairs = decimalPairs.utf8Start
        while rest >= 100 {
            let (quotient, pair) = rest.quotientAndRemainder(dividingBy: 100)
            buffer[end &- 1] = pairs[Int(truncatingIfNeeded: pair) &* 2 &+ 1]
            buffer[end &- 2] = pairs[Int(truncatingIfNeeded: pair) &* 2]
            end &-= 2
            rest = quotient
        }
        if rest >= 10 {
            buffer[end &- 1] = pairs[Int(truncatingIfNeeded: rest) &* 2 &+ 1]
            buffer[end &- 2] = pairs[Int(truncatingIfNeeded: rest) &* 2]
            end &-= 2
        } else {
            end &-= 1
            buffer[end] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest)
        }
        if negative {
            end &-= 1
            buffer[end] = UInt8(ascii: "-")
        }
        return try body(UnsafeRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[end...])))
    }
}

/// The decimal digits of an integer wider than 64 bits.
@usableFromInline
func withWideDecimalDigits<I: BinaryInteger, Result>(
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
    @inlinable
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
extension Int128: GateKey {}
extension UInt128: GateKey {}
