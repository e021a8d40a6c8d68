import ArgumentParser
import CoreMetrics
import Foundation
import Prometheus
import Testing
import ZDDMCLI

@testable import ZDDM

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Sends one request to the metrics server and returns the status, the headers and the body.
private func request(
    _ path: String,
    method: String = "GET",
    port: Int
) async throws -> (status: Int, headers: [String: String], body: String) {
    let url = try #require(URL(string: "http://127.0.0.1:\(port)\(path)"))
    var request = URLRequest(url: url)
    request.httpMethod = method
    request.timeoutInterval = 10
    let (data, response) = try await URLSession.shared.data(for: request)
    let http = try #require(response as? HTTPURLResponse)
    var headers: [String: String] = [:]
    for (name, value) in http.allHeaderFields {
        if let name = name as? String, let value = value as? String { headers[name.lowercased()] = value }
    }
    return (http.statusCode, headers, String(decoding: data, as: UTF8.self))
}

@Suite("Metrics server")
struct MetricsServerTests {
    @Test("GET /metrics on a port the system chose serves Prometheus text; other paths 404, other methods 405")
    func servesMetrics() async throws {
        let registry = MetricsServer.bootstrapMetricsSystem()
        #expect(MetricsServer.bootstrapMetricsSystem() === registry, "a second bootstrap must reuse the registry")
        // A migration name no other test uses: the metrics system is the whole test process's, and a core of
        // another test with the same name would share (and, when it goes away, drop) the series.
        let migration = "metrics-test-\(UUID().uuidString.prefix(8).lowercased())"
        let rows = Counter(
            label: "zddm_backfill_rows_total",
            dimensions: [("migration", migration), ("outcome", "copied")]
        )
        rows.increment(by: 42)
        let duration = CoreMetrics.Timer(
            label: "zddm_shadow_read_duration",
            dimensions: [("migration", migration), ("store", "old")]
        )
        duration.recordMilliseconds(3)

        let server = try await MetricsServer.start(host: "127.0.0.1", port: 0, registry: registry)
        #expect(server.port > 0)
        #expect(server.url == "http://127.0.0.1:\(server.port)/metrics")

        let metrics = try await request("/metrics", port: server.port)
        #expect(metrics.status == 200)
        #expect(metrics.headers["content-type"] == MetricsServer.contentType)
        #expect(metrics.headers["connection"] == "close")
        let lines = metrics.body.split(separator: "\n")
        #expect(lines.contains { $0 == "# TYPE zddm_backfill_rows_total counter" })
        let line = lines.first {
            $0.hasPrefix("zddm_backfill_rows_total{") && $0.contains("migration=\"\(migration)\"")
                && $0.contains(#"outcome="copied""#)
        }
        #expect(line?.hasSuffix(" 42") == true, "no line for the counter in:\n\(metrics.body)")
        // A swift-metrics Timer is a histogram: the dashboard queries its _bucket series.
        #expect(lines.contains { $0.hasPrefix("zddm_shadow_read_duration_bucket{") })
        #expect(lines.contains { $0.hasPrefix("zddm_shadow_read_duration_count{") })

        let query = try await request("/metrics?name=x", port: server.port)
        #expect(query.status == 200)

        let notFound = try await request("/other", port: server.port)
        #expect(notFound.status == 404)
        #expect(notFound.headers["connection"] == "close")

        let post = try await request("/metrics", method: "POST", port: server.port)
        #expect(post.status == 405)
        #expect(post.headers["allow"] == "GET, HEAD")

        let head = try await request("/metrics", method: "HEAD", port: server.port)
        #expect(head.status == 200)
        #expect(head.body.isEmpty)

        await server.stop()
        await server.stop()  // a second stop does nothing
        await #expect(throws: (any Error).self) { try await request("/metrics", port: server.port) }
    }

    @Test("As a service, the server stops when its task is cancelled")
    func stopsOnCancellation() async throws {
        let server = try await MetricsServer.start(
            host: "127.0.0.1",
            port: 0,
            registry: PrometheusCollectorRegistry()
        )
        let task = Task { await server.run() }
        #expect(try await request("/metrics", port: server.port).status == 200)
        task.cancel()
        await task.value
        await #expect(throws: (any Error).self) { try await request("/metrics", port: server.port) }
    }

    @Test("--metrics-port: none by default, 0…65535, and the server runs only around the command's work")
    func options() async throws {
        let none = try MetricsOptions.parse([])
        #expect(none.metricsPort == nil)
        #expect(none.metricsHost == "127.0.0.1")
        #expect(try await none.startServer() == nil)
        #expect(try await none.run { 7 } == 7)
        #expect(throws: (any Error).self) { try MetricsOptions.parse(["--metrics-port", "65536"]) }
        #expect(throws: (any Error).self) { try MetricsOptions.parse(["--metrics-port", "-1"]) }

        let options = try MetricsOptions.parse(["--metrics-port", "0", "--metrics-host", "127.0.0.1"])
        let server = try #require(try await options.startServer())
        #expect(try await request("/metrics", port: server.port).status == 200)
        await server.stop()
    }

    @Test("zddm backfill --metrics-port serves the backfill's zddm_* metrics while it runs")
    func backfillServesMetrics() async throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let oldPath = folder.appendingPathComponent("old.sqlite").path
        try await makeOldTable(at: oldPath, rows: 20_000)
        let process = Process()
        process.executableURL = try zddmBinary()
        // Slow (20 s for the table) so that it is still running when scraped; stopped with SIGINT afterwards.
        process.arguments = [
            "backfill", "--from", "sqlite:\(oldPath)", "--to", "sqlite:\(folder.path)/new.sqlite", "--table", "kv",
            "--batch", "100", "--max-rows-per-second", "1000", "--metrics-port", "0", "--name", "metered",
        ]
        let errors = folder.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: errors)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        var port: Int?
        let announced = await waitUntil {
            let text = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
            guard let line = text.split(separator: "\n").first(where: { $0.contains("/metrics") }),
                let range = line.range(of: #":(\d+)/metrics"#, options: .regularExpression)
            else { return false }
            port = Int(line[range].dropFirst().dropLast("/metrics".count))
            return port != nil
        }
        #expect(announced, "no metrics URL announced")
        let bound = try #require(port)
        var body = ""
        let counted = await waitUntil {
            body = (try? await request("/metrics", port: bound).body) ?? ""
            return body.contains("zddm_backfill_rows_total") && body.contains("migration=\"metered\"")
        }
        #expect(counted, "\(body.prefix(2_000))")
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
    }
}

