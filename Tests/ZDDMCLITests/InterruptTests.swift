import Foundation
import Testing
import ZDDM
import ZDDMSQL
import ZDDMSQLite

@Suite("zddm backfill and Ctrl-C", .serialized)
struct InterruptTests {
    @Test("SIGINT stops the backfill after the batches in hand, with the checkpoint saved; the next run finishes")
    func interrupt() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let oldPath = folder.appendingPathComponent("old.sqlite").path
        let newPath = folder.appendingPathComponent("new.sqlite").path
        try await makeOldTable(at: oldPath, rows: 30_000)
        let arguments = [
            "backfill", "--from", "sqlite:\(oldPath)", "--to", "sqlite:\(newPath)", "--table", "kv", "--batch", "500",
        ]
        let process = Process()
        process.executableURL = try zddmBinary()
        // Slow enough (30 s for the whole table) that a busy machine still interrupts it in the middle.
        process.arguments = arguments + ["--max-rows-per-second", "1000"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Interrupt once the backfill has saved a checkpoint after a batch (so it runs, its signal handlers too).
        let running = await waitUntil { (await savedCheckpoint(inSQLite: newPath)?.rowsScanned ?? 0) > 0 }
        #expect(running, "the backfill saved no checkpoint after a batch")
        kill(process.processIdentifier, SIGINT)
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 130)
        #expect(text.contains("backfill stopped, checkpoint saved"), "\(text.suffix(300))")

        let saved = try #require(await savedCheckpoint(inSQLite: newPath))
        #expect(!saved.finished)
        #expect(saved.rowsScanned > 0 && saved.rowsScanned < 30_000)
        #expect(saved.rowsScanned.isMultiple(of: 500))

        let resumed = try zddm(arguments)
        #expect(resumed.status == 0)
        #expect(resumed.output.contains("backfill finished: 30000 rows scanned"))
    }
}
