import ArgumentParser
import Logging
import ServiceLifecycle
import Synchronization
import ZDDM

/// Where a pass run as a service leaves its result.
final class ResultBox<T: Sendable>: Sendable {
    private let value = Mutex<T?>(nil)
    var result: T? { value.withLock { $0 } }
    func set(_ result: T) { value.withLock { $0 = result } }
}

/// Runs one pass (a backfill's or a verify's) as a service and keeps its result.
struct PassRunner<T: Sendable>: Service {
    let pass: @Sendable () async throws -> T
    let result: ResultBox<T>

    func run() async throws {
        result.set(try await pass())
    }
}

/// Runs a pass as a service: Ctrl-C (SIGINT) or SIGTERM makes it finish the work in hand, save, and return.
func runAsService<T: Sendable>(_ pass: @escaping @Sendable () async throws -> T) async throws -> T {
    var logger = Logger(label: "zddm")
    logger.logLevel = .warning
    let result = ResultBox<T>()
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: [
                .init(
                    service: PassRunner(pass: pass, result: result),
                    successTerminationBehavior: .gracefullyShutdownGroup
                )
            ],
            gracefulShutdownSignals: [.sigint, .sigterm],
            logger: logger
        )
    )
    try await group.run()
    guard let value = result.result else { throw ExitCode(1) }
    return value
}
