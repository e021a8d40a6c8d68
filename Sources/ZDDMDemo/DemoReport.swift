import Foundation

/// What the demo did, written as `report.json`.
struct DemoReport: Codable, Sendable {
    struct Phase: Codable, Sendable {
        var name: String
        var rate: Double
        var seconds: Double
        var requests: Int64
        var failedRequests: Int64
        var reads: Int64
        var shareOfReadsServedByNew: Double
        var staleReads: Int
        var bypassLagP50Milliseconds: Double?
        var bypassLagP99Milliseconds: Double?
    }

    struct Sample: Codable, Sendable {
        var seconds: Double
        var shareOfReadsServedByNew: Double
        var rate: Double
        var phase: String
    }

    struct VerifySummary: Codable, Sendable {
        var keysInOld: Int
        var keysInNew: Int
        var mismatches: Int
        var missingInNew: Int
        var extraInNew: Int
        var differentValues: Int
        var tombstonesInNew: Int
    }

    var old: String
    var new: String
    var rows: Int
    var clients: Int
    /// Instance processes (`zddm worker --fleet`), besides the bypass writer.
    var instances: Int
    var requests: Int64 = 0
    var failedRequests: Int64 = 0
    /// Reads the consistency checker looked at, and the stale and phantom ones among them.
    var readsChecked = 0
    var staleReads = 0
    var phantomReads = 0
    var newFailuresAbsorbed: Int64 = 0
    /// Writes that waited out the fleet's barrier (New missed them) before they were acknowledged.
    var barrierWaits: Int64 = 0
    /// Keys the change applier copied from Old's change table into New.
    var changesApplied: Int64 = 0
    /// Writes into Old with plain SQL, past the proxy, and how long New took to hold them.
    var bypassWrites = 0
    var bypassLagP50Milliseconds: Double?
    var bypassLagP99Milliseconds: Double?
    var shareOfReadsServedByNewAfterBackfill: Double = 0
    var backfilledRows: Int = 0
    /// Deleted keys whose tombstones the backfill copied into New.
    var backfilledDeletions: Int = 0
    var applierCaughtUp = false
    var instancesExitedCleanly = false
    var verify: VerifySummary?
    var phases: [Phase] = []
    var samples: [Sample] = []
    var wallTimeSeconds: Double = 0

    var succeeded: Bool {
        failedRequests == 0 && staleReads == 0 && phantomReads == 0 && verify?.mismatches == 0 && applierCaughtUp
            && instancesExitedCleanly
    }

