import Configuration
import ZDDM

/// One setting as read from a configuration snapshot.
enum ControlReading<Value: Sendable & Equatable>: Sendable, Equatable {
    /// No provider has the key.
    case absent
    /// A valid value.
    case value(Value)
    /// A value that cannot be used: what was found (as text) and why it was rejected.
    case invalid(found: String, reason: String)
}

/// The three settings of one migration as read from one snapshot.
struct ControlReadings: Sendable, Equatable {
    var rate: ControlReading<Double>
    var killswitch: ControlReading<Bool>
    var stage: ControlReading<MigrationStage>

    /// Reads a migration's settings from a snapshot.
    /// - Parameters:
    ///   - snapshot: The snapshot.
    ///   - keys: The migration's keys.
    init(snapshot: ConfigSnapshotReader, keys: MigrationControlKeys) {
        rate = Self.readRate(snapshot, keys.key(.rate))
        killswitch = Self.readKillswitch(snapshot, keys.key(.killswitch))
        stage = Self.readStage(snapshot, keys.key(.stage))
    }

    init(rate: ControlReading<Double>, killswitch: ControlReading<Bool>, stage: ControlReading<MigrationStage>) {
        self.rate = rate
        self.killswitch = killswitch
        self.stage = stage
    }

    private static func readRate(_ snapshot: ConfigSnapshotReader, _ key: ConfigKey) -> ControlReading<Double> {
        let number: Double
        if let value = snapshot.double(forKey: key) {
            number = value
        } else if let text = snapshot.string(forKey: key) {
            guard let value = Double(text.trimmingWhitespace()) else {
                return .invalid(found: text, reason: "not a number")
            }
            number = value
        } else {
            return .absent
        }
        do {
            try TrafficGate.validate(number)
        } catch {
            return .invalid(found: "\(number)", reason: "outside [0, 1]")
        }
        return .value(number)
    }

    private static func readKillswitch(_ snapshot: ConfigSnapshotReader, _ key: ConfigKey) -> ControlReading<Bool> {
        if let value = snapshot.bool(forKey: key) { return .value(value) }
        guard let text = snapshot.string(forKey: key) else {
            if let number = snapshot.double(forKey: key) {
                return .invalid(found: "\(number)", reason: "not a Boolean")
            }
            return .absent
        }
        switch text.trimmingWhitespace().lowercased() {
        case "true", "yes", "on", "1": return .value(true)
        case "false", "no", "off", "0": return .value(false)
        default: return .invalid(found: text, reason: "not a Boolean (true or false)")
        }
    }

    private static func readStage(_ snapshot: ConfigSnapshotReader, _ key: ConfigKey) -> ControlReading<MigrationStage>
    {
        guard let text = snapshot.string(forKey: key) else {
            if let number = snapshot.double(forKey: key) {
                return .invalid(found: "\(number)", reason: "not a stage name")
            }
            return .absent
        }
        guard let stage = MigrationStage(rawValue: text.trimmingWhitespace().lowercased()) else {
            let names = MigrationStage.allCases.map(\.rawValue).joined(separator: ", ")
            return .invalid(found: text, reason: "unknown stage (expected one of \(names))")
        }
        return .value(stage)
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and newlines.
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        var slice = Substring(self)
        while let first = slice.first, isSpace(first) { slice.removeFirst() }
        while let last = slice.last, isSpace(last) { slice.removeLast() }
        return String(slice)
    }
}
