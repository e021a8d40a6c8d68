import Crypto

/// The SHA-1 rate hasher of the original ZDDM, bit for bit.
///
/// Definition (the original's Erlang `zddm_hashers:sha_hash_rate`): take the SHA-1 digest of the key's bytes,
/// read the *last four bytes* of the 20-byte digest as a big-endian unsigned 32-bit integer `n`, and return
/// `Double(n) / 4294967295.0`. Services in other languages that implement the same formula agree with this one
/// key by key. Examples: `"1"` → 0.22394041233322126, `"foo"` → 0.46036590343815414,
/// `"user:42"` → 0.0009606322275848669.
///
/// With a salt the digest is taken over `UTF-8(salt) ‖ 0x00 ‖ key bytes`, so two migrations with different
/// names ramp up different keys first. Without a salt (the default) it is the original's formula.
///
/// The result is in `[0, 1]`; it is exactly `1.0` only when `n` is `0xFFFFFFFF`, and such a key is admitted
/// only at rate 1.
public struct SHA1RateHasher: GateHasher {
    /// The salt, or `nil` for the original, unsalted formula.
    public let salt: String?
    private let seeded: Insecure.SHA1

    /// Creates the hasher.
    /// - Parameter salt: A salt such as the migration's name, or `nil` (the default) for the original formula.
    public init(salt: String? = nil) {
        self.salt = salt
        var hash = Insecure.SHA1()
        if let salt {
            hash.update(data: Array(salt.utf8))
            hash.update(data: [0])
        }
        self.seeded = hash
    }

    public func hashRate(ofBytes bytes: UnsafeRawBufferPointer) -> Double {
        var hash = seeded
        hash.update(bufferPointer: bytes)
        let digest = hash.finalize()
        let n = digest.withUnsafeBytes { raw -> UInt32 in
            let count = raw.count
            return UInt32(raw[count - 4]) << 24 | UInt32(raw[count - 3]) << 16 | UInt32(raw[count - 2]) << 8
                | UInt32(raw[count - 1])
        }
        return Double(n) / 4_294_967_295.0
    }
}
