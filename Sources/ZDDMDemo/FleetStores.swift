import Foundation
import GRDB
import PostgresNIO
package import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMSQLite

/// A fleet's stores opened from URLs: Old with change capture and versions, New with versions, and the fleet's shared
/// state in a table of Old's database.
package struct FleetStores: Sendable {
    package typealias Store = AnyKeyValueStore<Int64, [UInt8]>

    /// Where the stores are and what their tables are called.
    package struct Location: Sendable {
        package var old: String
        package var new: String
        package var table: String
        package var newTable: String
        package var fleetTable: String
        package var busyTimeout: Duration

        package init(
            old: String,
            new: String,
            table: String = "kv",
            newTable: String? = nil,
            fleetTable: String = "zddm_fleet",
            busyTimeout: Duration = .seconds(30)
        ) {
            self.old = old
            self.new = new
            self.table = table
            self.newTable = newTable ?? table
            self.fleetTable = fleetTable
            self.busyTimeout = busyTimeout
        }
    }

    /// Old: change capture installed, versions assigned by its triggers.
    package let old: Store
    /// New: a version column, fenced writes.
    package let new: Store
    /// The fleet's shared state, in Old's database.
    package let fleetState: any FleetStateStore
    /// Where Old and New are, for a report (no password).
    package let oldDescription: String
    package let newDescription: String
    /// Closes both databases.
    package let close: @Sendable () async -> Void

    /// Opens the stores; with `prepare`, first creates Old's table and installs change capture on it, creates New's
    /// table afresh (dropping one that exists) and the fleet table.
    package static func open(_ location: Location, prepare: Bool) async throws -> FleetStores {
        let oldSide = try await openOld(location, prepare: prepare)
        do {
            let new = try await openNew(location, prepare: prepare)
            return FleetStores(
                old: oldSide.store,
                new: new.store,
                fleetState: oldSide.fleetState,
                oldDescription: try describe(location.old),
                newDescription: try describe(location.new),
                close: {
                    await new.close()
                    await oldSide.close()
                }
            )
        } catch {
            await oldSide.close()
            throw error
        }
    }

    private static func openOld(
        _ location: Location,
        prepare: Bool
    ) async throws -> (store: Store, fleetState: any FleetStateStore, close: @Sendable () async -> Void) {
        let codec = RawBytesValueCodec()
        if location.old.hasPrefix("sqlite:") {
            let database = try SQLiteDatabase.open(url: location.old, busyTimeout: location.busyTimeout)
            do {
                let store = try SQLiteStore<Int64, [UInt8]>(
                    database: database,
                    table: location.table,
                    changeCapture: true,
                    codec: codec
                )
                let fleet = try SQLiteFleetStateStore(database: database, table: location.fleetTable)
                if prepare {
                    try await store.prepare()
                    try await fleet.prepare()
                } else {
                    try await store.checkSchema()
                }
                return (AnyKeyValueStore(store), fleet, { try? database.close() })
            } catch {
                try? database.close()
                throw error
            }
        }
        let database = try await PostgresDatabase.connect(url: location.old)
        do {
            if prepare {
                try await PostgresStore<Int64, [UInt8]>(database: database, table: location.table, codec: codec)
                    .prepare()
                try await PostgresChangeCapture(database: database, schema: captureSchema(location)).install()
            }
            let store = try PostgresStore<Int64, [UInt8]>(
                database: database,
                table: location.table,
                changeCapture: try captureSchema(location),
                codec: codec
            )
            let fleet = try PostgresFleetStateStore(database: database, table: location.fleetTable)
            if prepare {
                try await store.prepare()
                try await fleet.prepare()
            } else {
                try await store.checkSchema()
            }
            return (AnyKeyValueStore(store), fleet, { await database.shutdown() })
        } catch {
            await database.shutdown()
            throw error
        }
    }

    private static func openNew(
        _ location: Location,
        prepare: Bool
    ) async throws -> (store: Store, close: @Sendable () async -> Void) {
        let codec = RawBytesValueCodec()
        let table = try SQLIdentifier(location.newTable, role: "table name")
        if location.new.hasPrefix("sqlite:") {
            let database = try SQLiteDatabase.open(url: location.new, busyTimeout: location.busyTimeout)
            do {
                if prepare { try await database.execute("DROP TABLE IF EXISTS \(table.quoted)") }
                let store = try SQLiteStore<Int64, [UInt8]>(
                    database: database,
                    table: location.newTable,
                    versionColumn: "zddm_version",
                    codec: codec
                )
                if prepare { try await store.prepare() } else { try await store.checkSchema() }
                return (AnyKeyValueStore(store), { try? database.close() })
            } catch {
                try? database.close()
                throw error
            }
        }
        let database = try await PostgresDatabase.connect(url: location.new)
        do {
            if prepare { try await database.execute("DROP TABLE IF EXISTS \(table.quoted)") }
            let store = try PostgresStore<Int64, [UInt8]>(
                database: database,
                table: location.newTable,
                versionColumn: "zddm_version",
                codec: codec
            )
            if prepare { try await store.prepare() } else { try await store.checkSchema() }
            return (AnyKeyValueStore(store), { await database.shutdown() })
        } catch {
            await database.shutdown()
            throw error
        }
    }

    /// Removes what a previous run left: SQLite files, or PostgreSQL tables and change capture.
    package static func reset(_ location: Location) async throws {
        for url in [location.old, location.new] where url.hasPrefix("sqlite:") {
            if let path = try SQLiteURL(url).filePath {
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            }
        }
        if !location.old.hasPrefix("sqlite:") {
            let database = try await PostgresDatabase.connect(url: location.old)
            let schema = try captureSchema(location)
            try? await PostgresChangeCapture(database: database, schema: schema).uninstall(removingData: true)
            for table in [location.table, location.fleetTable] {
                try? await database.execute("DROP TABLE IF EXISTS \(try SQLIdentifier(table).quoted)")
            }
            await database.shutdown()
        }
    }

    private static func describe(_ url: String) throws -> String {
        url.hasPrefix("sqlite:") ? "\(try SQLiteURL(url))" : "\(try PostgresURL(url))"
    }

    private static func captureSchema(_ location: Location) throws -> ChangeCaptureSchema {
        try ChangeCaptureSchema(table: location.table, keyColumn: "key")
    }
}

