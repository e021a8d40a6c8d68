import ServiceLifecycle
import Synchronization
import ZDDM

/// Where the CLI's backfill service leaves its final progress.
final class ResultBox: Sendable {
    private let value = Mutex<BackfillProgress?>(nil)
    var progress: BackfillProgress? { value.withLock { $0 } }
    func set(_ progress: BackfillProgress) { value.withLock { $0 = progress } }
}

/// Runs a backfill as a service and keeps its final progress.
struct BackfillRunner<Old: KeyValueStore, New: KeyValueStore, Checkpoints: BackfillCheckpointStore>: Service
where
    Old.Key == New.Key,
    Old.Value == New.Value,
    Old.Key: GateKey,
    Old.Key: Codable,
    Checkpoints.Key == Old.Key
{
    let backfill: Backfill<Old, New, Checkpoints>
    let result: ResultBox

    func run() async throws {
        result.set(try await backfill.runPass())
    }
}
