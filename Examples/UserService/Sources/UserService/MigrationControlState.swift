/// The gate's settings as saved between runs, so that an operator's rate and killswitch survive a restart and the
/// high-water rate (which keys New may hold) is never forgotten.
struct MigrationControlState: Codable, Sendable, Equatable {
    var rate: Double
    var highWaterRate: Double
    var killswitch: Bool
}
