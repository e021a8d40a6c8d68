import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import UserService
import ZDDM
import ZDDMSQL
import ZDDMSQLite

@Suite("User service through the ZDDM proxy")
struct UserServiceTests {
    @Test("a created user reads back, and a read at rate 1 fills New")
    func createReadAndFill() async throws {
        try await ServiceFixture.run { service in
            try await service.put(1, user(1))
            #expect(try await service.old.read(1)?.value == user(1))
            #expect(try await service.inNew(1) == nil, "at rate 0 New is not written")
            #expect(try await service.get(1) == user(1))
            #expect(try await service.inNew(1) == nil, "at rate 0 a read does not fill New")

            try await service.setRate(1)
            #expect(try await service.get(1) == user(1))
            #expect(try await service.inNew(1)?.value == user(1), "the read at rate 1 filled New from Old")
            #expect(try await service.get(1) == user(1))
            #expect(try await service.status().unsafeKeys == 0)
        }
    }

    @Test("unknown users give 404, bad ids and bad JSON give 400, deletes leave a tombstone in New")
    func notFoundBadInputAndDelete() async throws {
        try await ServiceFixture.run { service in
            #expect(try await service.send(.get, "/users/99").status == .notFound)
            #expect(try await service.send(.get, "/users/abc").status == .badRequest)
            #expect(try await service.send(.put, "/users/2", "{not json").status == .badRequest)
            #expect(try await service.send(.put, "/users/2", #"{"name": "No Email"}"#).status == .badRequest)
            #expect(try await service.old.read(2) == nil, "a rejected body writes nothing")

            try await service.setRate(1)
            try await service.put(3, user(3))
            #expect(try await service.inNew(3)?.value == user(3), "writes at rate 1 go to both stores")
            #expect(try await service.send(.delete, "/users/3").status == .noContent)
            #expect(try await service.get(3) == nil)
            #expect(try await service.old.read(3) == nil)
            #expect(try await service.inNew(3)?.isTombstone == true)
        }
    }

