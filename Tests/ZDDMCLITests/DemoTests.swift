import Foundation
import Testing

@Suite("zddm demo", .serialized)
struct DemoTests {
    struct Report: Decodable {
        struct Verify: Decodable { var mismatches: Int }
        struct Phase: Decodable {
            var name: String
            var shareOfReadsServedByNew: Double
            var failedRequests: Int
            var staleReads: Int
        }
        var requests: Int
        var failedRequests: Int
        var instances: Int
        var readsChecked: Int
        var staleReads: Int
        var phantomReads: Int
        var newFailuresAbsorbed: Int
        var bypassWrites: Int
        var bypassLagP50Milliseconds: Double?
        var bypassLagP99Milliseconds: Double?
        var shareOfReadsServedByNewAfterBackfill: Double
        var backfilledRows: Int
        var backfilledDeletions: Int
        var applierCaughtUp: Bool
        var instancesExitedCleanly: Bool
        var verify: Verify
        var phases: [Phase]
    }

    func runDemo(_ extra: [String]) throws -> (Run, Report, String) {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let run = try zddm(["demo", "--rows", "4000", "--phase-seconds", "1", "--out", folder.path] + extra)
        let report = try JSONDecoder().decode(
            Report.self,
            from: Data(contentsOf: folder.appendingPathComponent("report.json"))
        )
        let chart = try String(contentsOf: folder.appendingPathComponent("chart.svg"), encoding: .utf8)
        return (run, report, chart)
    }

    @Test("The demo migrates live on SQLite, 3 instance processes and a bypass writer: 0 failed, 0 stale, 0 mismatches")
    func sqlite() throws {
        let (run, report, chart) = try runDemo([])
        #expect(run.status == 0, "\(run.output)\(run.error)")
        #expect(run.output.contains("result: OK"))
        #expect(report.instances == 3)
        #expect(report.failedRequests == 0)
        #expect(report.staleReads == 0 && report.phantomReads == 0)
        #expect(report.readsChecked > 500)
        #expect(report.verify.mismatches == 0)
        #expect(report.applierCaughtUp && report.instancesExitedCleanly)
        #expect(report.requests > 1_000)
        #expect(report.newFailuresAbsorbed > 0)  // the outage happened, and no caller saw it
        #expect(report.bypassWrites > 0)
        #expect(report.bypassLagP50Milliseconds != nil && report.bypassLagP99Milliseconds != nil)
        #expect(report.shareOfReadsServedByNewAfterBackfill > 0.5)
        #expect(report.backfilledRows > 0)
        #expect(report.backfilledDeletions > 0)  // keys deleted in Old only, before their rate came
        #expect(report.phases.allSatisfy { $0.staleReads == 0 && $0.failedRequests == 0 })
        #expect(report.phases.count == 9)
        let share = Dictionary(uniqueKeysWithValues: report.phases.map { ($0.name, $0.shareOfReadsServedByNew) })
        #expect(share["rate 0%"] == 0)
        #expect(share["New outage, killswitch"].map { $0 < 0.2 } == true)
        #expect(share["after backfill"].map { $0 > 0.5 } == true)
        #expect(chart.hasPrefix("<svg") && chart.contains("polyline"))
    }

    @Test("Bad demo options are refused with one line")
    func badOptions() throws {
        let run = try zddm(["demo", "--rows", "0"])
        #expect(run.status != 0)
        #expect(run.error.hasPrefix("Error: --rows must be in"))
    }
}
