/// A fast, non-cryptographic rate hasher for hot paths: FNV-1a 64 followed by the MurmurHash3 `fmix64`
/// finalizer.
///
/// Definition, bit-exact, so other languages can implement it:
///
/// 1. `h = 0xcbf29ce484222325`; for each input byte `b`: `h = (h XOR b) * 0x100000001b3` (mod 2⁶⁴).
///    The input is the key's bytes, or with a salt `UTF-8(salt) ‖ 0x00 ‖ key bytes`.
/// 2. `h ^= h >> 33; h *= 0xff51afd7ed558ccd; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33`
///    (all mod 2⁶⁴).
/// 3. rate = `Double(h >> 11) / 2⁵³`, a value in `[0, 1)`.
///
/// Test vectors (unsalted; FNV-1a after step 1, mixed hash after step 2, rate after step 3), computed with an
/// independent Python implementation of this definition; the first stage matches the FNV reference vectors:
///
/// | key | FNV-1a 64 | after `fmix64` | rate |
/// | --- | --- | --- | --- |
/// | `""` | 0xcbf29ce484222325 | 0xefd01f60ba992926 | 0.93676944839044 |
/// | `"a"` | 0xaf63dc4c8601ec8c | 0x82a2a958a9bece5b | 0.5102945176565711 |
/// | `"foobar"` | 0x85944171f73967e8 | 0x2c22194922d1672b | 0.17239530597254804 |
/// | `"user:42"` | 0x6c151ea4dcd221c2 | 0x998817bee6718248 | 0.5997328606667391 |
///
/// Step 2 is there because FNV-1a alone spreads short, similar keys (`"1"`, `"2"`, …) poorly in its high bits.
public struct FastRateHasher: GateHasher {
    /// The salt, or `nil` for none.
    public let salt: String?
    private let seed: UInt64

    /// Creates the hasher.
    /// - Parameter salt: A salt such as the migration's name, or `nil` (the default).
    public init(salt: String? = nil) {
        self.salt = salt
        var h = Self.offsetBasis
        if let salt {
            for byte in salt.utf8 { h = (h ^ UInt64(byte)) &* Self.prime }
            h = (h ^ 0) &* Self.prime
        }
        self.seed = h
    }

    static let offsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    static let prime: UInt64 = 0x0000_0100_0000_01b3

    /// FNV-1a 64 of the bytes, continuing from `state`.
    @inlinable
    static func fnv1a(_ bytes: UnsafeRawBufferPointer, from state: UInt64) -> UInt64 {
        var h = state
        for byte in bytes { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return h
    }

    /// The MurmurHash3 64-bit finalizer.
    @inlinable
    static func fmix64(_ value: UInt64) -> UInt64 {
        var h = value
        h ^= h >> 33
        h = h &* 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        h = h &* 0xc4ce_b9fe_1a85_ec53
        h ^= h >> 33
        return h
    }

    /// The 64-bit hash of the bytes (steps 1 and 2 of the definition).
    /// - Parameter bytes: The key's bytes.
    /// - Returns: The mixed FNV-1a 64 hash.
    public func hash64(ofBytes bytes: UnsafeRawBufferPointer) -> UInt64 {
        Self.fmix64(Self.fnv1a(bytes, from: seed))
    }

    public func hashRate(ofBytes bytes: UnsafeRawBufferPointer) -> Double {
        Double(hash64(ofBytes: bytes) >> 11) * 0x1p-53
    }
}
