import ZDDM

/// Where an SQLite database is, parsed from `sqlite:PATH`, `sqlite:///ABSOLUTE/PATH` or `sqlite::memory:`.
///
/// `?mode=ro` opens the file read-only (`?mode=rw`, the default, opens it for reading and writing and creates it
/// when missing).
public struct SQLiteURL: Sendable, Hashable, CustomStringConvertible {
    /// Where the database lives.
    public enum Location: Sendable, Hashable {
        /// A file at a path.
        case file(String)
        /// A private in-memory database, gone when closed.
        case memory
    }

    /// Where the database lives.
    public var location: Location
    /// Whether the database is opened read-only.
    public var readOnly: Bool

    /// Creates a location.
    /// - Parameters:
    ///   - location: The file or memory.
    ///   - readOnly: Whether to open it read-only.
    public init(location: Location, readOnly: Bool = false) {
        self.location = location
        self.readOnly = readOnly
    }

    /// Parses a URL.
    /// - Parameter url: `sqlite:PATH`, `sqlite:///ABSOLUTE/PATH` or `sqlite::memory:`, optionally followed by
    ///   `?mode=ro` or `?mode=rw`.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` saying what is wrong.
    public init(_ url: String) throws {
        let prefix = "sqlite:"
        guard url.hasPrefix(prefix) else {
            throw ZDDMError(.invalidArgument, message: "an SQLite URL must start with \"sqlite:\"")
        }
        var rest = String(url.dropFirst(prefix.count))
        var readOnly = false
        if let question = rest.lastIndex(of: "?") {
            let query = rest[rest.index(after: question)...]
            rest = String(rest[..<question])
            for item in query.split(separator: "&") {
                switch item {
                case "mode=ro": readOnly = true
                case "mode=rw": readOnly = false
                default:
                    throw ZDDMError(
                        .invalidArgument,
                        message: "unsupported SQLite URL option (supported: mode=ro, mode=rw)"
                    )
                }
            }
        }
        if rest == ":memory:" {
            self.init(location: .memory, readOnly: readOnly)
            return
        }
        if rest.hasPrefix("//") { rest.removeFirst(2) }
        guard !rest.isEmpty else {
            throw ZDDMError(.invalidArgument, message: "an SQLite URL needs a path: sqlite:PATH or sqlite::memory:")
        }
        self.init(location: .file(rest), readOnly: readOnly)
    }

    /// The file's path, or `nil` for an in-memory database.
    public var filePath: String? {
        guard case .file(let path) = location else { return nil }
        return path
    }

    public var description: String {
        let base: String
        switch location {
        case .memory: base = "sqlite::memory:"
        case .file(let path): base = "sqlite:" + path
        }
        return readOnly ? base + "?mode=ro" : base
    }
}
