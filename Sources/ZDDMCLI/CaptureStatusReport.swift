import Foundation
import ZDDM

/// What `zddm capture status` prints: one line for people, or one JSON object for scripts.
struct CaptureStatusReport: Sendable, Hashable, Encodable {
    /// The change table's backlog.
    struct Backlog: Sendable, Hashable, Encodable {
        /// Entries the change applier has not yet applied and removed.
        var entries: Int
        /// The oldest entry's age in seconds, by the database's clock; `nil` when the table is empty.
        var oldestAgeSeconds: Double?

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(entries, forKey: .entries)
            try container.encode(oldestAgeSeconds, forKey: .oldestAgeSeconds)
        }

        private enum CodingKeys: String, CodingKey {
            case entries, oldestAgeSeconds
        }
    }

    /// The captured table's name.
    var table: String
    /// The database, without its password.
    var database: String
    /// Whether change capture is installed and current.
    var installed: Bool
    /// What is missing or out of date, by name.
    var missing: [String]
    /// The backlog; `nil` when there is no change table.
    var backlog: Backlog?

    init(table: String, database: String, missing: [String], backlog: ChangeBacklog?) {
        self.table = table
        self.database = database
        self.installed = missing.isEmpty
        self.missing = missing
        self.backlog = backlog.map { backlog in
            Backlog(entries: backlog.entries, oldestAgeSeconds: backlog.oldestAge.map(Self.seconds))
        }
    }

    /// One line: `capture on table "kv" in sqlite:/tmp/old.sqlite: installed; backlog 3 entries, oldest 1.2 s old`.
    var line: String {
        var text = "capture on table \"\(table)\" in \(database): "
        text += installed ? "installed" : "not installed (missing: \(missing.joined(separator: ", ")))"
        guard let backlog else { return text + "; no change table" }
        text += "; backlog \(backlog.entries) \(backlog.entries == 1 ? "entry" : "entries")"
        if let age = backlog.oldestAgeSeconds { text += String(format: ", oldest %.1f s old", age) }
        return text
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(table, forKey: .table)
        try container.encode(database, forKey: .database)
        try container.encode(installed, forKey: .installed)
        try container.encode(missing, forKey: .missing)
        try container.encode(backlog, forKey: .backlog)
    }

    private enum CodingKeys: String, CodingKey {
        case table, database, installed, missing, backlog
    }

    /// The report as one line of JSON with sorted keys.
    func json() throws -> String { try sortedJSON(self) }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
