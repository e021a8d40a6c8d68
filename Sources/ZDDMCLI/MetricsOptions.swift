package import ArgumentParser
import Foundation

/// `--metrics-port` and `--metrics-host`: serve the process's metrics to Prometheus while a command runs.
package struct MetricsOptions: ParsableArguments {
    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics while the command runs (0: any free port).")
    package var metricsPort: Int?

    @Option(help: "The address the metrics server listens on (0.0.0.0 for every interface).")
    package var metricsHost: String = "127.0.0.1"

    package init() {}

    package func validate() throws {
        if let metricsPort, !(0...65_535).contains(metricsPort) {
            throw ValidationError("--metrics-port must be in 0…65535, got \(metricsPort)")
        }
        if metricsHost.isEmpty { throw ValidationError("--metrics-host must not be empty") }
    }

    /// Starts the metrics server if `--metrics-port` was given; the caller stops it. ``run(isolation:around:)``
    /// does both.
    ///
    /// Bootstraps the metrics system with Prometheus (once per process) and prints
    /// `metrics: http://HOST:PORT/metrics` on standard error.
    ///
    /// - Returns: The listening server, or `nil` without `--metrics-port`.
    /// - Throws: When the port cannot be bound.
    package func startServer() async throws -> MetricsServer? {
        guard let metricsPort else { return nil }
        let registry = MetricsServer.bootstrapMetricsSystem()
        let server = try await MetricsServer.start(host: metricsHost, port: metricsPort, registry: registry)
        FileHandle.standardError.write(Data("metrics: \(server.url)\n".utf8))
        return server
    }

    /// Runs `body`; with `--metrics-port`, serves the metrics while it runs.
    ///
    /// With a port, the metrics system is bootstrapped with Prometheus (once per process), the server is started
    /// before `body` and stopped after it, whether `body` returns or throws, and `metrics: http://HOST:PORT/metrics`
    /// is printed on standard error. Without a port, it only runs `body`. Create the migration inside `body`: its
    /// metrics are created when it is, and only those created after the bootstrap are served.
    ///
    /// - Parameters:
    ///   - isolation: The caller's isolation, in which `body` runs.
    ///   - body: The command's work.
    /// - Returns: What `body` returns.
    /// - Throws: What `body` throws, or the error from binding the port (before `body` runs).
    package func run<Result>(
        isolation: isolated (any Actor)? = #isolation,
        around body: () async throws -> Result
    ) async throws -> Result {
        guard let server = try await startServer() else { return try await body() }
        do {
            let result = try await body()
            await server.stop()
            return result
        } catch {
            await server.stop()
            throw error
        }
    }
}
