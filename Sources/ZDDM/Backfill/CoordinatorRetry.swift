import Foundation
import Logging
import ServiceLifecycle

/// How the chunked runs call their coordinator: a failure is retried with a delay that doubles up to 5 seconds,
/// for as long as the run is not cancelled, so a coordinator that is unreachable for a while makes workers wait,
/// not fail. Errors that retrying cannot cure (bad input, an unsupported format, a key that does not decode, and
/// any error that says it is not retryable, such as a missing table or permission) are thrown at once.
struct CoordinatorRetry: Sendable {
    let run: String
    let kind: String
    let firstDelay: Duration
    let clock: MigrationClock
    let logger: Logger

    func callAsFunction<R: Sendable>(_ body: @Sendable () async throws -> R) async throws -> R {
        var delay = firstDelay
        var failures = 0
        while true {
            do {
                return try await body()
            } catch {
                // Stopping (cancelled, or a graceful shutdown such as Ctrl-C): no more waiting for the coordinator.
                if Task.isCancelled || Task.isShuttingDownGracefully { throw error }
                guard ZDDMError.isRetryable(error) else {
                    logger.error(
                        "\(kind) coordinator failed in a way retrying cannot cure; the run stops here",
                        metadata: ["zddm.\(kind)": "\(run)", "zddm.error": "\(ZDDMError.describe(error))"]
                    )
                    throw error
                }
                failures += 1
                logger.warning(
                    "\(kind) coordinator failed; retrying",
                    metadata: [
                        "zddm.\(kind)": "\(run)", "zddm.failures": "\(failures)",
                        "zddm.error": "\(ZDDMError.describe(error))",
                    ]
                )
                try await clock.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }
}

/// The settings every chunked run checks the same way.
enum ChunkedRunSettings {
    /// This process's workers' names when none is given: the host name and process identifier.
    static var defaultWorkerName: String {
        "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
    }

    /// Refuses a run name, worker count, chunk size or lease out of range.
    static func validate(kind: String, run: String, workers: Int, chunkRows: Int, lease: Duration) throws {
        guard !run.isEmpty else { throw ZDDMError(.invalidArgument, message: "a \(kind) run needs a name") }
        guard workers >= 1 else {
            throw ZDDMError(.invalidArgument, message: "workers must be at least 1, got \(workers)")
        }
        guard chunkRows >= 1 else {
            throw ZDDMError(.invalidArgument, message: "chunk rows must be at least 1, got \(chunkRows)")
        }
        guard lease > .zero else {
            throw ZDDMError(.invalidArgument, message: "a chunk's lease must be longer than zero")
        }
    }
}

extension BackfillRunInfo {
    /// Refuses a worker that disagrees with the run: another gate rate, or versions where the run has none (or
    /// the reverse).
    func refuseMismatch(kind: String, rate: Double, usesVersions: Bool, scope: String?) throws {
        guard self.rate == rate else {
            throw ZDDMError(
                .invalidArgument,
                message: "\(kind) run '\(run)' was started at rate \(self.rate), but this worker's gate is at "
                    + "rate \(rate); use the run's rate, or start a new run"
            )
        }
        guard self.usesVersions == usesVersions else {
            throw ZDDMError(
                .invalidArgument,
                message: "\(kind) run '\(run)' was started "
                    + (self.usesVersions
                        ? "with versions, but this worker's stores have none"
                        : "without versions, but this worker's stores have them")
                    + "; start a new run"
            )
        }
        if let scope, let theirs = self.scope, theirs != scope {
            throw ZDDMError(
                .invalidArgument,
                message: "\(kind) run '\(run)' covers \(theirs), but this worker \(scope); use another run name"
            )
        }
    }
}
