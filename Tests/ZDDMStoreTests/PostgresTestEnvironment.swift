import Foundation
import Logging
import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL

/// The PostgreSQL server the tests use, from `POSTGRES_HOST`, `POSTGRES_PORT`, `POSTGRES_USER`,
/// `POSTGRES_PASSWORD` and `POSTGRES_DB`.
///
/// Without them the PostgreSQL tests are skipped (the trait says why), unless `ZDDM_REQUIRE_POSTGRES=1` is set,
/// as `.ci/run` does: then they run and fail, so CI can never pass by skipping them.
enum PostgresTestEnvironment {
    static let variables = ["POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"]

    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// Whether all variables are set.
    static var isConfigured: Bool { variables.allSatisfy { environment[$0]?.isEmpty == false } }

    /// Whether missing variables must fail the tests instead of skipping them.
    static var isRequired: Bool { environment["ZDDM_REQUIRE_POSTGRES"] == "1" }

    /// Whether the PostgreSQL tests run.
    static var shouldRun: Bool { isConfigured || isRequired }

    /// The server's URL parts.
    static func url() throws -> PostgresURL {
        guard isConfigured else {
            let missing = variables.filter { environment[$0]?.isEmpty != false }
            Issue.record("ZDDM_REQUIRE_POSTGRES=1 but \(missing.joined(separator: ", ")) not set")
            throw ZDDMError(.invalidArgument, message: "PostgreSQL test variables missing")
        }
        return PostgresURL(
            host: environment["POSTGRES_HOST"] ?? "",
            port: Int(environment["POSTGRES_PORT"] ?? "") ?? 5432,
            user: environment["POSTGRES_USER"] ?? "",
            password: environment["POSTGRES_PASSWORD"],
            database: environment["POSTGRES_DB"] ?? "",
            sslMode: .disable
        )
    }

    /// Connects, runs `body`, and shuts the pool down whatever happens.
    static func withDatabase<T>(
        logger: Logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
        _ body: (PostgresDatabase) async throws -> T
    ) async throws -> T {
        // A generous connect timeout: on a busy machine a login can take seconds, and no test here measures it.
        let database = try await PostgresDatabase.connect(
            url: url(),
            connectTimeout: .seconds(60),
            maximumConnections: 8,
            logger: logger
        )
        do {
            let result = try await body(database)
            await database.shutdown()
            return result
        } catch {
            await database.shutdown()
            throw error
        }
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs a test only with a PostgreSQL server configured (or required by `ZDDM_REQUIRE_POSTGRES=1`).
    static var postgres: Self {
        .enabled(
            if: PostgresTestEnvironment.shouldRun,
            Comment(
                rawValue: "PostgreSQL tests skipped: set POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, "
                    + "POSTGRES_PASSWORD and POSTGRES_DB (bash .ci/run does)"
            )
        )
    }
}
