import ServiceLifecycle
import Synchronization
import ZDDM

/// Where the CLI's backfill service leaves its final progress.
final class ResultBox: Sendable {
    private let value = Mutex<BackfillProgress?>(nil)
    var progress: BackfillProgress? { value.withLock { $0 } }
    func set(_ progress: BackfillProgress) { value.withLock { $0 = progress } }
}

/// Runs one backfill pass as a service and keeps its final progress.
struct BackfillRunner: Service {
    /// Runs the pass: `Backfill.runPass()`.
    let pass: @Sendable () async throws -> BackfillProgress
    let result: ResultBox

    func run() async throws {
        result.set(try await pass())
    }
}