    func writeJSON(to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: url, options: .atomic)
    }

    /// An SVG line chart of the share of reads served by New over time, with the phases marked.
    func svgChart() -> String {
        let width = 900.0
        let height = 360.0
        let left = 60.0
        let right = 20.0
        let top = 30.0
        let bottom = 60.0
        let plotWidth = width - left - right
        let plotHeight = height - top - bottom
        let end = max(samples.last?.seconds ?? 1, 1)
        func x(_ seconds: Double) -> Double { left + seconds / end * plotWidth }
        func y(_ share: Double) -> Double { top + (1 - share) * plotHeight }
        func f(_ value: Double) -> String { String(format: "%.1f", value) }

        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(left))" y="18" font-size="14" font-weight="bold">\
            Share of reads served by New (line) and gate rate (dashed)</text>

            """
        // Phase bands and labels.
        var phaseStart = 0.0
        for (index, phase) in phases.enumerated() {
            let startX = x(phaseStart)
            let endX = x(min(end, phaseStart + phase.seconds))
            if index % 2 == 0 {
                svg += "<rect x=\"\(f(startX))\" y=\"\(f(top))\" width=\"\(f(max(0, endX - startX)))\" "
                svg += "height=\"\(f(plotHeight))\" fill=\"#f2f2f2\"/>\n"
            }
            svg += "<text x=\"\(f((startX + endX) / 2))\" y=\"\(f(height - bottom + 32 + Double(index % 2) * 14))\" "
            svg += "text-anchor=\"middle\" font-size=\"10\">\(escape(phase.name))</text>\n"
            phaseStart += phase.seconds
        }
        // Axes and grid.
        for tick in stride(from: 0.0, through: 1.0, by: 0.25) {
            svg += "<line x1=\"\(f(left))\" x2=\"\(f(width - right))\" y1=\"\(f(y(tick)))\" y2=\"\(f(y(tick)))\" "
            svg += "stroke=\"#ccc\"/>\n"
            svg += "<text x=\"\(f(left - 6))\" y=\"\(f(y(tick) + 4))\" text-anchor=\"end\">\(Int(tick * 100))%</text>\n"
        }
        svg +=
            "<line x1=\"\(f(left))\" x2=\"\(f(left))\" y1=\"\(f(top))\" y2=\"\(f(top + plotHeight))\" stroke=\"#333\"/>\n"
        svg += "<text x=\"\(f(width - right))\" y=\"\(f(height - bottom + 14))\" text-anchor=\"end\">"
        svg += "\(f(end)) s</text>\n"
        svg += "<text x=\"\(f(left))\" y=\"\(f(height - bottom + 14))\">0 s</text>\n"
        // The rate, dashed, and the share, solid.
        let ratePoints = samples.map { "\(f(x($0.seconds))),\(f(y($0.rate)))" }.joined(separator: " ")
        svg += "<polyline points=\"\(ratePoints)\" fill=\"none\" stroke=\"#999\" stroke-dasharray=\"5,4\"/>\n"
        let sharePoints = samples.map { "\(f(x($0.seconds))),\(f(y($0.shareOfReadsServedByNew)))" }
            .joined(separator: " ")
        svg += "<polyline points=\"\(sharePoints)\" fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\"/>\n"
        svg += "</svg>\n"
        return svg
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }

    /// The human-readable summary printed at the end.
    func summary() -> String {
        func milliseconds(_ value: Double?) -> String { value.map { String(format: "%.0f ms", $0) } ?? "-" }
        var lines: [String] = []
        lines.append("ZDDM demo report")
        lines.append("  Old: \(old)")
        lines.append("  New: \(new)")
        lines.append(
            "  rows: \(rows), clients: \(clients) in \(instances) instance processes and a bypass writer, wall time: "
                + String(format: "%.1f s", wallTimeSeconds)
        )
        lines.append("  requests served: \(requests), failed requests: \(failedRequests)")
        lines.append("  stale reads: \(staleReads), phantom reads: \(phantomReads) (of \(readsChecked) reads checked)")
        lines.append("  New failures absorbed (callers never saw them): \(newFailuresAbsorbed)")
        lines.append("  barrier waits: \(barrierWaits), changes applied from Old's change table: \(changesApplied)")
        lines.append(
            "  bypass writes: \(bypassWrites), applier lag p50 \(milliseconds(bypassLagP50Milliseconds)), "
                + "p99 \(milliseconds(bypassLagP99Milliseconds))"
        )
        lines.append("  backfilled rows: \(backfilledRows), deletions: \(backfilledDeletions)")
        lines.append(
            String(
                format: "  share of reads served by New after the backfill: %.1f%%",
                shareOfReadsServedByNewAfterBackfill * 100
            )
        )
        lines.append("  share of reads served by New, per phase:")
        for phase in phases {
            let share = String(format: "%5.1f%%", phase.shareOfReadsServedByNew * 100)
            let rate = String(format: "%g%%", phase.rate * 100)
            let name = phase.name.padding(toLength: 22, withPad: " ", startingAt: 0)
            lines.append(
                "    \(name) rate \(rate.padding(toLength: 5, withPad: " ", startingAt: 0))  \(share)"
                    + "  (\(phase.reads) reads, \(phase.failedRequests) failed, \(phase.staleReads) stale, "
                    + "bypass lag p99 \(milliseconds(phase.bypassLagP99Milliseconds)))"
            )
        }
        if !applierCaughtUp { lines.append("  the change applier did not catch up") }
        if !instancesExitedCleanly { lines.append("  an instance process failed") }
        if let verify {
            lines.append(
                "  verify: \(verify.keysInOld) keys in Old, \(verify.keysInNew) in New, \(verify.mismatches) mismatches"
            )
        }
        lines.append(succeeded ? "  result: OK" : "  result: FAILED")
        return lines.joined(separator: "\n")
    }
}
