public import Hummingbird
public import Logging

/// Builds the service: opens the database, restores the migration's gate and sets up the routes.
///
/// | route | does |
/// | --- | --- |
/// | `GET /users/:id` | reads a user through the proxy; 404 when there is none |
/// | `PUT /users/:id` | writes a user (a JSON `{"name", "email"}`) through the proxy |
/// | `DELETE /users/:id` | deletes a user through the proxy; 204 |
/// | `GET /migration` | rate, high-water rate, killswitch, unsafe keys, degraded |
/// | `PUT /migration/rate` | body: a number in `[0, 1]` |
/// | `PUT /migration/killswitch` | body: `true` or `false` |
/// | `POST /migration/backfill` | runs a backfill pass; its progress |
/// | `POST /migration/verify[?repair=true]` | compares Old and New; the counts |
///
/// - Parameters:
///   - configuration: Address, database file and migration settings.
///   - logger: The application's logger, also handed to the proxy; by default one labelled `UserService`.
/// - Returns: The application, ready to run (or to test with `HummingbirdTesting`).
/// - Throws: When the database cannot be opened or prepared.
public func buildApplication(
    configuration: UserServiceConfiguration,
    logger: Logger = Logger(label: "UserService")
) async throws -> some ApplicationProtocol {
    let migration = try await UserMigration.open(configuration: configuration, logger: logger)
    let router = Router(context: UserServiceRequestContext.self)
    router.add(middleware: StoreErrorMiddleware())
    UserRoutes(migration: migration).addRoutes(to: router.group("users"))
    MigrationRoutes(migration: migration).addRoutes(to: router.group("migration"))
    return Application(
        router: router,
        configuration: .init(address: .hostname(configuration.hostname, port: configuration.port)),
        logger: logger
    )
}
