public import Hummingbird
import Logging
import ZDDM

/// Turns the migration's errors into HTTP answers that name the failing store and operation, never a value.
///
/// Old's failures (the proxy's only errors: New's never fail a request) become 503 Service Unavailable with a
/// `Retry-After`; any other ``ZDDMError`` becomes 500. The full error, whose description holds no value either, is
/// logged.
public struct StoreErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Creates the middleware.
    public init() {}

    public func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ZDDMError {
            context.logger.error("storage failed", metadata: ["error": "\(error)"])
            guard error.role == .old else {
                throw HTTPError(.internalServerError, message: "internal storage error")
            }
            let operation = error.operation.map { ", \($0)" } ?? ""
            throw HTTPError(
                .serviceUnavailable,
                headers: [.retryAfter: "1"],
                message: "the user database is unavailable (Old store\(operation) failed); try again later"
            )
        }
    }
}
