import ZDDM

/// A table or column name that is safe to put into SQL: validated, then always used quoted.
///
/// A valid identifier starts with an ASCII letter or `_`, continues with ASCII letters, digits or `_`, and is 1 to
/// 63 characters long (PostgreSQL's limit), so it can never carry a quote, a semicolon, a space or a comment.
/// Validation happens when the identifier is created, before any SQL runs.
public struct SQLIdentifier: Sendable, Hashable, CustomStringConvertible {
    /// The name as given.
    public let name: String

    /// The longest accepted name, in characters.
    public static let maximumLength = 63

    /// Validates a name.
    /// - Parameters:
    ///   - name: The table or column name.
    ///   - role: What the name is for, used in the error message (for example `"table name"`).
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` naming `role` when the name is
    ///   not a valid identifier.
    public init(_ name: String, role: String = "identifier") throws {
        guard Self.isValid(name) else {
            throw ZDDMError(
                .invalidArgument,
                message: "invalid \(role) \(Self.excerpt(name)): an SQL identifier must match "
                    + "^[A-Za-z_][A-Za-z0-9_]{0,62}$ (letters, digits and underscores, at most 63 characters, "
                    + "not starting with a digit)"
            )
        }
        self.name = name
    }

    /// Whether a name is a valid identifier.
    /// - Parameter name: The name to check.
    /// - Returns: `true` when the name matches `^[A-Za-z_][A-Za-z0-9_]{0,62}$`.
    public static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= maximumLength else { return false }
        func isLetter(_ byte: UInt8) -> Bool {
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) || byte == UInt8(ascii: "_")
        }
        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        return isLetter(first) && bytes.dropFirst().allSatisfy { isLetter($0) || isDigit($0) }
    }

    /// The identifier in double quotes, ready to be put into SQL.
    public var quoted: String { "\"\(name)\"" }

    /// The identifier in double quotes.
    public var description: String { quoted }

    /// A short, printable rendering of a rejected name for error messages: at most 40 characters, with control
    /// characters escaped.
    private static func excerpt(_ name: String) -> String {
        let limited = name.count > 40 ? String(name.prefix(40)) + "…" : name
        return String(reflecting: limited)
    }
}
