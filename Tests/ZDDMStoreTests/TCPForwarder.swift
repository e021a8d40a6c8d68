import NIOCore
import NIOPosix
import Synchronization

/// A TCP forwarder on 127.0.0.1 in front of a server, which a test can make unreachable and bring back.
///
/// Each connection accepted is forwarded byte for byte, both ways, to the server. ``cut()`` closes every forwarded
/// connection (both of its sides) and, until ``restore()``, closes every new connection at once, as a server that
/// went away would. ``holdRequests()`` stops delivering what clients send until the next ``cut()``: requests sent
/// meanwhile stay unanswered, so that the cut surely interrupts one.
final class TCPForwarder: Sendable {
    /// The port the forwarder listens on, on 127.0.0.1.
    let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let listener: any Channel
    private let registry: Registry

    /// Listens on 127.0.0.1 on a free port and forwards to `host`:`port`.
    /// - Parameters:
    ///   - host: The server's host.
    ///   - port: The server's port.
    /// - Returns: The running forwarder; call ``shutdown()`` when done.
    /// - Throws: When it cannot listen.
    static func start(to host: String, port: Int) async throws -> TCPForwarder {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let registry = Registry()
        do {
            let listener = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { client in
                    guard registry.admit(client) else { return client.eventLoop.makeFailedFuture(Refused()) }
                    return ClientBootstrap(group: client.eventLoop)
                        .connect(host: host, port: port)
                        .flatMapThrowing { server in
                            guard registry.keep(server, for: client) else {
                                server.close(promise: nil)
                                throw Refused()
                            }
                            try client.pipeline.syncOperations.addHandler(Relay(to: server, from: .client, registry))
                            try server.pipeline.syncOperations.addHandler(Relay(to: client, from: .server, registry))
                        }
                }
                .bind(host: "127.0.0.1", port: 0)
                .get()
            guard let bound = listener.localAddress?.port else {
                try? await listener.close()
                throw Refused()
            }
            return TCPForwarder(port: bound, group: group, listener: listener, registry: registry)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private init(port: Int, group: MultiThreadedEventLoopGroup, listener: any Channel, registry: Registry) {
        self.port = port
        self.group = group
        self.listener = listener
        self.registry = registry
    }

    /// A connection the forwarder did not forward.
    struct Refused: Error {}

    /// Bytes clients sent since ``holdRequests()`` that were held back.
    var heldBytes: Int { registry.state.withLock { $0.heldBytes } }

    /// Connections closed at once because the forwarder was down.
    var refused: Int { registry.state.withLock { $0.refused } }

    /// Connections forwarded so far.
    var accepted: Int { registry.state.withLock { $0.accepted } }

    /// The local ports of every connection the forwarder opened to the server: the clients' ports as the server
    /// sees them.
    var serverSidePorts: Set<Int> { registry.state.withLock { $0.serverSidePorts } }

    /// Stops delivering what clients send until the next ``cut()``: requests sent from now on stay unanswered.
    func holdRequests() {
        registry.state.withLock { state in
            state.holding = true
            state.heldBytes = 0
        }
    }

    /// Makes the server unreachable: closes every forwarded connection, and every new one until ``restore()``.
    func cut() async {
        let open = registry.state.withLock { state in
            state.up = false
            state.holding = false
            return Array(state.open.values)
        }
        for channel in open {
            try? await channel.close()
        }
    }

    /// Forwards new connections again.
    func restore() {
        registry.state.withLock { $0.up = true }
    }

    /// Closes every connection and stops listening.
    func shutdown() async {
        await cut()
        try? await listener.close()
        try? await group.shutdownGracefully()
    }

    /// The forwarder's state, shared by its channels' handlers.
    private final class Registry: Sendable {
        struct State {
            var up = true
            var holding = false
            var heldBytes = 0
            var accepted = 0
            var refused = 0
            var serverSidePorts: Set<Int> = []
            var open: [ObjectIdentifier: any Channel] = [:]
        }

        let state = Mutex(State())

        /// Records a new client connection; `false` while the forwarder is down.
        func admit(_ client: any Channel) -> Bool {
            let admitted = state.withLock { state in
                guard state.up else {
                    state.refused += 1
                    return false
                }
                state.accepted += 1
                state.open[ObjectIdentifier(client)] = client
                return true
            }
            if admitted { forget(client) }
            return admitted
        }

        /// Records the server side of a client's connection; `false` when the forwarder went down meanwhile.
        func keep(_ server: any Channel, for client: any Channel) -> Bool {
            let kept = state.withLock { state in
                guard state.up, state.open[ObjectIdentifier(client)] != nil else { return false }
                state.open[ObjectIdentifier(server)] = server
                if let port = server.localAddress?.port { state.serverSidePorts.insert(port) }
                return true
            }
            if kept { forget(server) }
            return kept
        }

        private func forget(_ channel: any Channel) {
            channel.closeFuture.whenComplete { _ in
                _ = self.state.withLock { $0.open.removeValue(forKey: ObjectIdentifier(channel)) }
            }
        }
    }

    /// Writes what one side of a forwarded connection reads to the other side, and closes the other side when
    /// this one closes.
    private final class Relay: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer

        enum Side { case client, server }

        private let partner: any Channel
        private let side: Side
        private let registry: Registry

        init(to partner: any Channel, from side: Side, _ registry: Registry) {
            self.partner = partner
            self.side = side
            self.registry = registry
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            if side == .client {
                let held = registry.state.withLock { state in
                    if state.holding { state.heldBytes += bytes.readableBytes }
                    return state.holding
                }
                if held { return }
            }
            partner.writeAndFlush(bytes, promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            partner.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
