/// Maps a key's canonical bytes to a hash rate in `[0, 1]`, the same in every process.
///
/// The gate admits a key when its hash rate is below the gate's rate. Implementations must be deterministic
/// across processes, machines and restarts (never use Swift's `Hasher`) and should spread keys evenly.
public protocol GateHasher: Sendable {
    /// The hash rate of a key's canonical bytes.
    ///
    /// - Parameter bytes: The key's bytes, as given by ``GateKey/withGateBytes(_:)``.
    /// - Returns: A value in `[0, 1]`.
    func hashRate(ofBytes bytes: UnsafeRawBufferPointer) -> Double
}

extension GateHasher {
    /// The hash rate of a key.
    ///
    /// - Parameter key: The key.
    /// - Returns: A value in `[0, 1]`.
    @inlinable
    public func hashRate(of key: some GateKey) -> Double {
        key.withGateBytes { hashRate(ofBytes: $0) }
    }
}
