/// The one error type ZDDM throws.
///
/// It names what failed: for store failures, the store's role (Old or New) and the operation, and it carries the
/// underlying error. Its description never contains a key's value, a row's value, an SQL parameter or a password.
/// "Not found" is never an error: reads return `nil`.
public struct ZDDMError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case storeFailed
            case invalidRate
            case unsupported
            case invalidArgument
            case connectionFailed
            case io
            case refusedTransition
            case mappingFailed
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A store operation failed; ``ZDDMError/role`` and ``ZDDMError/operation`` say which.
        public static let storeFailed = Code(.storeFailed)
        /// A rate outside `[0, 1]` (or NaN) was given; nothing was changed.
        public static let invalidRate = Code(.invalidRate)
        /// A store was asked for something it declares it cannot do.
        public static let unsupported = Code(.unsupported)
        /// An argument was invalid (an identifier, a URL, a size, an option); nothing was done.
        public static let invalidArgument = Code(.invalidArgument)
        /// A database could not be reached or refused the login.
        public static let connectionFailed = Code(.connectionFailed)
        /// Reading or writing a local file (a checkpoint, a marker) failed; the message names the file.
        public static let io = Code(.io)
        /// A stage transition (or a rate change a stage forbids) was refused; the message says what it needs.
        public static let refusedTransition = Code(.refusedTransition)
        /// A row read from a table could not be turned into a key or a value (the table's data or the mapping is
        /// wrong, not the caller's argument).
        public static let mappingFailed = Code(.mappingFailed)

        public var description: String {
            switch base {
            case .storeFailed: "store failed"
            case .invalidRate: "invalid rate"
            case .unsupported: "unsupported"
            case .invalidArgument: "invalid argument"
            case .connectionFailed: "connection failed"
            case .io: "I/O failed"
            case .refusedTransition: "refused transition"
            case .mappingFailed: "mapping failed"
            }
        }
    }

    /// What kind of failure this is.
    public var code: Code
    /// Which store failed, when a store failed.
    public var role: StoreRole?
    /// Which operation failed, when a store operation failed.
    public var operation: StoreOperation?
    /// A human-readable explanation; never holds keys' or rows' values, SQL parameters or passwords.
    public var message: String
    /// The error that caused this one, if any.
    public var underlying: (any Error)?

    /// Creates an error.
    /// - Parameters:
    ///   - code: What kind of failure this is.
    ///   - role: Which store failed, if any.
    ///   - operation: Which operation failed, if any.
    ///   - message: An explanation without values, parameters or passwords.
    ///   - underlying: The error that caused this one.
    public init(
        _ code: Code,
        role: StoreRole? = nil,
        operation: StoreOperation? = nil,
        message: String,
        underlying: (any Error)? = nil
    ) {
        self.code = code
        self.role = role
        self.operation = operation
        self.message = message
        self.underlying = underlying
    }

    /// Wraps a store's error, naming the store and the operation.
    @usableFromInline
    static func store(_ role: StoreRole, _ operation: StoreOperation, _ error: any Error) -> ZDDMError {
        // A store's own ZDDMError keeps its code (an invalid argument stays one), and gains the role.
        if var known = error as? ZDDMError {
            known.role = known.role ?? role
            known.operation = known.operation ?? operation
            return known
        }
        return ZDDMError(.storeFailed, role: role, operation: operation, message: "", underlying: error)
    }

    public var description: String {
        var text = "ZDDM \(code)"
        if let role {
            text += ": \(role) store"
            if let operation { text += ", \(operation)" }
        } else if let operation {
            text += ": \(operation)"
        }
        if !message.isEmpty { text += ": \(message)" }
        if let underlying {
            text += " (\(Self.describe(underlying)))"
        }
        return text
    }

    /// Describes an underlying error without risking values: in full only when its type promises that its
    /// description holds none (``ValueFreeDescription``), otherwise by its type's name.
    static func describe(_ error: any Error) -> String {
        if error is CancellationError { return "cancelled" }
        if let safe = error as? any ValueFreeDescription { return String(describing: safe) }
        return "\(type(of: error))"
    }
}

/// An error whose `description` never contains a key's or row's value, an SQL parameter or a password, so
/// ``ZDDMError`` may include it in its own description. Other underlying errors are named by their type only;
/// the error itself stays available in ``ZDDMError/underlying``.
public protocol ValueFreeDescription: Error, CustomStringConvertible {}

extension ZDDMError: ValueFreeDescription {}

/// An error that says whether the same call can succeed when it is simply made again later.
///
/// Loops that wait out outages retry an error unless it says it is not retryable. A chunked run's calls to its
/// coordinator, for instance, are retried through a lost connection or a failover for as long as it lasts, but a
/// missing table, a missing permission or a refused password ends the run at once with the error: those fail the
/// same way until someone changes something. An error that does not conform is retried.
public protocol RetryableError: Error {
    /// `true` when the same call may succeed later with nothing changed (a lost connection, a failover, a lock or
    /// serialization conflict); `false` when it fails the same way until something is fixed.
    var isRetryable: Bool { get }
}

extension ZDDMError: RetryableError {
    /// `false` for an argument, rate, transition or mapping refused and for an operation a store does not
    /// support; otherwise what the underlying error says (`true` when it says nothing).
    public var isRetryable: Bool {
        if [.invalidArgument, .invalidRate, .unsupported, .mappingFailed, .refusedTransition].contains(code) {
            return false
        }
        return underlying.map(Self.isRetryable) ?? true
    }

    /// Whether retrying `error` later can succeed: what it says when it is a ``RetryableError``, `false` for a
    /// cancellation, `true` otherwise.
    public static func isRetryable(_ error: any Error) -> Bool {
        switch error {
        case is CancellationError: false
        case let error as any RetryableError: error.isRetryable
        default: true
        }
    }
}

/// The role a store plays in a migration.
public enum StoreRole: String, Sendable, Hashable, CustomStringConvertible {
    /// The source of truth until cutover.
    case old
    /// The target store.
    case new

    public var description: String {
        switch self {
        case .old: "Old"
        case .new: "New"
        }
    }
}

/// A store operation, as named in errors, logs and metrics.
public enum StoreOperation: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case read
    case write
    case insertIfAbsent = "insert_if_absent"
    case delete
    case writeTombstone = "write_tombstone"
    case invalidate
    case listKeys = "list_keys"
    case readMany = "read_many"
    case insertManyIfAbsent = "insert_many_if_absent"
    case prepare
    case writeIfNewer = "write_if_newer"
    case changes
    case fleetState = "fleet_state"

    public var description: String { rawValue }
}
