/// A store built from async functions, for wrapping anything in a few lines.
///
/// The counterpart of the original ZDDM's `zddm_storage_adapter:create(ReadFun, WriteFun)`. Only `read` and
/// `write` are required; each optional function you leave out is declared missing in ``capabilities`` and
/// throws ``ZDDMError/Code/unsupported`` when called. In particular, give `insertIfAbsent` only if it is truly
/// atomic in your backend: a check-then-write would let a fill overwrite a concurrent write.
///
/// ```swift
/// let legacy = ClosureStore<String, Data>(
///     read: { key in try await redis.get(key).map { .value($0) } },
///     write: { key, value in try await redis.set(key, value) },
///     delete: { key in try await redis.del(key) }
/// )
/// ```
public struct ClosureStore<Key: Hashable & Sendable, Value: Sendable>: KeyValueStore {
    public typealias ReadFunction = @Sendable (Key) async throws -> StoreRecord<Value>?
    public typealias WriteFunction = @Sendable (Key, Value) async throws -> Void
    public typealias InsertFunction = @Sendable (Key, Value) async throws -> Bool
    public typealias KeyFunction = @Sendable (Key) async throws -> Void
    public typealias ListFunction = @Sendable (Key?, Int) async throws -> [Key]

    private let readFunction: ReadFunction
    private let writeFunction: WriteFunction
    private let deleteFunction: KeyFunction?
    private let insertFunction: InsertFunction?
    private let tombstoneFunction: KeyFunction?
    private let listFunction: ListFunction?

    public let capabilities: StoreCapabilities

    /// Creates a store from functions.
    /// - Parameters:
    ///   - read: Returns the key's record, or `nil` when there is none.
    ///   - write: Upserts a value (replacing a tombstone too).
    ///   - delete: Removes whatever is stored for the key; without it, `delete` and `invalidate` are unsupported.
    ///   - insertIfAbsent: An *atomic* insert-if-absent returning whether it inserted; without it the store
    ///     cannot be New.
    ///   - writeTombstone: Upserts a tombstone; without it the store cannot be New.
    ///   - keys: Lists keys holding values strictly after a cursor, in a stable order, at most `limit` of them.
    public init(
        read: @escaping ReadFunction,
        write: @escaping WriteFunction,
        delete: KeyFunction? = nil,
        insertIfAbsent: InsertFunction? = nil,
        writeTombstone: KeyFunction? = nil,
        keys: ListFunction? = nil
    ) {
        self.readFunction = read
        self.writeFunction = write
        self.deleteFunction = delete
        self.insertFunction = insertIfAbsent
        self.tombstoneFunction = writeTombstone
        self.listFunction = keys
        var capabilities: StoreCapabilities = []
        if insertIfAbsent != nil { capabilities.insert(.atomicInsertIfAbsent) }
        if writeTombstone != nil { capabilities.insert(.tombstones) }
        if keys != nil { capabilities.insert(.orderedKeys) }
        self.capabilities = capabilities
    }

    /// Creates a store from a read that returns plain values, like the original's `create(ReadFun, WriteFun)`.
    /// - Parameters:
    ///   - readValue: Returns the key's value, or `nil` when there is none.
    ///   - write: Upserts a value.
    ///   - delete: Removes the key; without it, `delete` is unsupported.
    public init(
        readValue: @escaping @Sendable (Key) async throws -> Value?,
        write: @escaping WriteFunction,
        delete: KeyFunction? = nil
    ) {
        self.init(
            read: { key in try await readValue(key).map { .value($0) } },
            write: write,
            delete: delete
        )
    }

    public func read(_ key: Key) async throws -> StoreRecord<Value>? {
        try await readFunction(key)
    }

    public func write(_ key: Key, _ value: Value) async throws {
        try await writeFunction(key, value)
    }

    public func insertIfAbsent(_ key: Key, _ value: Value) async throws -> Bool {
        guard let insertFunction else { throw Self.unsupported(.insertIfAbsent) }
        return try await insertFunction(key, value)
    }

    public func delete(_ key: Key) async throws {
        guard let deleteFunction else { throw Self.unsupported(.delete) }
        try await deleteFunction(key)
    }

    public func writeTombstone(_ key: Key) async throws {
        guard let tombstoneFunction else { throw Self.unsupported(.writeTombstone) }
        try await tombstoneFunction(key)
    }

    public func keys(after cursor: Key?, limit: Int) async throws -> [Key] {
        guard let listFunction else { throw Self.unsupported(.listKeys) }
        return try await listFunction(cursor, limit)
    }

    private static func unsupported(_ operation: StoreOperation) -> ZDDMError {
        ZDDMError(.unsupported, operation: operation, message: "no function was given for it")
    }
}
