import Logging
import PostgresNIO
import Synchronization
import ZDDMSQL

extension PostgresDatabase {
    /// For tests: how many connections' closes are watched, and how many statements are in flight on them.
    package var watchedConnectionCounts: (connections: Int, statements: Int) { watches.counts }

    /// Runs `body` on a connection of the pool, and fails as soon as that connection closes before `body` ends.
    ///
    /// PostgresNIO hands a statement to its connection's channel without waiting for the write. When the pool
    /// lends a connection that the server has just closed (the pool learns of the close a moment later), the
    /// statement can reach a channel that is already torn down: it is dropped, and its result never comes, so a
    /// caller would wait forever, even after the server is back. Watching the connection's close turns that wait
    /// into an error the caller retries, on another connection.
    /// - Parameter body: The work on the connection; it must not keep the connection.
    /// - Returns: What `body` returns.
    /// - Throws: What `body` throws, or a ``ZDDMSQL/SQLDatabaseError`` when the connection closed first (then
    ///   `body` may or may not have taken effect, as with any error of a connection lost mid-statement).
    func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let watches = watches
        return try await client.withConnection { connection in
            try await ConnectionWatch.run(on: connection, watches: watches, body)
        }
    }

    /// Runs `body` in a transaction on a connection of the pool (see ``withConnection(_:)``): committed when it
    /// returns, rolled back when it throws.
    /// - Parameter body: The work in the transaction.
    /// - Returns: What `body` returns.
    /// - Throws: What `body`, `BEGIN` or `COMMIT` throw, or a ``ZDDMSQL/SQLDatabaseError`` when the connection
    ///   closed first.
    func withTransaction<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let logger = logger
        return try await withConnection { connection in
            try await connection.withTransaction(logger: logger) { try await body($0) }
        }
    }

    /// Runs one statement on a connection of the pool (see ``withConnection(_:)``) and collects its rows.
    func collect(_ query: PostgresQuery) async throws -> [PostgresRow] {
        let logger = logger
        return try await withConnection { connection in
            try await connection.query(query, logger: logger).collect()
        }
    }
}

/// The statements in flight on each pooled connection, failed together when the connection closes. Each connection's
/// close is watched once, however many statements it runs (a pool keeps a connection for hours), and a statement
/// leaves the registry when it ends, so nothing accumulates per statement.
final class ConnectionWatches: Sendable {
    private let watchers = Mutex<[ObjectIdentifier: [UInt64: @Sendable (any Error) -> Void]]>([:])
    private let nextID = Atomic<UInt64>(0)

    /// Calls `onClose` if `connection` closes before ``unregister(_:_:)`` with the returned identifier.
    func register(_ connection: PostgresConnection, onClose: @escaping @Sendable (any Error) -> Void) -> UInt64 {
        let id = nextID.add(1, ordering: .relaxed).newValue
        let key = ObjectIdentifier(connection)
        let first = watchers.withLock { watchers in
            let first = watchers[key] == nil
            watchers[key, default: [:]][id] = onClose
            return first
        }
        if first {
            connection.closeFuture.whenComplete { _ in
                let waiting = self.watchers.withLock { $0.removeValue(forKey: key) } ?? [:]
                let error = SQLDatabaseError(
                    system: "PostgreSQL",
                    code: nil,
                    message: "the connection closed before the statement's result arrived",
                    driverError: nil
                )
                for onClose in waiting.values { onClose(error) }
            }
        }
        return id
    }

    func unregister(_ connection: PostgresConnection, _ id: UInt64) {
        let key = ObjectIdentifier(connection)
        watchers.withLock { watchers in _ = watchers[key]?.removeValue(forKey: id) }
    }

    /// Connections whose close is watched, and statements in flight on them.
    var counts: (connections: Int, statements: Int) {
        watchers.withLock { watchers in (watchers.count, watchers.values.reduce(0) { $0 + $1.count }) }
    }
}

/// The race between work on a connection and the connection's close.
private final class ConnectionWatch<T: Sendable>: Sendable {
    private struct State {
        var outcome: Result<T, any Error>?
        var waiter: CheckedContinuation<T, any Error>?
    }

    private let state = Mutex(State())

    static func run(
        on connection: PostgresConnection,
        watches: ConnectionWatches,
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        let watch = ConnectionWatch()
        let id = watches.register(connection) { error in watch.finish(.failure(error)) }
        defer { watches.unregister(connection, id) }
        // Unstructured, so that a statement whose result never comes is left behind rather than waited for.
        let work = Task {
            do {
                watch.finish(.success(try await body(connection)))
            } catch {
                watch.finish(.failure(error))
            }
        }
        return try await withTaskCancellationHandler {
            try await watch.value()
        } onCancel: {
            work.cancel()
        }
    }

    /// Records the first outcome; later ones are ignored.
    private func finish(_ outcome: Result<T, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<T, any Error>? in
            guard state.outcome == nil else { return nil }
            state.outcome = outcome
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: outcome)
    }

    private func value() async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let outcome = state.withLock { state -> Result<T, any Error>? in
                if state.outcome == nil { state.waiter = continuation }
                return state.outcome
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }
}
