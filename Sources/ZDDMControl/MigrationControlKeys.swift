public import Configuration

/// The configuration keys that control one migration.
///
/// For a migration named `orders`:
///
/// | setting | configuration key | environment variable | value |
/// | --- | --- | --- | --- |
/// | rate | `zddm.orders.rate` | `ZDDM_ORDERS_RATE` | a number in `[0, 1]` |
/// | killswitch | `zddm.orders.killswitch` | `ZDDM_ORDERS_KILLSWITCH` | `true` or `false` |
/// | stage | `zddm.orders.stage` | `ZDDM_ORDERS_STAGE` | `off`, `dualwrite`, `shadow`, `live`, `rampdown`, `complete` |
///
/// The configuration key is `["zddm", migration, setting]`; file providers read it as nested objects
/// (`{"zddm": {"orders": {"rate": 0.5}}}`) or as one dotted key (`{"zddm.orders.rate": 0.5}`). The environment
/// variable is what swift-configuration's `EnvironmentVariablesProvider` derives from that key: a lower-case letter
/// followed by an upper-case one gets an `_` between them, every letter is upper-cased, every character that is
/// neither a letter nor a digit becomes `_`, and the components are joined with `_`. So `user-profiles` gives
/// `ZDDM_USER_PROFILES_RATE`, and so does `userProfiles`. Keep migration names free of dots: a dot splits the
/// name into two key components.
public struct MigrationControlKeys: Sendable, Hashable {
    /// One controllable setting of a migration.
    public enum Setting: String, Sendable, Hashable, CaseIterable {
        /// The gate's rate, a number in `[0, 1]`.
        case rate
        /// The killswitch, a Boolean.
        case killswitch
        /// The migration's stage, one of ``ZDDM/MigrationStage``'s raw values.
        case stage
    }

    /// The migration's name, as given to the proxy.
    public let migration: String

    /// Creates the keys of a migration.
    /// - Parameter migration: The migration's name.
    public init(migration: String) {
        self.migration = migration
    }

    /// The configuration key of a setting.
    /// - Parameter setting: The setting.
    /// - Returns: `["zddm", migration, setting]`.
    public func key(_ setting: Setting) -> ConfigKey {
        ConfigKey(["zddm", migration, setting.rawValue])
    }

    /// The dotted form of a setting's key, as it appears in files and logs.
    /// - Parameter setting: The setting.
    /// - Returns: For example `zddm.orders.rate`.
    public func dotted(_ setting: Setting) -> String {
        "zddm.\(migration).\(setting.rawValue)"
    }

    /// The environment variable that `EnvironmentVariablesProvider` reads for a setting.
    /// - Parameter setting: The setting.
    /// - Returns: For example `ZDDM_ORDERS_RATE`.
    public func environmentVariable(_ setting: Setting) -> String {
        ["zddm", migration, setting.rawValue].map(Self.environmentComponent).joined(separator: "_")
    }

    /// Applies swift-configuration's environment key encoding to one key component.
    private static func environmentComponent(_ component: String) -> String {
        var separated = ""
        var previous: Character?
        for character in component {
            if let previous, previous.isLowercase, character.isUppercase { separated.append("_") }
            separated.append(character)
            previous = character
        }
        return separated.uppercased().map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
    }
}
