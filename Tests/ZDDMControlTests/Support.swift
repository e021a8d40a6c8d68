import Configuration
import Foundation
import InMemoryLogging
import Logging
import ServiceLifecycle
import Testing
import ZDDM
import ZDDMControl

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
/// - Returns: Whether the condition held before the deadline.
func eventually(
    timeout: Duration = .seconds(60),
    _ condition: () throws -> Bool
) async throws -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return try condition()
}

/// A logger that keeps every entry, and its handler.
func memoryLogger() -> (Logger, InMemoryLogHandler) {
    let handler = InMemoryLogHandler()
    var logger = Logger(label: "test", factory: { _ in handler })
    logger.logLevel = .debug
    return (logger, handler)
}

/// The `error` entries that name a key and a value.
func errors(_ handler: InMemoryLogHandler, key: String, value: String) -> [InMemoryLogHandler.Entry] {
    handler.entries.filter { entry in
        entry.level == .error && "\(entry.message)".contains(key) && "\(entry.message)".contains(value)
            && entry.metadata["zddm.config.key"] == .string(key)
            && entry.metadata["zddm.config.value"] == .string(value)
    }
}

/// A temporary JSON control file.
struct ControlFile {
    let folder: URL
    let url: URL

    init() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("zddm-control-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        url = folder.appendingPathComponent("control.json")
    }

    /// Replaces the file's contents atomically (write a temporary file, then rename it over the old one).
    func write(_ json: String) throws {
        try Data(json.utf8).write(to: url, options: .atomic)
    }

    func remove() {
        try? FileManager.default.removeItem(at: folder)
    }
}

/// Runs a service in its own service group until `body` returns, then shuts the group down gracefully.
/// - Returns: How long the graceful shutdown took.
@discardableResult
func withRunningService(
    _ service: some Service,
    _ body: () async throws -> Void
) async throws -> Duration {
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: [.init(service: service)],
            logger: Logger(label: "group", factory: { _ in SwiftLogNoOpLogHandler() })
        )
    )
    let running = Task { try await group.run() }
    do {
        try await body()
    } catch {
        await group.triggerGracefulShutdown()
        _ = try? await running.value
        throw error
    }
    let clock = ContinuousClock()
    let start = clock.now
    await group.triggerGracefulShutdown()
    try await running.value
    return clock.now - start
}
