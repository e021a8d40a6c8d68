/// The demo's row: an account, stored as JSON.
struct Account: Codable, Hashable, Sendable {
    var owner: String
    var balance: Int
    var version: Int
}
