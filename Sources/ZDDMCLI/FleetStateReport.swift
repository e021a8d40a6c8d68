import Foundation
import ZDDM

/// What `zddm control show` and `set` print: a migration's shared fleet state as one line, or one JSON object.
struct FleetStateReport: Sendable, Hashable, Encodable {
    var migration: String
    var stage: String
    var rate: Double
    var highWaterRate: Double
    var killswitch: Bool
    var behind: UInt64
    var caughtUp: UInt64
    /// Whether the change applier has caught up with everything New fell behind on (`caughtUp >= behind`).
    var isCaughtUp: Bool

    init(migration: String, state: FleetState) {
        self.migration = migration
        self.stage = state.stage.rawValue
        self.rate = state.rate
        self.highWaterRate = state.highWaterRate
        self.killswitch = state.killswitch
        self.behind = state.behind
        self.caughtUp = state.caughtUp
        self.isCaughtUp = state.isCaughtUp
    }

    /// One line, e.g. `migration accounts: stage dualwrite, rate 0.25, high-water rate 0.5, killswitch off,
    /// behind 1, caught up 1`.
    var line: String {
        var text = "migration \(String(reflecting: migration)): stage \(stage), rate \(rate), "
        text += "high-water rate \(highWaterRate), killswitch \(killswitch ? "on" : "off"), "
        text += "behind \(behind), caught up \(caughtUp)"
        if !isCaughtUp { text += " (New may be behind Old: reads stay on Old until the change applier catches up)" }
        return text
    }

    /// The report as one line of JSON with sorted keys.
    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