@Suite("Grafana dashboard")
struct DashboardTests {
    /// The package's root folder, found from this file's path.
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // ZDDMCLITests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()

    /// Every metric the library defines.
    static let defined = Set(ProxyMetrics.Label.all + FleetMetricLabels.all)

    /// The metrics that are timers, which Prometheus shows as histograms: `_bucket`, `_sum` and `_count` series.
    static let histograms: Set<String> = [ProxyMetrics.Label.shadowReadDuration]

    static func dashboard() throws -> [String: Any] {
        let data = try Data(contentsOf: root.appendingPathComponent("Dashboards/zddm.json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func panels() throws -> [[String: Any]] {
        try #require(try dashboard()["panels"] as? [[String: Any]])
    }

    /// Every `expr` of every panel's targets.
    static func expressions() throws -> [String] {
        try panels().flatMap { panel in
            (panel["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String }
        }
    }

    /// The metric names an expression queries.
    static func metricNames(in expression: String) -> Set<String> {
        Set(expression.matches(of: #/zddm_[a-z_]+/#).map { String($0.output) })
    }

    /// The metric a queried series belongs to: a histogram's series without their suffix.
    static func metric(ofSeries name: String) -> String {
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if histograms.contains(base) { return base }
        }
        return name
    }

    @Test("The dashboard is valid JSON with a title, a uid, variables, and panels that each have a title and a query")
    func shape() throws {
        let dashboard = try Self.dashboard()
        #expect((dashboard["title"] as? String)?.isEmpty == false)
        #expect((dashboard["uid"] as? String)?.isEmpty == false)
        let variables = (dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        let datasource = variables.first { $0["name"] as? String == "datasource" }
        #expect(datasource?["type"] as? String == "datasource")
        #expect(datasource?["query"] as? String == "prometheus")
        let migration = variables.first { $0["name"] as? String == "migration" }
        #expect(migration?["definition"] as? String == "label_values(zddm_reads_total, migration)")
        let panels = try Self.panels()
        #expect(panels.count >= 10)
        var ids: Set<Int> = []
        for panel in panels {
            let title = panel["title"] as? String ?? ""
            #expect(!title.isEmpty, "a panel has no title")
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty, "panel \(title) has no target")
            for target in targets {
                #expect((target["expr"] as? String)?.isEmpty == false, "panel \(title) has a target without expr")
            }
            if let id = panel["id"] as? Int { #expect(ids.insert(id).inserted, "panel id \(id) is used twice") }
        }
    }

    @Test("Every metric the dashboard queries is one the library defines, and every proxy metric is on it")
    func queriesDefinedMetrics() throws {
        let expressions = try Self.expressions()
        #expect(!expressions.isEmpty)
        var queried: Set<String> = []
        for expression in expressions {
            let names = Self.metricNames(in: expression)
            #expect(!names.isEmpty, "\(expression) queries no zddm_ metric")
            for name in names {
                let metric = Self.metric(ofSeries: name)
                #expect(
                    Self.defined.contains(metric),
                    "the dashboard queries \(name), which the library does not define"
                )
                queried.insert(metric)
            }
        }
        for label in ProxyMetrics.Label.all {
            #expect(queried.contains(label), "no panel shows \(label)")
        }
    }

    @Test("Every series the dashboard queries is one Prometheus really exposes for the library's metrics")
    func queriesExposedSeries() throws {
        let registry = PrometheusCollectorRegistry()
        _ = ProxyMetrics(migration: "dashboard", factory: PrometheusMetricsFactory(registry: registry))
        var exposed: Set<String> = []
        for line in registry.emitToString().split(separator: "\n") where !line.hasPrefix("#") {
            exposed.insert(String(line.prefix { $0 != "{" && $0 != " " }))
        }
        for name in try Self.expressions().reduce(into: Set<String>(), { $0.formUnion(Self.metricNames(in: $1)) }) {
            #expect(exposed.contains(name), "the dashboard queries \(name), which is not among \(exposed.sorted())")
        }
    }
}
