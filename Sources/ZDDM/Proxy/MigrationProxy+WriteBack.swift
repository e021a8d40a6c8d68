public import Foundation
import Synchronization

/// Durable evidence that a write-back session is running, so that a process that dies with New writes still
/// queued is noticed by the next one.
public protocol WriteBackMarker: Sendable {
    /// Whether the marker is set (a session started and did not end cleanly).
    func isSet() async throws -> Bool
    /// Sets the marker durably.
    func set() async throws
    /// Clears the marker.
    func clear() async throws
}

/// A ``WriteBackMarker`` kept as a file.
public struct FileWriteBackMarker: WriteBackMarker {
    /// The marker file.
    public let url: URL

    /// Creates the marker.
    /// - Parameter url: The file; its folder must exist.
    public init(url: URL) {
        self.url = url
    }

    public func isSet() async throws -> Bool {
        FileManager.default.fileExists(atPath: url.path)
    }

    public func set() async throws {
        do {
            try Data("zddm write-back session\n".utf8).write(to: url, options: .atomic)
        } catch {
            throw ZDDMError(
                .io,
                message: "cannot write the write-back marker \(url.path)",
                underlying: error
            )
        }
    }

    public func clear() async throws {
        guard FileManager.default.fileExists(atPath: url.path) else { return }
        do {
            try FileManager.default.removeItem(at: url)
        } catch {
            throw ZDDMError(.io, message: "cannot remove the write-back marker \(url.path)", underlying: error)
        }
    }
}

/// Whether write-back is on, its queue bound, and the New steps pending.
final class WriteBackState: Sendable {
    private let enabled = Atomic<Bool>(false)
    private let bound = Atomic<Int>(0)
    /// New steps acknowledged to their callers and not finished.
    let pending = InFlightLimit()

    var isEnabled: Bool { enabled.load(ordering: .acquiring) }
    var maxPending: Int { bound.load(ordering: .acquiring) }

    func enable(maxPending: Int) {
        bound.store(maxPending, ordering: .releasing)
        enabled.store(true, ordering: .releasing)
    }

    func disable() {
        enabled.store(false, ordering: .releasing)
    }
}

extension MigrationProxy {
    /// Starts write-back (the original ZDDM's stretch goal): writes and deletes return once Old has them, and New's
    /// step follows in the background (the proxy's ``run()`` must be running; without it New's step runs before
    /// the write returns), through a bounded queue.
    ///
    /// - While a key's New step is pending, reads of it are answered by Old (never by New's older copy).
    /// - When `maxPending` New steps are pending, further writes do their New step before returning, as without
    ///   write-back (back-pressure, never a dropped write).
    /// - A New step that fails marks the key unsafe, as any New failure does.
    /// - If the process dies with New steps pending, New may hold older values for those keys. The marker
    ///   records the session durably: a proxy that starts write-back and finds the marker still set knows the
    ///   last session did not drain, and degrades (every read from Old) until a verify-and-repair pass and
    ///   ``resetAfterVerify()``.
    ///
    /// - Parameters:
    ///   - maxPending: The most New steps queued at once; at least 1.
    ///   - marker: Durable storage for the session marker (shared by the processes of one migration only if they
    ///     can tell each other's sessions apart: give each process its own).
    /// - Throws: ``ZDDMError`` for a bound below 1 or when the marker cannot be read or written.
    public func startWriteBack(maxPending: Int = 10_000, marker: some WriteBackMarker) async throws {
        guard maxPending >= 1 else {
            throw ZDDMError(.invalidArgument, message: "maxPending must be at least 1, got \(maxPending)")
        }
        guard !core.usesVersions else {
            throw ZDDMError(
                .unsupported,
                message: """
                    write-back acknowledges a write before New has it, which the fenced, versioned writes of this \
                    migration do not allow; create it with MigrationOptions.usesVersions = false to use write-back
                    """
            )
        }
        if try await marker.isSet() {
            logger.warning("the last write-back session did not end cleanly; New is not trusted until a verify pass")
            ledger.degrade()
        }
        try await marker.set()
        writeBack.enable(maxPending: maxPending)
    }

    /// Stops write-back: waits for the queued New steps, then clears the marker.
    /// - Parameter marker: The marker given to ``startWriteBack(maxPending:marker:)``.
    /// - Throws: ``ZDDMError`` when the marker cannot be cleared.
    public func stopWriteBack(marker: some WriteBackMarker) async throws {
        writeBack.disable()
        await drainWriteBack()
        try await marker.clear()
    }

    /// Waits until no write-back New step is pending.
    public func drainWriteBack() async {
        await writeBack.pending.waitUntilZero()
    }

    /// Number of write-back New steps queued or running.
    public var writeBackPendingCount: Int { writeBack.pending.current }
}
