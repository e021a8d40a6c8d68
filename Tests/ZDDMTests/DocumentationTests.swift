import Foundation
import MetricsTestKit
import Testing

@testable import ZDDM

/// Keeps the documentation in step with the code: the metrics table, the curation of every public type, and no
/// citation of a file outside the repository.
@Suite("Documentation")
struct DocumentationTests {
    /// The package's root folder, found from this file's path.
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // ZDDMTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()

    /// The modules whose DocC catalogs curate their public types.
    static let modules = ["ZDDM", "ZDDMSQL", "ZDDMSQLite", "ZDDMPostgres", "ZDDMControl", "ZDDMTesting"]

    /// Names in the documentation that start with `zddm_` but are not metrics: tables, and the original ZDDM's
    /// Erlang modules.
    static let namesThatAreNotMetrics: Set<String> = [
        "zddm_checkpoints", "zddm_demo_old", "zddm_demo_new", "zddm_kv", "zddm_hashers", "zddm_storage_adapter",
        "zddm_version", "zddm_fleet", "zddm_verify_runs", "zddm_verify_chunks",
    ]

    /// Every metric the library defines: the proxy's and the fleet's.
    static let definedMetrics = ProxyMetrics.labels + FleetMetricLabels.all

    static func read(_ path: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    /// The files under `folder` (relative to the root) whose names end with `suffix`, as paths relative to the root.
    static func files(under folder: String, endingWith suffix: String) -> [String] {
        let base = root.appendingPathComponent(folder).path
        guard let enumerator = FileManager.default.enumerator(atPath: base) else { return [] }
        var paths: [String] = []
        for case let relative as String in enumerator where relative.hasSuffix(suffix) {
            paths.append(folder + "/" + relative)
        }
        return paths.sorted()
    }

    /// README.md and every Markdown file of the DocC catalogs.
    static func markdownFiles() -> [String] {
        ["README.md"] + files(under: "Sources", endingWith: ".md").filter { $0.contains(".docc/") }
    }

    /// The lines of the section under `heading` (a `## ` heading), up to the next `## ` heading.
    static func section(_ heading: String, of text: String) -> [Substring] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0 == "## \(heading)" }) else { return [] }
        let rest = lines[(start + 1)...]
        return Array(rest.prefix { !$0.hasPrefix("## ") })
    }

    /// Every `zddm_…` name in `text` that is not part of a longer name (such as `<table>_zddm_tombstones`).
    static func zddmNames(in text: String) -> Set<String> {
        var names: Set<String> = []
        for match in text.matches(of: #/[A-Za-z0-9_<>]*zddm_[a-z0-9_]*[a-z0-9]/#) {
            let name = String(match.output)
            if name.hasPrefix("zddm_") { names.insert(name) }
        }
        return names
    }

    @Test("ProxyMetrics.labels is exactly what the metrics code creates")
    func labelsMatchTheCode() {
        let factory = TestMetrics()
        _ = ProxyMetrics(migration: "docs", factory: factory)
        let created =
            factory.counters.map(\.label) + factory.recorders.map(\.label) + factory.timers.map(\.label)
            + factory.meters.map(\.label)
        #expect(Set(created) == Set(ProxyMetrics.labels))
        #expect(Set(ProxyMetrics.labels).count == ProxyMetrics.labels.count, "a label is listed twice")
    }

    @Test("The Runbook's metrics table lists every metric the code defines, and no other")
    func metricsTableMatchesTheCode() throws {
        let table = Self.section("Metrics", of: try Self.read("Sources/ZDDM/Docs.docc/Runbook.md"))
            .filter { $0.hasPrefix("| `zddm_") }
        #expect(!table.isEmpty, "no metrics table in the Runbook's Metrics section")
        var documented: [String] = []
        for row in table {
            let firstCell = row.split(separator: "|", omittingEmptySubsequences: true).first ?? ""
            documented += Self.zddmNames(in: String(firstCell))
        }
        let defined = Set(Self.definedMetrics)
        for label in Self.definedMetrics {
            #expect(documented.contains(label), "\(label) is missing from the Runbook's metrics table")
        }
        for label in documented {
            #expect(defined.contains(label), "the metrics table lists \(label), which the code does not define")
        }
        #expect(Set(documented).count == documented.count, "a metric is listed twice")
    }

    @Test("Every zddm_ metric the documentation mentions is one the code defines")
    func documentationMentionsOnlyDefinedMetrics() throws {
        let defined = Set(Self.definedMetrics)
        for path in Self.markdownFiles() {
            for name in Self.zddmNames(in: try Self.read(path))
            where !defined.contains(name) && !Self.namesThatAreNotMetrics.contains(name) {
                Issue.record("\(path) mentions \(name), which is not a metric the code defines")
            }
        }
    }

    @Test("Each module's landing page curates every public type and function of the module, and only those")
    func everyPublicTypeIsCurated() throws {
        let declaration = #/^(?:@\w+ )*public (?:final )?(?:class|struct|enum|protocol|actor|typealias|func) (\w+)/#
        let curatedSymbol = #/^\s*- ``(\w+)/#
        for module in Self.modules {
            var declared: Set<String> = []
            for path in Self.files(under: "Sources/\(module)", endingWith: ".swift") {
                for line in try Self.read(path).split(separator: "\n") {
                    if let match = line.firstMatch(of: declaration) { declared.insert(String(match.output.1)) }
                }
            }
            let landing = "Sources/\(module)/Docs.docc/\(module).md"
            var curated: Set<String> = []
            for line in Self.section("Topics", of: try Self.read(landing)) {
                if let match = line.firstMatch(of: curatedSymbol) { curated.insert(String(match.output.1)) }
            }
            #expect(!declared.isEmpty, "no public declaration found in Sources/\(module)")
            for name in declared.subtracting(curated).sorted() {
                Issue.record("\(landing) does not curate \(name) in its Topics")
            }
            for name in curated.subtracting(declared).sorted() {
                Issue.record("\(landing) curates \(name), which is not a public type or function of \(module)")
            }
        }
    }

    @Test("No document, comment or test cites the team's working documents")
    func noCitationOfFilesOutsideTheRepository() throws {
        // Built from parts so that this file does not match itself.
        let cited = ["design", "style"].map { $0.uppercased() + ".md" }
        let paths =
            Self.markdownFiles() + Self.files(under: "Sources", endingWith: ".swift")
            + Self.files(under: "Tests", endingWith: ".swift")
        #expect(paths.count > 10)
        for path in paths {
            let text = try Self.read(path)
            for name in cited where text.contains(name) {
                Issue.record("\(path) mentions \(name)")
            }
        }
    }

    @Test("The README's links to files in the repository resolve")
    func readmeLinksResolve() throws {
        let readme = try Self.read("README.md")
        for match in readme.matches(of: #/\]\(([^)#:]+)\)/#) {
            let target = String(match.output.1)
            #expect(
                FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(target).path),
                "README.md links to \(target), which does not exist"
            )
        }
    }
}
