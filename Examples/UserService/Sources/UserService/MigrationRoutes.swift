import Foundation
public import Hummingbird
import ZDDM

/// The operator's endpoints under `/migration`: status, rate, killswitch, backfill and verify.
public struct MigrationRoutes<Context: RequestContext>: Sendable {
    let migration: UserMigration

    /// Creates the routes.
    /// - Parameter migration: The migration to operate.
    public init(migration: UserMigration) {
        self.migration = migration
    }

    /// Adds the routes to a group.
    /// - Parameter group: The group, for example `router.group("migration")`.
    public func addRoutes(to group: RouterGroup<Context>) {
        group.get(use: status)
        group.put("rate", use: setRate)
        group.put("killswitch", use: setKillswitch)
        group.post("backfill", use: backfill)
        group.post("verify", use: verify)
    }

    @Sendable func status(_ request: Request, context: Context) async throws -> MigrationStatus {
        migration.status()
    }

    @Sendable func setRate(_ request: Request, context: Context) async throws -> MigrationStatus {
        let message = "the body must be a number from 0 to 1, for example 0.25"
        guard let rate = try await Self.body(Double.self, request, context) else {
            throw HTTPError(.badRequest, message: message)
        }
        do {
            return try await migration.setRate(rate)
        } catch let error as ZDDMError where error.code == .invalidRate {
            throw HTTPError(.badRequest, message: "\(message); got \(rate)")
        }
    }

    @Sendable func setKillswitch(_ request: Request, context: Context) async throws -> MigrationStatus {
        guard let on = try await Self.body(Bool.self, request, context) else {
            throw HTTPError(.badRequest, message: "the body must be true (stop all New traffic) or false")
        }
        return await migration.setKillswitch(on)
    }

    @Sendable func backfill(_ request: Request, context: Context) async throws -> BackfillResult {
        do {
            return try await migration.backfill()
        } catch let conflict as OperatorConflict {
            throw HTTPError(.conflict, message: conflict.description)
        }
    }

    @Sendable func verify(_ request: Request, context: Context) async throws -> VerifyResult {
        let repair: Bool
        switch request.uri.queryParameters.get("repair") {
        case nil, "false": repair = false
        case "true": repair = true
        default: throw HTTPError(.badRequest, message: "repair must be true or false")
        }
        return try await migration.verify(repair: repair)
    }

    /// Decodes a body that is a single JSON value (`0.25`, `true`); `nil` when it is not one of that type.
    private static func body<T: Decodable>(_ type: T.Type, _ request: Request, _ context: Context) async throws -> T? {
        let buffer = try await request.body.collect(upTo: 1024)
        return try? JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
    }
}
