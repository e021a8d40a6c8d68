import Foundation
public import Hummingbird
import ZDDM

/// `GET`, `PUT` and `DELETE /users/:id`, every call through the migration's proxy.
public struct UserRoutes<Context: RequestContext>: Sendable {
    let migration: UserMigration

    /// Creates the routes.
    /// - Parameter migration: The migration whose proxy serves the users.
    public init(migration: UserMigration) {
        self.migration = migration
    }

    /// Adds the routes to a group.
    /// - Parameter group: The group, for example `router.group("users")`.
    public func addRoutes(to group: RouterGroup<Context>) {
        group.get(":id", use: read)
        group.put(":id", use: write)
        group.delete(":id", use: delete)
    }

    @Sendable func read(_ request: Request, context: Context) async throws -> User {
        let id = try Self.id(context)
        guard let user = try await migration.proxy.read(id) else {
            throw HTTPError(.notFound, message: "no user \(id)")
        }
        return user
    }

    @Sendable func write(_ request: Request, context: Context) async throws -> User {
        let id = try Self.id(context)
        let user = try await request.decode(as: User.self, context: context)
        try await migration.proxy.write(id, user)
        return user
    }

    @Sendable func delete(_ request: Request, context: Context) async throws -> HTTPResponse.Status {
        let id = try Self.id(context)
        try await migration.proxy.delete(id)
        return .noContent
    }

    private static func id(_ context: Context) throws -> Int64 {
        guard let id = context.parameters.get("id", as: Int64.self) else {
            throw HTTPError(.badRequest, message: "a user id is a whole number")
        }
        return id
    }
}
