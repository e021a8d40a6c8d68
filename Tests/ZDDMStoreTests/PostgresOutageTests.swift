import Foundation
import InMemoryLogging
import Logging
import Synchronization
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL

/// PostgreSQL made unreachable in the middle of a chunked backfill, through ``TCPForwarder``s in front of the real
/// server: the backfill's connections go through them, while the test checks the server through a direct one.
@Suite("PostgreSQL unreachable in the middle of a chunked backfill", .postgres, .serialized)
struct PostgresOutageTests {
    static let rows = 4_000
    static let chunkRows = 250
    static let chunks = rows / chunkRows
    /// How long anything the test waits for may take on a busy machine; reaching it fails the test.
    static let deadline: Duration = .seconds(120)

    static func key(_ index: Int) -> String { "k\(10_000 + index)" }

    static func value(_ index: Int) -> String { "value \(index)" }

    /// The rows of chunk `index` as planned: the run cuts Old's keys, in order, into chunks of `chunkRows`.
    static func rows(ofChunk index: Int) -> Range<Int> {
        index * chunkRows..<min(rows, (index + 1) * chunkRows)
    }

    static func options() -> BackfillOptions {
        var options = BackfillOptions()
        options.workers = 3
        options.chunkRows = chunkRows
        options.batchSize = 50
        // Paced, so that the run is still going when the test cuts the server, however fast the machine.
        options.maxRowsPerSecond = 2_000
        options.idlePollInterval = .milliseconds(50)
        return options
    }

    @Test(
        "The whole PostgreSQL unreachable mid-run: workers wait without failing the run and resume when it is back; every chunk done during the outage was copied, each chunk completed once, New equals Old"
    )
    func serverUnreachable() async throws {
        let url = try PostgresTestEnvironment.url()
        try await PostgresTestEnvironment.withDatabase { direct in
            let tables = try await Tables.make(on: direct)
            try await withForwarder(to: url) { storesLink in
                try await withForwarder(to: url) { coordinatorLink in
                    try await withDatabase(url, through: storesLink) { stores in
                        try await withDatabase(url, through: coordinatorLink) { coordination in
                            try await outage(
                                tables,
                                stores: stores,
                                coordination: coordination,
                                links: (stores: storesLink, coordinator: coordinatorLink),
                                url: url
                            )
                        }
                    }
                }
            }
        }
    }

    private func outage(
        _ tables: Tables,
        stores: PostgresDatabase,
        coordination: PostgresDatabase,
        links: (stores: TCPForwarder, coordinator: TCPForwarder),
        url: PostgresURL
    ) async throws {
        let logs = InMemoryLogHandler()
        let batches = Counter()
        let core = try MigrationCore(
            name: "outage",
            old: tables.old(on: stores),
            new: tables.new(on: stores),
            gate: TrafficGate(rate: 1),
            logger: Logger(label: "zddm.outage", factory: { _ in logs })
        )
        let backfill = try ChunkedBackfill(
            core: core,
            coordinator: tables.coordinator(on: coordination),
            run: "r",
            options: Self.options()
        ) { _ in batches.add() }
        let ended = Counter()
        let run = Task {
            defer { ended.add() }
            return try await backfill.runPass()
        }
        let watched = try tables.coordinator(on: tables.direct)

        // The first chunks complete; then the next coordinator request goes unanswered, and the server goes away
        // with it in flight.
        try await poll("two chunks to be completed") { try await watched.chunks(of: "r").count(where: \.done) >= 2 }
        links.coordinator.holdRequests()
        try await poll("a coordinator request to be held") { links.coordinator.heldBytes > 0 }
        await links.stores.cut()
        await links.coordinator.cut()
        try await TCPForwarder.waitForSessionsToEnd(of: [links.stores, links.coordinator], url: url)

        // Down: what the coordinator says is done was copied, and nothing moves.
        let atCut = try await watched.chunks(of: "r")
        let batchesAtCut = batches.value
        try #require(atCut.count == Self.chunks)
        try #require(atCut.contains { !$0.done }, "the run ended before the outage; it tests nothing")
        try await expectCopied(atCut, new: tables.new(on: tables.direct))
        try await poll("workers to retry the coordinator and the pool to try reconnecting") {
            Self.retries(in: logs) >= 1 && links.coordinator.refused >= 3
        }
        #expect(ended.value == 0, "the run ended while PostgreSQL was unreachable")
        #expect(batches.value == batchesAtCut, "a batch was reported copied while PostgreSQL was unreachable")
        #expect(try await watched.chunks(of: "r") == atCut)

        // Back up: the same run finishes.
        links.stores.restore()
        links.coordinator.restore()
        let progress = try await awaitWithDeadline(run)
        #expect(progress.finished)
        #expect(batches.value > batchesAtCut)
        let final = try await watched.chunks(of: "r")
        #expect(final.count == Self.chunks)
        for chunk in final {
            #expect(chunk.done && chunk.completions == 1, "chunk \(chunk.chunk): \(chunk)")
            #expect(chunk.plannedRows == Self.rows(ofChunk: chunk.chunk).count)
        }
        try await expectNewEqualsOld(tables)
    }

