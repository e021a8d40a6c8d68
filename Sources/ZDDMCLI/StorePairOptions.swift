import ArgumentParser
import ZDDM
import ZDDMSQL

/// The options `backfill` and `verify` share: which two tables, and the gate.
struct StorePairOptions: ParsableArguments {
    @Option(help: "Old's URL (sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB).")
    var from: String

    @Option(help: "New's URL.")
    var to: String

    @Option(help: "The table, in both databases.")
    var table: String = "zddm_kv"

    @Option(help: "New's table, when its name differs.")
    var toTable: String?

    @Option(help: "The key column's type: integer, text or bytes.")
    var keyType: KeyType = .integer

    @Option(help: "The gate's rate: only keys it admits are copied, or expected in New.")
    var rate: String = "1"

    @Option(
        help: """
            Copy and compare with versions (fenced writes into New): on, off, or auto (on when change capture \
            is installed on Old's table).
            """
    )
    var versions: VersionsMode = .auto

    @Option(help: "With versions: the version column change capture keeps in Old, and New keeps.")
    var versionColumn: String = "zddm_version"

    func validate() throws {
        _ = try parseRate(rate, option: "--rate")
        do {
            _ = try SQLIdentifier(versionColumn, role: "--version-column")
        } catch let error as ZDDMError {
            throw ValidationError(error.message)
        }
    }

    /// Whether the pair uses versions: as `--versions` says, or (auto) whether Old has change capture.
    func usesVersions() async throws -> Bool {
        switch versions {
        case .on: true
        case .off: false
        case .auto: try await StoreOpener.captureInstalled(from, table: table, versionColumn: versionColumn)
        }
    }

    /// Opens Old's table (which must exist) and New's (created when missing if `createNew`), with raw-byte values
    /// and keys of the `--key-type`, puts a proxy with the gate at `--rate` in front of them, runs `action` and
    /// closes both databases.
    /// - Parameters:
    ///   - action: What to do with the open tables.
    ///   - migration: The proxy's name.
    ///   - createNew: Whether New's table is created when missing.
    ///   - steadyConnections: The connections each PostgreSQL pool keeps open for its whole life, unpinged: as many as
    ///     the command uses at once, so that a busy pool schedules no timer (see `PostgresDatabase.connect`).
    func run(
        _ action: some StorePairAction,
        migration: String,
        createNew: Bool,
        steadyConnections: Int = 1
    ) async throws {
        let steady = steadyConnections
        switch keyType {
        case .integer: try await run(action, Int64.self, migration, createNew: createNew, steady: steady)
        case .text: try await run(action, String.self, migration, createNew: createNew, steady: steady)
        case .bytes: try await run(action, KeyBytes.self, migration, createNew: createNew, steady: steady)
        }
    }

    private func run<Key: SQLKey & Codable>(
        _ action: some StorePairAction,
        _: Key.Type,
        _ migration: String,
        createNew: Bool,
        steady: Int
    ) async throws {
        let versioned = try await usesVersions()
        let old: OpenedStore<Key, [UInt8]> = try await StoreOpener.open(
            from,
            table: table,
            codec: RawBytesValueCodec(),
            create: false,
            versions: versioned ? .old(column: versionColumn) : .none,
            steadyConnections: steady
        )
        let new: OpenedStore<Key, [UInt8]>
        do {
            new = try await StoreOpener.open(
                to,
                table: toTable ?? table,
                codec: RawBytesValueCodec(),
                create: createNew,
                versions: versioned ? .new(column: versionColumn) : .none,
                steadyConnections: steady
            )
        } catch {
            await old.close()
            throw error
        }
        do {
            let core = try MigrationCore(
                name: migration,
                old: old.store,
                new: new.store,
                gate: TrafficGate(rate: parseRate(rate, option: "--rate")),
                options: MigrationOptions(usesVersions: versioned)
            )
            try await action.run(StorePair(old: old, new: new, core: core))
        } catch {
            await old.close()
            await new.close()
            throw error
        }
        await old.close()
        await new.close()
    }
}

/// `--versions`.
enum VersionsMode: String, ExpressibleByArgument, CaseIterable, Sendable {
    case auto, on, off
}

/// Old's and New's tables, open, with the migration's core (gate and safety memory) over them: what backfill and
/// verify run on; no proxy is needed.
struct StorePair<Key: SQLKey & Codable>: Sendable {
    typealias Store = AnyKeyValueStore<Key, [UInt8]>

    let old: OpenedStore<Key, [UInt8]>
    let new: OpenedStore<Key, [UInt8]>
    let core: MigrationCore<Store, Store>
}

/// What a command does with Old's and New's tables, for any key type.
protocol StorePairAction {
    /// Does the command's work; the tables are closed afterwards.
    func run<Key: SQLKey & Codable>(_ pair: StorePair<Key>) async throws
}
