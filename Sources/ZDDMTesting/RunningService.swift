public import ZDDM

/// Runs a migration's background work (``ZDDM/MigrationCore/run()``) for the duration of `body`, as an application
/// would in its `ServiceGroup`: `body` starts once the work is being accepted; afterwards the background work is
/// finished (``ZDDM/MigrationCore/waitForBackgroundWork()``) and the service stopped.
/// - Parameters:
///   - proxy: The proxy whose core's background work runs.
///   - body: The test.
/// - Returns: What `body` returns.
/// - Throws: What `body` throws.
public func withBackgroundWork<Old, New, R: Sendable>(
    of proxy: MigrationProxy<Old, New>,
    _ body: () async throws -> R
) async throws -> R {
    try await withBackgroundWork(of: proxy.core, body)
}

/// Runs a migration core's background work for the duration of `body`; see
/// ``withBackgroundWork(of:_:)-(MigrationProxy<Old,New>,_)``.
/// - Parameters:
///   - core: The core whose background work runs.
///   - body: The test.
/// - Returns: What `body` returns.
/// - Throws: What `body` throws.
public func withBackgroundWork<Old, New, R: Sendable>(
    of core: MigrationCore<Old, New>,
    _ body: () async throws -> R
) async throws -> R {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await core.run() }
        await core.waitUntilAcceptingBackgroundWork()
        do {
            let result = try await body()
            await core.waitForBackgroundWork()
            group.cancelAll()
            return result
        } catch {
            group.cancelAll()
            throw error
        }
    }
}
