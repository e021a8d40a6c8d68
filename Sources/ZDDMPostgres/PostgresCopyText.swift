import PostgresNIO
import ZDDMSQL

/// Rows in the text format of `COPY … FROM STDIN`, written straight into buffers of at most ``chunkSize`` bytes
/// each (or one row, when a row is larger), so that each buffer can be sent whole by one `COPY`.
///
/// Fields are separated by a tab and rows end with a newline. `NULL` is `\N`. In text, a backslash, newline,
/// carriage return, tab, backspace, form feed and vertical tab are written as `\\`, `\n`, `\r`, `\t`, `\b`, `\f`
/// and `\v`, so no field can end a row or the data early (`\.` on a line of its own). Bytes are `bytea`'s hex input
/// form, whose leading backslash is itself escaped: `\\x` then two lowercase hex digits a byte. Integers are
/// decimal, booleans `t` or `f`.
struct PostgresCopyText {
    /// The size a buffer may reach; a row that does not fit starts the next buffer.
    static var chunkSize: Int { 16 << 20 }

    private var chunks: [ByteBuffer] = []
    private var buffer: ByteBuffer
    private var atRowStart = true
    private var rowStart = 0
    /// Whether some text written holds a NUL character, which PostgreSQL's text cannot store.
    private(set) var containsNul = false

    /// Starts empty.
    /// - Parameter expectedBytes: About how many bytes the rows will take, so the first buffer is allocated once.
    init(expectedBytes: Int) {
        buffer = ByteBufferAllocator().buffer(capacity: min(max(expectedBytes, 256), Self.chunkSize))
    }

    /// The buffers holding all rows written, in order; none is empty.
    mutating func finish() -> [ByteBuffer] {
        if buffer.readableBytes > 0 { chunks.append(buffer) }
        buffer = ByteBuffer()
        let done = chunks
        chunks = []
        atRowStart = true
        rowStart = 0
        return done
    }

    /// Ends the current row; when the buffer has grown past ``chunkSize``, moves the row to a new buffer.
    mutating func endRow() {
        buffer.writeInteger(UInt8(ascii: "\n"))
        atRowStart = true
        if buffer.readableBytes > Self.chunkSize {
            if rowStart > 0, let row = buffer.getSlice(at: rowStart, length: buffer.writerIndex - rowStart) {
                buffer.moveWriterIndex(to: rowStart)
                chunks.append(buffer)
                buffer = ByteBufferAllocator().buffer(capacity: max(Self.chunkSize, row.readableBytes))
                buffer.writeImmutableBuffer(row)
            } else {
                chunks.append(buffer)
                buffer = ByteBufferAllocator().buffer(capacity: Self.chunkSize)
            }
        }
        rowStart = buffer.writerIndex
    }

    /// Appends `NULL`.
    mutating func appendNull() {
        separate()
        buffer.writeStaticString("\\N")
    }

    /// Appends `t` or `f`.
    mutating func appendBool(_ value: Bool) {
        separate()
        buffer.writeInteger(value ? UInt8(ascii: "t") : UInt8(ascii: "f"))
    }

    /// Appends a signed decimal integer.
    mutating func appendInteger(_ value: Int64) {
        separate()
        _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 20) { raw in
            var magnitude = value.magnitude
            var digits = 1
            var limit: UInt64 = 10
            while digits < 20 && magnitude >= limit {
                digits += 1
                limit &*= 10
            }
            var start = 0
            if value < 0 {
                raw[0] = UInt8(ascii: "-")
                start = 1
            }
            var index = start + digits
            repeat {
                index -= 1
                raw[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
            } while index > start
            return start + digits
        }
    }

    /// Appends text, escaped.
    mutating func appendText(_ text: String) {
        separate()
        var text = text
        if text.withUTF8({ appendEscaped($0) }) { containsNul = true }
    }

    /// Appends bytes as `bytea` hex input.
    mutating func appendBytes(_ bytes: [UInt8]) {
        separate()
        bytes.withUnsafeBufferPointer { source in
            _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 3 + 2 * source.count) { raw in
                raw[0] = UInt8(ascii: "\\")
                raw[1] = UInt8(ascii: "\\")
                raw[2] = UInt8(ascii: "x")
                let digits = Self.hexDigits.utf8Start
                var index = 3
                for byte in source {
                    raw[index] = digits[Int(byte >> 4)]
                    raw[index + 1] = digits[Int(byte & 0x0f)]
                    index += 2
                }
                return index
            }
        }
    }

    /// Appends a key of any kind.
    mutating func appendKey(_ key: SQLKeyValue) {
        switch key {
        case .text(let text): appendText(text)
        case .integer(let integer): appendInteger(integer)
        case .bytes(let bytes): appendBytes(bytes)
        }
    }

    private static var hexDigits: StaticString { "0123456789abcdef" }

    private mutating func separate() {
        if atRowStart {
            atRowStart = false
        } else {
            buffer.writeInteger(UInt8(ascii: "\t"))
        }
    }

    /// Writes UTF-8 text escaped; returns whether it holds a NUL character.
    private mutating func appendEscaped(_ source: UnsafeBufferPointer<UInt8>) -> Bool {
        var nul = false
        _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 2 * source.count) { raw in
            var index = 0
            for byte in source {
                let escape: UInt8
                switch byte {
                case 0:
                    nul = true
                    raw[index] = byte
                    index += 1
                    continue
                case UInt8(ascii: "\\"): escape = UInt8(ascii: "\\")
                case UInt8(ascii: "\n"): escape = UInt8(ascii: "n")
                case UInt8(ascii: "\r"): escape = UInt8(ascii: "r")
                case UInt8(ascii: "\t"): escape = UInt8(ascii: "t")
                case 0x08: escape = UInt8(ascii: "b")
                case 0x0c: escape = UInt8(ascii: "f")
                case 0x0b: escape = UInt8(ascii: "v")
                default:
                    raw[index] = byte
                    index += 1
                    continue
                }
                raw[index] = UInt8(ascii: "\\")
                raw[index + 1] = escape
                index += 2
            }
            return index
        }
        return nul
    }
}
