import Foundation
import ZDDM

/// A fresh temporary directory under /tmp, removed by `remove()`.
struct TemporaryDirectory: Sendable {
    let path: String

    init() throws {
        path = "/tmp/zddm-store-tests-\(UUID().uuidString.lowercased())"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// A new unique file path inside the directory.
    func file(_ name: String = "db") -> String {
        "\(path)/\(name)-\(UUID().uuidString.lowercased()).sqlite"
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// A unique, valid table name.
func uniqueTableName(_ prefix: String) -> String {
    "\(prefix)_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16))"
}

/// The domain value of the schema-changing migration test.
struct Person: Codable, Equatable, Sendable {
    var fullName: String
    var email: String
}

/// Byte order of UTF-8, which SQLite's BINARY collation and PostgreSQL's "C" collation use.
@Sendable func utf8Order(_ lhs: String, _ rhs: String) -> Bool {
    Array(lhs.utf8).lexicographicallyPrecedes(Array(rhs.utf8))
}

/// A value string no error text may ever contain.
let distinctiveSecret = "SECRET-VALUE-7f3a9c-do-not-print"