/// Plain SQL on Old's and New's tables, past the proxy and the store API: the bypass writer's upserts into Old, and
/// the version New holds for a key (to measure how long the change applier takes to copy a bypass write).
struct PlainSQL: Sendable {
    /// Upserts a value into Old with one statement and returns the version Old's triggers gave it.
    let writeOld: @Sendable (Int64, [UInt8]) async throws -> UInt64
    /// The version of New's record for a key (value or tombstone), or `nil` when New holds nothing for it.
    let newVersion: @Sendable (Int64) async throws -> UInt64?
    let close: @Sendable () async -> Void

    static func open(_ location: FleetStores.Location) async throws -> PlainSQL {
        let oldTable = try SQLIdentifier(location.table, role: "table name").quoted
        let newTable = try SQLIdentifier(location.newTable, role: "table name").quoted
        let old = try await Connection.open(location.old, busyTimeout: location.busyTimeout)
        let new: Connection
        do {
            new = try await Connection.open(location.new, busyTimeout: location.busyTimeout)
        } catch {
            await old.close()
            throw error
        }
        return PlainSQL(
            writeOld: { key, value in
                switch old {
                case .sqlite(let pool):
                    // SQLite's triggers set the version after the row is written: read it in the same transaction.
                    return try await pool.write { db in
                        try db.execute(
                            sql: """
                                INSERT INTO \(oldTable) ("key", "value", "tombstone") VALUES (?, ?, 0) \
                                ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value", "tombstone" = 0
                                """,
                            arguments: [key, Data(value)]
                        )
                        let version = try Int64.fetchOne(
                            db,
                            sql: "SELECT \"zddm_version\" FROM \(oldTable) WHERE \"key\" = ?",
                            arguments: [key]
                        )
                        return UInt64(max(0, version ?? 0))
                    }
                case .postgres(let client, _):
                    // PostgreSQL's BEFORE trigger sets the version, so the statement returns it.
                    let rows = try await client.query(
                        """
                        INSERT INTO \(unescaped: oldTable) ("key", "value", "tombstone") \
                        VALUES (\(key), \(ByteBuffer(bytes: value)), false) \
                        ON CONFLICT ("key") DO UPDATE SET "value" = EXCLUDED."value", "tombstone" = false \
                        RETURNING "zddm_version"
                        """
                    )
                    var version: Int64 = 0
                    for try await row in rows.decode(Int64.self) { version = row }
                    return UInt64(max(0, version))
                }
            },
            newVersion: { key in
                switch new {
                case .sqlite(let pool):
                    let version = try await pool.read { db in
                        try Int64.fetchOne(
                            db,
                            sql: "SELECT \"zddm_version\" FROM \(newTable) WHERE \"key\" = ?",
                            arguments: [key]
                        )
                    }
                    return version.map { UInt64(max(0, $0)) }
                case .postgres(let client, _):
                    let rows = try await client.query(
                        "SELECT \"zddm_version\" FROM \(unescaped: newTable) WHERE \"key\" = \(key)"
                    )
                    var version: UInt64?
                    for try await row in rows.decode(Int64.self) { version = UInt64(max(0, row)) }
                    return version
                }
            },
            close: {
                await old.close()
                await new.close()
            }
        )
    }

    /// A connection pool of its own to one database.
    private enum Connection: Sendable {
        case sqlite(DatabasePool)
        case postgres(PostgresClient, Task<Void, Never>)

        static func open(_ url: String, busyTimeout: Duration) async throws -> Connection {
            if url.hasPrefix("sqlite:") {
                guard let path = try SQLiteURL(url).filePath else {
                    throw ZDDMError(.invalidArgument, message: "plain SQL needs an SQLite file, not \(url)")
                }
                var configuration = Configuration()
                configuration.busyMode = .timeout(Double(busyTimeout.components.seconds))
                return .sqlite(try DatabasePool(path: path, configuration: configuration))
            }
            let configuration = try PostgresURL(url).clientConfiguration(maximumConnections: 4)
            let client = PostgresClient(configuration: configuration)
            return .postgres(client, Task { await client.run() })
        }

        func close() async {
            switch self {
            case .sqlite(let pool):
                try? pool.close()
            case .postgres(_, let task):
                task.cancel()
                await task.value
            }
        }
    }
}
