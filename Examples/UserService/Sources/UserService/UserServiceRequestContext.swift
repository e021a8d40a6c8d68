public import Foundation
public import Hummingbird

/// The service's request context: Hummingbird's basic one, with JSON answers in a stable key order.
public struct UserServiceRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: Source) {
        coreContext = .init(source: source)
    }

    public var responseEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
