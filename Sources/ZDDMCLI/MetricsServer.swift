import CoreMetrics
import NIOCore
import NIOHTTP1
import NIOPosix
package import Prometheus
import ServiceLifecycle
import Synchronization

/// A minimal HTTP server for Prometheus: `GET /metrics` answers with the registry's metrics in the text exposition
/// format; any other path is 404, any other method 405.
///
/// Every response carries `Connection: close`, and the connection is closed once the response is written: a scrape
/// is one request, so the server keeps no idle connection open.
///
/// The server listens from ``start(host:port:registry:)`` until ``stop()``, or, run as a `Service`, until its task
/// is cancelled or a graceful shutdown is triggered.
package final class MetricsServer: Service, Sendable {
    /// The content type of Prometheus' text exposition format.
    package static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The address the server listens on, as given to ``start(host:port:registry:)``.
    package let host: String

    /// The port the server listens on: the one asked for, or the one the system chose when port 0 was asked for.
    package let port: Int

    private let channel: any Channel

    private init(host: String, port: Int, channel: any Channel) {
        self.host = host
        self.port = port
        self.channel = channel
    }

    /// The address of the metrics page, such as `http://127.0.0.1:9464/metrics`.
    package var url: String {
        let authority = host.contains(":") ? "[\(host)]" : host
        return "http://\(authority):\(port)/metrics"
    }

    /// Starts listening.
    ///
    /// - Parameters:
    ///   - host: The address to listen on (`127.0.0.1` for this machine only, `0.0.0.0` for every interface).
    ///   - port: The port, in 0…65535; 0 lets the system choose a free one (see ``port``).
    ///   - registry: The registry whose metrics `GET /metrics` returns.
    /// - Returns: The listening server.
    /// - Throws: When the address cannot be resolved or the port cannot be bound (for example, it is in use).
    package static func start(
        host: String,
        port: Int,
        registry: PrometheusCollectorRegistry
    ) async throws -> MetricsServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsRequestHandler(registry: registry))
                }
            }
            .bind(host: host, port: port)
            .get()
        let boundPort = channel.localAddress?.port ?? port
        return MetricsServer(host: host, port: boundPort, channel: channel)
    }

    /// Stops listening. Responses being written are finished; calling it again does nothing.
    package func stop() async {
        do {
            try await channel.close()
        } catch {
            // Already closed.
        }
    }

    /// Serves until the task is cancelled, a graceful shutdown is triggered, or ``stop()`` is called; then stops.
    package func run() async {
        let channel = self.channel
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                do {
                    try await channel.closeFuture.get()
                } catch {
                    // The close future does not fail.
                }
            } onCancel: {
                channel.close(promise: nil)
            }
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

extension MetricsServer {
    private static let bootstrapped = Mutex<PrometheusCollectorRegistry?>(nil)

    /// Bootstraps the process's `MetricsSystem` with a Prometheus factory, once per process.
    ///
    /// The first call bootstraps the metrics system over a new registry; later calls return that registry and
    /// change nothing. Metrics created before the first call are not in the registry: call it before creating a
    /// migration. The library never calls it; only the `zddm` commands do.
    ///
    /// - Returns: The registry every metric of the process is recorded in.
    package static func bootstrapMetricsSystem() -> PrometheusCollectorRegistry {
        bootstrapped.withLock { bootstrapped in
            if let bootstrapped { return bootstrapped }
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            bootstrapped = registry
            return registry
        }
    }
}

/// Answers one request per connection, then closes it.
private final class MetricsRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private var request: HTTPRequestHead?
    private var responded = false

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break  // No route takes a body.
        case .end:
            guard let head = request, !responded else { return }
            request = nil
            responded = true
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        var headers = HTTPHeaders()
        headers.add(name: "Connection", value: "close")
        let status: HTTPResponseStatus
        var body = context.channel.allocator.buffer(capacity: 0)
        if path != "/metrics" {
            status = .notFound
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            body.writeString("Not found: the metrics are at /metrics\n")
        } else if head.method != .GET && head.method != .HEAD {
            status = .methodNotAllowed
            headers.add(name: "Allow", value: "GET, HEAD")
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            body.writeString("Method not allowed: use GET\n")
        } else {
            status = .ok
            headers.add(name: "Content-Type", value: MetricsServer.contentType)
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            body.writeBytes(bytes)
        }
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        let response = HTTPResponseHead(version: head.version, status: status, headers: headers)
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        // Close once everything is written: closing earlier could drop the end of a large response.
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