    @Test(
        "New unreachable in the middle of a batch with no attempt left: the batch's chunk is not marked done, the run ends with New's error, and a new pass finishes the run with each chunk completed once"
    )
    func newFailsMidBatch() async throws {
        let url = try PostgresTestEnvironment.url()
        try await PostgresTestEnvironment.withDatabase { direct in
            let tables = try await Tables.make(on: direct)
            try await withForwarder(to: url) { newLink in
                try await withDatabase(url, through: newLink) { newDatabase in
                    let core = try MigrationCore(
                        name: "outage",
                        old: tables.old(on: direct),
                        new: tables.new(on: newDatabase),
                        gate: TrafficGate(rate: 1)
                    )
                    let coordinator = try tables.coordinator(on: direct)
                    var options = Self.options()
                    options.maxAttempts = 1
                    // One worker: the run ends as soon as its batch fails. (With more, the others' writes into New
                    // wait in the driver's pool for the server, and the run ends only when the pool gives up.)
                    options.workers = 1
                    // Chunks that cancelled workers could not release come back soon.
                    options.leaseDuration = .seconds(3)
                    let backfill = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options)
                    let run = Task { try await backfill.runPass() }

                    try await poll("two chunks to be completed") {
                        try await coordinator.chunks(of: "r").count(where: \.done) >= 2
                    }
                    newLink.holdRequests()
                    try await poll("a write into New to be held") { newLink.heldBytes > 0 }
                    await newLink.cut()
                    let error = await #expect(throws: ZDDMError.self) { try await awaitWithDeadline(run) }
                    #expect(error?.role == .new, "\(String(describing: error))")
                    try await TCPForwarder.waitForSessionsToEnd(of: [newLink], url: url)

                    let afterFailure = try await coordinator.chunks(of: "r")
                    try #require(afterFailure.contains { !$0.done }, "the run ended before the outage")
                    try await expectCopied(afterFailure, new: tables.new(on: direct))

                    newLink.restore()
                    options.maxAttempts = BackfillOptions().maxAttempts
                    let again = try ChunkedBackfill(core: core, coordinator: coordinator, run: "r", options: options)
                    let progress = try await awaitWithDeadline(Task { try await again.runPass() })
                    #expect(progress.finished)
                    let final = try await coordinator.chunks(of: "r")
                    #expect(final.count == Self.chunks)
                    #expect(final.allSatisfy { $0.done && $0.completions == 1 }, "\(final)")
                    for (before, after) in zip(afterFailure, final) where before.done {
                        #expect(after.token == before.token, "chunk \(after.chunk), done before, was claimed again")
                    }
                    try await expectNewEqualsOld(tables)
                }
            }
        }
    }

    // MARK: Helpers

    /// Old, New and the coordinator's tables, created and filled through a direct connection.
    struct Tables {
        let direct: PostgresDatabase
        let oldTable = uniqueTableName("old")
        let newTable = uniqueTableName("new")
        let prefix = uniqueTableName("bf")

        static func make(on direct: PostgresDatabase) async throws -> Tables {
            let tables = Tables(direct: direct)
            let old = try tables.old(on: direct)
            try await old.prepare()
            try await tables.new(on: direct).prepare()
            try await tables.coordinator(on: direct).prepare()
            var start = 0
            while start < rows {
                let entries = (start..<min(rows, start + 500)).map { (key: key($0), value: value($0)) }
                #expect(try await old.insertManyIfAbsent(entries).count == entries.count)
                start += entries.count
            }
            return tables
        }

        func old(on database: PostgresDatabase) throws -> PostgresStore<String, String> {
            try PostgresStore<String, String>(database: database, table: oldTable)
        }

        func new(on database: PostgresDatabase) throws -> PostgresStore<String, String> {
            try PostgresStore<String, String>(database: database, table: newTable)
        }

        func coordinator(on database: PostgresDatabase) throws -> PostgresBackfillCoordinator<String> {
            try PostgresBackfillCoordinator<String>(database: database, prefix: prefix)
        }
    }

    /// Every row of every chunk marked done is in New, with Old's value.
    private func expectCopied(
        _ chunks: [PostgresBackfillCoordinator<String>.ChunkState],
        new: PostgresStore<String, String>
    ) async throws {
        for chunk in chunks where chunk.done {
            let indices = Self.rows(ofChunk: chunk.chunk)
            let found = try await new.readMany(indices.map(Self.key))
            let missing = indices.filter { found[Self.key($0)]?.value != Self.value($0) }
            #expect(missing.isEmpty, "chunk \(chunk.chunk) is done but \(missing.count) of its rows are not in New")
        }
    }

    /// New holds exactly Old's rows.
    private func expectNewEqualsOld(_ tables: Tables) async throws {
        let old = try tables.old(on: tables.direct)
        let new = try tables.new(on: tables.direct)
        var cursor: String?
        var compared = 0
        while true {
            let keys = try await old.keys(after: cursor, limit: 1_000)
            guard let last = keys.last else { break }
            let expected = try await old.readMany(keys)
            let found = try await new.readMany(keys)
            #expect(expected == found, "New differs from Old after \(cursor ?? "the start")")
            compared += keys.count
            cursor = last
        }
        #expect(compared == Self.rows)
        #expect(try await new.keys(after: nil, limit: Self.rows + 1).count == Self.rows, "New holds extra rows")
    }

    private static func retries(in logs: InMemoryLogHandler) -> Int {
        logs.entries.count { $0.message.description == "backfill coordinator failed; retrying" }
    }
}

