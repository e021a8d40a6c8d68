import Testing
import ZDDM
import ZDDMTesting

@Suite("Hashers")
struct HasherTests {
    // Reference values: the original ZDDM's Erlang zddm_hashers:sha_hash_rate for the first three, and an independent
    // Python implementation (hashlib.sha1) of the same formula for the others.
    @Test(
        "SHA-1 rate matches the original ZDDM bit for bit",
        arguments: [
            ("1", 0.22394041233322126),
            ("foo", 0.46036590343815414),
            ("user:42", 0.0009606322275848669),
            ("42", 0.029658218386969113),
            ("-7", 0.3822358551859473),
        ]
    )
    func sha1Vectors(key: String, expected: Double) {
        #expect(SHA1RateHasher().hashRate(of: key) == expected)
    }

    @Test("Integers hash as their decimal digits, for every integer type")
    func integerKeys() {
        let hasher = SHA1RateHasher()
        #expect(hasher.hashRate(of: 42) == 0.029658218386969113)
        #expect(hasher.hashRate(of: -7) == 0.3822358551859473)
        #expect(hasher.hashRate(of: Int8(-7)) == hasher.hashRate(of: "-7"))
        #expect(hasher.hashRate(of: UInt8(42)) == hasher.hashRate(of: "42"))
        #expect(hasher.hashRate(of: Int16(1)) == 0.22394041233322126)
        #expect(hasher.hashRate(of: Int32(42)) == hasher.hashRate(of: "42"))
        #expect(hasher.hashRate(of: UInt32(1)) == hasher.hashRate(of: "1"))
        #expect(hasher.hashRate(of: UInt16(1)) == hasher.hashRate(of: "1"))
        #expect(hasher.hashRate(of: UInt(42)) == hasher.hashRate(of: "42"))
        #expect(Int64.min.gateBytes == Array("-9223372036854775808".utf8))
        #expect(UInt64.max.gateBytes == Array("18446744073709551615".utf8))
        #expect(Int.zero.gateBytes == Array("0".utf8))
    }

    @Test("An integer's bytes are its decimal digits: random 64-bit values, and a type wider than 64 bits")
    func integerDigits() {
        var random = SplitMix64(seed: 11)
        for _ in 0..<2_000 {
            let bits = random.next()
            // Every magnitude, from one digit to twenty, negative and positive.
            let value = Int64(bitPattern: bits) >> (bits % 64)
            #expect(value.gateBytes == Array(String(value).utf8))
            #expect(bits.gateBytes == Array(String(bits).utf8))
        }
        let wide = Int128(Int64.min) * 1_000_000_007 - 3
        #expect(wide.gateBytes == Array(String(wide).utf8))
        #expect(UInt128.max.gateBytes == Array(String(UInt128.max).utf8))
        #expect(Int128(-5).gateBytes == Array("-5".utf8))
    }

    @Test("Bytes hash as they are; strings as UTF-8")
    func byteKeys() {
        let hasher = SHA1RateHasher()
        #expect(hasher.hashRate(of: KeyBytes(Array("foo".utf8))) == 0.46036590343815414)
        #expect(hasher.hashRate(of: Array("user:42".utf8)) == 0.0009606322275848669)
        #expect(hasher.hashRate(of: "é") == hasher.hashRate(of: [0xc3, 0xa9] as [UInt8]))
        #expect(hasher.hashRate(of: "xfoo".dropFirst()) == 0.46036590343815414)
    }

    @Test("A user type supplies its own bytes")
    func customKey() {
        struct TenantKey: GateKey {
            var tenant: String
            var id: Int
            func withGateBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
                try "\(tenant)/\(id)".withGateBytes(body)
            }
        }
        #expect(
            SHA1RateHasher().hashRate(of: TenantKey(tenant: "acme", id: 7)) == SHA1RateHasher().hashRate(of: "acme/7")
        )
    }

    @Test("Salted SHA-1 differs from unsalted and matches the documented definition")
    func salted() {
        let salted = SHA1RateHasher(salt: "orders-v2")
        #expect(salted.hashRate(of: "1") == 0.6891563454850476)
        #expect(salted.hashRate(of: "user:42") == 0.6628650442377816)
        #expect(SHA1RateHasher(salt: nil).hashRate(of: "1") == 0.22394041233322126)
    }

    // Vectors from an independent Python implementation of FastRateHasher's documented definition; the FNV-1a
    // stage equals the FNV reference vectors ("" → 0xcbf29ce484222325, "a" → 0xaf63dc4c8601ec8c,
    // "foobar" → 0x85944171f73967e8).
    @Test(
        "Fast hasher matches its written definition",
        arguments: [
            ("", UInt64(0xefd0_1f60_ba99_2926), 0.93676944839044),
            ("a", 0x82a2_a958_a9be_ce5b, 0.5102945176565711),
            ("foobar", 0x2c22_1949_22d1_672b, 0.17239530597254804),
            ("user:42", 0x9988_17be_e671_8248, 0.5997328606667391),
        ]
    )
    func fastVectors(key: String, hash: UInt64, rate: Double) {
        let hasher = FastRateHasher()
        #expect(key.withGateBytes { hasher.hash64(ofBytes: $0) } == hash)
        #expect(hasher.hashRate(of: key) == rate)
    }

    @Test("Fast hasher with a salt")
    func fastSalted() {
        let hasher = FastRateHasher(salt: "orders-v2")
        #expect("1".withGateBytes { hasher.hash64(ofBytes: $0) } == 0x616c_6d94_1e64_196c)
        #expect(hasher.hashRate(of: "user:42") == 0.2829217490746767)
    }

    @Test("Gate pass count at rate 0.5 over keys 0…100000 is within 0.1% (the original's test)")
    func passRateSHA1() throws {
        let gate = try TrafficGate(rate: 0.5, hasher: SHA1RateHasher())
        let samples = 100_000
        var passes = 0
        var passesInt = 0
        for n in 0...samples {
            if gate.admits(String(n)) { passes += 1 }
            if gate.admits(n) { passesInt += 1 }
        }
        let blocks = samples + 1 - passes
        #expect(abs(Double(passes) - 0.5 * Double(samples)) < 0.001 * Double(samples))
        #expect(abs(Double(blocks) - 0.5 * Double(samples)) < 0.001 * Double(samples))
        #expect(passesInt == passes)
        // The reference count from hashlib, so a subtle change of the formula cannot hide inside the margin.
        #expect(passes == 49_981)
    }

    @Test("Fast hasher spreads keys 0…100000 evenly (within 1% at rates 0.1, 0.5, 0.9)")
    func passRateFast() throws {
        for rate in [0.1, 0.5, 0.9] {
            let gate = try TrafficGate(rate: rate, hasher: FastRateHasher())
            let passes = (0...100_000).reduce(0) { $0 + (gate.admits($1) ? 1 : 0) }
            #expect(abs(Double(passes) - rate * 100_001) < 0.01 * 100_001, "rate \(rate): \(passes) passes")
        }
    }
}
