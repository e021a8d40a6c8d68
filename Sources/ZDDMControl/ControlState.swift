import ZDDM

/// What applying a snapshot did to one setting.
enum ControlEvent: Sendable, Equatable {
    /// The gate now has the configured value.
    case applied(MigrationControlKeys.Setting, from: String, to: String)
    /// The configured value is not valid for the setting; the gate keeps its value.
    case rejected(MigrationControlKeys.Setting, found: String, reason: String)
    /// The gate refused the value (a stage transition it does not allow, or a rate the stage forbids); the gate
    /// keeps its value and the value is tried again with the next snapshot.
    case refused(MigrationControlKeys.Setting, value: String, reason: String)
}

/// The control state of one migration: which configured values have been applied, and which problems have
/// already been reported.
///
/// A configured value is applied when it differs from the last value applied for that setting, so a value changed
/// in the process by other means (an operator endpoint, a test) is not overwritten by unrelated configuration
/// changes. A problem is reported once per offending value, not at every snapshot.
struct ControlState: Sendable {
    private var applied: [MigrationControlKeys.Setting: String] = [:]
    private var reported: [MigrationControlKeys.Setting: String] = [:]

    /// Applies one snapshot's readings to a gate.
    ///
    /// Order: the killswitch when it turns on, then the stage, then the rate (then the stage again if the gate
    /// refused it before the rate changed, as `live` → `rampdown` with the rate raised to 1 at the same time), and
    /// the killswitch when it turns off, last.
    /// - Parameters:
    ///   - readings: The configured values.
    ///   - gate: The gate.
    /// - Returns: What happened, to be logged; problems already reported for the same value are left out.
    mutating func apply(_ readings: ControlReadings, to gate: TrafficGate) -> [ControlEvent] {
        var events: [ControlEvent] = []
        let killswitch = wanted(.killswitch, readings.killswitch, describe: { "\($0)" }, into: &events)
        let stage = wanted(.stage, readings.stage, describe: \.rawValue, into: &events)
        let rate = wanted(.rate, readings.rate, describe: { "\($0)" }, into: &events)

        if killswitch == true { applyKillswitch(true, gate: gate, into: &events) }
        var stageRefused = false
        if let stage { stageRefused = !applyStage(stage, gate: gate, into: &events, reportRefusal: false) }
        if let rate { applyRate(rate, gate: gate, into: &events) }
        if let stage, stageRefused, stageMayWaitForRate(stage) {
            _ = applyStage(stage, gate: gate, into: &events, reportRefusal: true)
        }
        if killswitch == false { applyKillswitch(false, gate: gate, into: &events) }
        return events
    }

    /// The value to apply for a setting, or `nil` when there is nothing to do; records invalid values.
    private mutating func wanted<Value>(
        _ setting: MigrationControlKeys.Setting,
        _ reading: ControlReading<Value>,
        describe: (Value) -> String,
        into events: inout [ControlEvent]
    ) -> Value? {
        switch reading {
        case .absent:
            applied[setting] = nil
            reported[setting] = nil
            return nil
        case .invalid(let found, let reason):
            report(setting, found) { events.append(.rejected(setting, found: found, reason: reason)) }
            return nil
        case .value(let value):
            return applied[setting] == describe(value) ? nil : value
        }
    }

    private mutating func report(_ setting: MigrationControlKeys.Setting, _ value: String, _ emit: () -> Void) {
        guard reported[setting] != value else { return }
        reported[setting] = value
        emit()
    }

    private mutating func succeeded(_ setting: MigrationControlKeys.Setting, _ value: String) {
        applied[setting] = value
        reported[setting] = nil
    }

    private mutating func applyKillswitch(_ on: Bool, gate: TrafficGate, into events: inout [ControlEvent]) {
        let before = gate.isKillswitchOn
        if before != on {
            gate.setKillswitch(on)
            events.append(.applied(.killswitch, from: "\(before)", to: "\(on)"))
        }
        succeeded(.killswitch, "\(on)")
    }

    /// Returns whether the gate is now in `stage`.
    private mutating func applyStage(
        _ stage: MigrationStage,
        gate: TrafficGate,
        into events: inout [ControlEvent],
        reportRefusal: Bool
    ) -> Bool {
        let before = gate.stage
        do {
            try gate.setStage(stage)
        } catch {
            // A refusal is reported once the rate has had its chance to make the transition possible.
            if reportRefusal || !stageMayWaitForRate(stage) {
                report(.stage, stage.rawValue) {
                    events.append(.refused(.stage, value: stage.rawValue, reason: Self.reason(error)))
                }
            }
            return false
        }
        if before != stage { events.append(.applied(.stage, from: before.rawValue, to: stage.rawValue)) }
        succeeded(.stage, stage.rawValue)
        return true
    }

    /// Only `rampdown` depends on the rate; other refusals are final for this snapshot.
    private func stageMayWaitForRate(_ stage: MigrationStage) -> Bool {
        stage == .rampdown
    }

    private mutating func applyRate(_ rate: Double, gate: TrafficGate, into events: inout [ControlEvent]) {
        let before = gate.rate
        if before != rate {
            do {
                try gate.setRate(rate)
            } catch {
                report(.rate, "\(rate)") {
                    events.append(.refused(.rate, value: "\(rate)", reason: Self.reason(error)))
                }
                return
            }
            events.append(.applied(.rate, from: "\(before)", to: "\(rate)"))
        }
        succeeded(.rate, "\(rate)")
    }

    private static func reason(_ error: any Error) -> String {
        (error as? ZDDMError)?.message ?? "\(error)"
    }
}
