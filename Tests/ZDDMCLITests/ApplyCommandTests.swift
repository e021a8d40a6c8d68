import Foundation
import Testing
import ZDDM
import ZDDMSQL
import ZDDMSQLite

@Suite("zddm apply: the change applier as a process", .serialized)
struct ApplyCommandTests {
    @Test("Plain-SQL changes on Old reach New through zddm apply --until-caught-up; verify then finds 0 mismatches")
    func appliesBypassWrites() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let oldPath = folder.appendingPathComponent("old.sqlite").path
        let newURL = "sqlite:\(folder.path)/new.sqlite"
        try await makeOldTable(at: oldPath, rows: 2_000)
        #expect(try zddm(["capture", "install", "--old", "sqlite:\(oldPath)", "--table", "kv"]).status == 0)
        let copied = try zddm(["backfill", "--from", "sqlite:\(oldPath)", "--to", newURL, "--table", "kv"])
        #expect(copied.status == 0, "\(copied.error)")

        // A writer that bypasses the proxy: updates, deletes and inserts in plain SQL.
        let database = try SQLiteDatabase.open(url: "sqlite:\(oldPath)")
        try await database.execute("UPDATE kv SET value = x'0102' WHERE key <= 100")
        try await database.execute("DELETE FROM kv WHERE key > 1900")
        try await database.execute("INSERT INTO kv (key, value) VALUES (5000, x'ff')")
        try database.close()
        let stale = try zddm(["verify", "--from", "sqlite:\(oldPath)", "--to", newURL, "--table", "kv"])
        #expect(stale.status == 1, "New has not seen the plain-SQL changes yet: \(stale.output)")

        let common = ["apply", "--from", "sqlite:\(oldPath)", "--to", newURL, "--table", "kv", "--migration", "m"]
        // The shared state says whether New is written at all: stage off (the default) writes nothing.
        let off = try zddm(common + ["--until-caught-up"])
        #expect(off.status != 0 && off.error.contains("does not write New"), "\(off.error)")
        let live = try zddm(
            ["control", "set", "--state", "sqlite:\(oldPath)", "--migration", "m", "--stage", "live", "--rate", "1"]
        )
        #expect(live.status == 0, "\(live.error)")
        let applied = try zddm(common + ["--until-caught-up"])
        #expect(applied.status == 0, "\(applied.output)\(applied.error)")
        #expect(applied.output.contains("caught up: 201 changes applied"), "\(applied.output)")
        let clean = try zddm(["verify", "--from", "sqlite:\(oldPath)", "--to", newURL, "--table", "kv"])
        #expect(clean.status == 0 && clean.output.contains(" 0 mismatches"), "\(clean.output)")
        let again = try zddm(common + ["--until-caught-up"])
        #expect(again.output.contains("caught up: 0 changes applied"), "\(again.output)")

        let plain = folder.appendingPathComponent("plain.sqlite").path
        try await makeOldTable(at: plain, rows: 10)
        let refused = try zddm([
            "apply", "--from", "sqlite:\(plain)", "--to", newURL, "--table", "kv", "--migration", "m",
        ])
        #expect(refused.status != 0 && refused.error.contains("zddm capture install"), "\(refused.error)")
    }
}
