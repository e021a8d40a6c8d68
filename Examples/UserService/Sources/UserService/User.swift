public import Hummingbird

/// A user of the service: the value stored under a numeric id in both the Old and the New table.
public struct User: Codable, Sendable, Equatable, ResponseCodable {
    /// The user's display name.
    public var name: String
    /// The user's e-mail address.
    public var email: String

    /// Creates a user.
    /// - Parameters:
    ///   - name: The display name.
    ///   - email: The e-mail address.
    public init(name: String, email: String) {
        self.name = name
        self.email = email
    }
}
