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
    /// The value of `behind` before the latest clean verify pass began; absent when none was recorded.
    var verifiedBehind: UInt64?
    /// Whether live → rampdown is permitted now (the stage is live and nothing is missing).
    var rampdownPermitted: Bool
    /// What rampdown still needs besides the stage, in full (empty when nothing).
    var rampdownNeeds: [String]
    /// The same, in a few words each, for the line.
    private var rampdownNeedsShort: [String]

    init(migration: String, state: FleetState) {
        self.migration = migration
        self.stage = state.stage.rawValue
        self.rate = state.rate
        self.highWaterRate = state.highWaterRate
        self.killswitch = state.killswitch
        self.behind = state.behind
        self.caughtUp = state.caughtUp
        self.isCaughtUp = state.isCaughtUp
        self.verifiedBehind = state.verifiedBehind
        self.rampdownPermitted = state.permitsRampdown
        self.rampdownNeeds = state.missingForRampdown
        var short: [String] = []
        if state.rate != 1 { short.append("rate 1") }
        if state.killswitch { short.append("the killswitch off") }
        if !state.isCaughtUp { short.append("the change applier caught up") }
        if !state.isVerified { short.append("a clean verify pass (zddm verify --migration)") }
        self.rampdownNeedsShort = short
    }

    private enum CodingKeys: String, CodingKey {
        case migration, stage, rate, highWaterRate, killswitch, behind, caughtUp, isCaughtUp, verifiedBehind
        case rampdownPermitted, rampdownNeeds
    }

    /// One line, e.g. `migration accounts: stage live, rate 1.0, high-water rate 1.0, killswitch off, behind 2,
    /// caught up 2; clean verify pass recorded at behind 2; rampdown permitted`. In stage `live`, it says whether
    /// rampdown is permitted, or what it needs.
    var line: String {
        var text = "migration \(String(reflecting: migration)): stage \(stage), rate \(rate), "
        text += "high-water rate \(highWaterRate), killswitch \(killswitch ? "on" : "off"), "
        text += "behind \(behind), caught up \(caughtUp)"
        if !isCaughtUp { text += " (New may be behind Old: reads stay on Old until the change applier catches up)" }
        if let verifiedBehind {
            text += "; clean verify pass recorded at behind \(verifiedBehind)"
        } else {
            text += "; no clean verify pass recorded"
        }
        if stage == MigrationStage.live.rawValue {
            text +=
                rampdownPermitted
                ? "; rampdown permitted" : "; rampdown needs " + rampdownNeedsShort.joined(separator: ", ")
        }
        return text
    }

    /// The report as one line of JSON with sorted keys.
    func json() throws -> String { try sortedJSON(self) }
}
