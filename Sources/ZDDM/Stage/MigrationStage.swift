/// Where a migration stands, named as LaunchDarkly's migration flags name their stages.
///
/// | stage | reads (keys the gate admits) | writes and deletes | authoritative |
/// | --- | --- | --- | --- |
/// | `off` | Old | Old | Old |
/// | `dualwrite` | Old | Old, then New | Old |
/// | `shadow` | Old (returned) and New (compared in the background) | Old, then New | Old |
/// | `live` | New, filled from Old on a miss (the original ZDDM) | Old, then New | Old |
/// | `rampdown` | New, filled from Old on a miss | New, then Old | New |
/// | `complete` | New | New | New |
///
/// Keys the gate does not admit, and every key while the killswitch is on (stages `off` to `live`), behave as in
/// `off`. The killswitch and the rate have no effect in `rampdown` and `complete`, where every key is in New.
///
/// Transitions (``TrafficGate/setStage(_:)``):
/// - between `off`, `dualwrite`, `shadow` and `live`: any, at any time;
/// - `live` → `rampdown`: only at rate 1, with a clean verify pass since the last event that could have left New
///   behind (``TrafficGate/isRampdownPermitted``);
/// - `rampdown` → `off`…`live` (rollback): only while no write to Old failed during `rampdown`, so Old is not
///   behind New; otherwise reconcile Old first (a verify-and-repair pass with the roles swapped);
/// - `rampdown` → `complete`: any time;
/// - from `complete`: none (Old is no longer written; going back needs a new migration the other way).
public enum MigrationStage: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    case off
    case dualwrite
    case shadow
    case live
    case rampdown
    case complete

    /// Whether Old is the source of truth in this stage.
    public var oldIsAuthoritative: Bool {
        switch self {
        case .off, .dualwrite, .shadow, .live: true
        case .rampdown, .complete: false
        }
    }

    public var description: String { rawValue }

    var code: UInt8 {
        switch self {
        case .off: 0
        case .dualwrite: 1
        case .shadow: 2
        case .live: 3
        case .rampdown: 4
        case .complete: 5
        }
    }

    init(code: UInt8) {
        switch code {
        case 0: self = .off
        case 1: self = .dualwrite
        case 2: self = .shadow
        case 4: self = .rampdown
        case 5: self = .complete
        default: self = .live
        }
    }
}
