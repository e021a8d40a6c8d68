public import Foundation

/// Where a backfill stands, saved after every batch so a crashed or stopped run resumes from it.
public struct BackfillCheckpoint<Key: Codable & Sendable>: Codable, Sendable {
    /// The last key of the last batch that finished (with every batch before it); `nil` before the first.
    public var cursor: Key?
    /// The gate's rate when this pass started. A later run at a higher rate starts over, since earlier key ranges
    /// now hold newly admitted keys.
    public var rate: Double
    /// Rows read from Old so far in this pass.
    public var rowsScanned: Int
    /// Rows copied into New so far in this pass.
    public var rowsCopied: Int
    /// Whether the pass reached the end of Old's keys.
    public var finished: Bool

    /// Creates a checkpoint.
    public init(cursor: Key?, rate: Double, rowsScanned: Int, rowsCopied: Int, finished: Bool) {
        self.cursor = cursor
        self.rate = rate
        self.rowsScanned = rowsScanned
        self.rowsCopied = rowsCopied
        self.finished = finished
    }
}

/// Durable storage for backfill checkpoints, by backfill name.
public protocol BackfillCheckpointStore<Key>: Sendable {
    /// The key type of the checkpoints' cursors.
    associatedtype Key: Codable & Sendable

    /// Loads a checkpoint.
    /// - Parameter name: The backfill's name.
    /// - Returns: The checkpoint, or `nil` when there is none.
    /// - Throws: When the storage fails or holds something unreadable.
    func load(name: String) async throws -> BackfillCheckpoint<Key>?

    /// Saves a checkpoint durably, replacing the previous one.
    /// - Parameters:
    ///   - checkpoint: The checkpoint.
    ///   - name: The backfill's name.
    /// - Throws: When the storage fails.
    func save(_ checkpoint: BackfillCheckpoint<Key>, name: String) async throws
}

/// Keeps checkpoints as JSON files in a folder, replaced atomically (write, then rename).
public struct FileCheckpointStore<Key: Codable & Sendable>: BackfillCheckpointStore {
    /// The folder holding the checkpoint files.
    public let directory: URL

    /// Creates the store.
    /// - Parameter directory: The folder; created when missing.
    public init(directory: URL) {
        self.directory = directory
    }

    private func file(_ name: String) throws -> URL {
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw ZDDMError(.invalidArgument, message: "a checkpoint name may hold letters, digits, '-', '_' and '.'")
        }
        return directory.appendingPathComponent("\(name).checkpoint.json")
    }

    public func load(name: String) async throws -> BackfillCheckpoint<Key>? {
        let url = try file(name)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do {
            return try JSONDecoder().decode(BackfillCheckpoint<Key>.self, from: Data(contentsOf: url))
        } catch {
            throw ZDDMError(.io, message: "unreadable checkpoint file \(url.path)", underlying: error)
        }
    }

    public func save(_ checkpoint: BackfillCheckpoint<Key>, name: String) async throws {
        let url = try file(name)
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try JSONEncoder().encode(checkpoint).write(to: url, options: .atomic)
        } catch {
            throw ZDDMError(.io, message: "cannot write checkpoint file \(url.path)", underlying: error)
        }
    }
}