    @Test("ramping the rate admits exactly the keys the SHA-1 gate picks, and never forgets the high-water rate")
    func rampRate() async throws {
        try await ServiceFixture.run { service in
            let ids = Array(Int64(1)...40)
            for id in ids { try await service.put(id, user(id)) }
            let hasher = SHA1RateHasher()
            for rate in [0.25, 0.5] {
                let status = try await service.setRate(rate)
                #expect(status.rate == rate)
                #expect(status.saved == true)
                for id in ids { #expect(try await service.get(id) == user(id)) }
                var inNew: Set<Int64> = []
                for id in ids {
                    if try await service.inNew(id) != nil { inNew.insert(id) }
                }
                let expected = Set(ids.filter { hasher.hashRate(of: $0) < rate })
                #expect(inNew == expected, "rate \(rate)")
                #expect(!expected.isEmpty && expected.count < ids.count, "the sample should split at rate \(rate)")
            }
            let down = try await service.setRate(0.1)
            #expect(down.rate == 0.1)
            #expect(down.highWaterRate == 0.5)
            #expect(try await service.status().rate == 0.1)
        }
    }

    @Test("with the killswitch on writes still succeed and New is untouched; after it is off reads are fresh")
    func killswitch() async throws {
        try await ServiceFixture.run { service in
            try await service.setRate(1)
            try await service.put(7, user(7, 1))
            #expect(try await service.inNew(7)?.value == user(7, 1))

            #expect(try await service.setKillswitch(true).killswitch)
            try await service.put(7, user(7, 2))
            try await service.put(8, user(8))
            #expect(try await service.inNew(7)?.value == user(7, 1), "New is not touched while the switch is on")
            #expect(try await service.inNew(8) == nil)
            #expect(try await service.get(7) == user(7, 2))
            #expect(try await service.status().unsafeKeys >= 1, "the proxy remembers the key New holds stale")

            #expect(try await service.setKillswitch(false).killswitch == false)
            #expect(try await service.get(7) == user(7, 2), "never the stale copy New still held")
            #expect(try await service.get(7) == user(7, 2))
            #expect(try await service.inNew(7)?.value == user(7, 2), "New refilled from Old")
            #expect(try await service.get(8) == user(8))
            #expect(try await service.send(.put, "/migration/killswitch", "maybe").status == .badRequest)
        }
    }

    @Test("the backfill endpoint copies cold rows, and a second pass finds them present")
    func backfillCopiesColdRows() async throws {
        try await ServiceFixture.run { service in
            let ids = Array(Int64(100)..<130)
            for id in ids { try await service.old.write(id, user(id)) }  // cold: never seen by the proxy
            try await service.setRate(1)

            let first = try await service.json(BackfillResult.self, .post, "/migration/backfill")
            #expect(first.finished)
            #expect(first.rowsScanned == ids.count)
            #expect(first.rowsCopied == ids.count)
            for id in ids { #expect(try await service.inNew(id)?.value == user(id)) }

            let second = try await service.json(BackfillResult.self, .post, "/migration/backfill")
            #expect(second.finished)
            #expect(second.rowsCopied == 0)
            #expect(second.rowsPresent == ids.count)

            try await service.setKillswitch(true)
            #expect(try await service.send(.post, "/migration/backfill").status == .conflict)
        }
    }

    @Test("the verify endpoint reports 0 mismatches after a backfill, finds a stale row and repairs it")
    func verify() async throws {
        try await ServiceFixture.run { service in
            for id in Int64(1)...10 { try await service.put(id, user(id)) }
            try await service.setRate(1)
            try await service.put(11, user(11))
            _ = try await service.json(BackfillResult.self, .post, "/migration/backfill")

            let clean = try await service.json(VerifyResult.self, .post, "/migration/verify")
            #expect(clean.mismatches == 0)
            #expect(clean.keysInOld == 11)
            #expect(clean.keysInNew == 11)

            try await service.new.write(3, user(3, 99))  // New goes wrong behind the proxy's back
            let dirty = try await service.json(VerifyResult.self, .post, "/migration/verify")
            #expect(dirty.mismatches == 1)
            #expect(dirty.counts["different_value"] == 1)
            #expect(dirty.sample == [VerifyResult.Mismatch(id: 3, kind: "different_value")])
            #expect(dirty.repaired == 0)

            let repaired = try await service.json(VerifyResult.self, .post, "/migration/verify?repair=true")
            #expect(repaired.repaired == 1)
            #expect(try await service.json(VerifyResult.self, .post, "/migration/verify").mismatches == 0)
            #expect(try await service.get(3) == user(3))
        }
    }

    @Test("an invalid rate gives 400 with a clear message and leaves the rate unchanged")
    func invalidRate() async throws {
        try await ServiceFixture.run { service in
            try await service.setRate(0.3)
            for body in ["1.5", "-0.1", "abc", "", #""0.5""#, "nan", "[0.5]", "0.5 0.6"] {
                let response = try await service.send(.put, "/migration/rate", body)
                #expect(response.status == .badRequest, "body \(body)")
                #expect(String(buffer: response.body).contains("a number from 0 to 1"), "body \(body)")
            }
            let status = try await service.status()
            #expect(status.rate == 0.3)
            #expect(status.highWaterRate == 0.3)
        }
    }

    @Test("a failing Old store gives 503 naming the store, never a value")
    func oldFailure() async throws {
        try await ServiceFixture.run { service in
            try await service.put(1, user(1))
            try await service.database.execute("DROP TABLE users_v1")
            for (method, body) in [(HTTPRequest.Method.get, nil), (.put, #"{"name": "N", "email": "e@x"}"#)] {
                let response = try await service.send(method, "/users/1", body)
                let text = String(buffer: response.body)
                #expect(response.status == .serviceUnavailable, "\(method): \(text)")
                #expect(text.contains("Old store"))
                #expect(!text.contains("User 1") && !text.contains("example.com") && !text.contains("e@x"))
            }
        }
    }

    @Test("the rate, high-water rate and killswitch survive a restart")
    func gateStateSurvivesRestart() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("user-service-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("users.sqlite").path
        try await ServiceFixture.run(databasePath: path) { service in
            try await service.setRate(0.8)
            try await service.setRate(0.4)
            try await service.setKillswitch(true)
        }
        try await ServiceFixture.run(databasePath: path) { service in
            let status = try await service.status()
            #expect(status.rate == 0.4)
            #expect(status.highWaterRate == 0.8)
            #expect(status.killswitch)
        }
    }
}