/// Runs `body` with a forwarder to the server of `url`, shut down afterwards.
private func withForwarder<T>(to url: PostgresURL, _ body: (TCPForwarder) async throws -> T) async throws -> T {
    let forwarder = try await TCPForwarder.start(to: url.host, port: url.port)
    do {
        let result = try await body(forwarder)
        await forwarder.shutdown()
        return result
    } catch {
        await forwarder.shutdown()
        throw error
    }
}

/// Runs `body` with a database whose connections go through `forwarder`, shut down afterwards.
private func withDatabase<T>(
    _ url: PostgresURL,
    through forwarder: TCPForwarder,
    _ body: (PostgresDatabase) async throws -> T
) async throws -> T {
    var forwarded = url
    forwarded.host = "127.0.0.1"
    forwarded.port = forwarder.port
    let database = try await PostgresDatabase.connect(
        url: forwarded,
        connectTimeout: .seconds(60),
        maximumConnections: 8
    )
    do {
        let result = try await body(database)
        await database.shutdown()
        return result
    } catch {
        await database.shutdown()
        throw error
    }
}

/// Polls `condition` until it holds; fails the test past the deadline.
func poll(
    _ what: String,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + PostgresOutageTests.deadline
    while !(try await condition()) {
        guard ContinuousClock.now < deadline else {
            Issue.record("gave up waiting for \(what)")
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// The task's result, or a failure (and the task cancelled) when it has not ended by the deadline.
private func awaitWithDeadline<T: Sendable>(_ task: Task<T, any Error>) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await task.value }
        group.addTask {
            try await Task.sleep(for: PostgresOutageTests.deadline)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else {
            task.cancel()
            Issue.record("the backfill did not end within \(PostgresOutageTests.deadline)")
            throw CancellationError()
        }
        return result
    }
}

/// A count that any task may add to.
private final class Counter: Sendable {
    private let count = Atomic<Int>(0)

    var value: Int { count.load(ordering: .sequentiallyConsistent) }

    func add() { count.add(1, ordering: .sequentiallyConsistent) }
}
