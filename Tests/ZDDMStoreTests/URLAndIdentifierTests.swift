import Testing
import ZDDM
import ZDDMPostgres
import ZDDMSQL
import ZDDMSQLite

@Suite("Database URLs and SQL identifiers")
struct URLAndIdentifierTests {
    @Test("sqlite: URLs")
    func sqliteURLs() throws {
        #expect(try SQLiteURL("sqlite::memory:").location == .memory)
        #expect(try SQLiteURL("sqlite:data/app.db").location == .file("data/app.db"))
        #expect(try SQLiteURL("sqlite:///tmp/app.db").location == .file("/tmp/app.db"))
        #expect(try SQLiteURL("sqlite:/tmp/app.db").location == .file("/tmp/app.db"))
        let readOnly = try SQLiteURL("sqlite:/tmp/app.db?mode=ro")
        #expect(readOnly.readOnly && readOnly.location == .file("/tmp/app.db"))
        for bad in ["sqlite:", "postgres://x@y/z", "sqlite:/tmp/a.db?mode=xx", "/tmp/a.db"] {
            let error = #expect(throws: ZDDMError.self) { _ = try SQLiteURL(bad) }
            #expect(error?.code == .invalidArgument)
        }
    }

    @Test("postgres:// URLs: parts, defaults, percent-encoding, sslmode")
    func postgresURLs() throws {
        let url = try PostgresURL("postgres://app:s3cr%40t@db.example.com:6543/orders?sslmode=require")
        #expect(url.host == "db.example.com")
        #expect(url.port == 6543)
        #expect(url.user == "app")
        #expect(url.password == "s3cr@t")
        #expect(url.database == "orders")
        #expect(url.sslMode == .require)
        let defaults = try PostgresURL("postgresql://app@localhost")
        #expect(defaults.port == 5432 && defaults.database == "app" && defaults.sslMode == .prefer)
        #expect(defaults.password == nil)
        let raw = try PostgresURL("postgres://u:p@ss/w:rd@[::1]:5433/db?sslmode=disable")
        #expect(raw.password == "p@ss/w:rd" && raw.host == "::1" && raw.port == 5433 && raw.sslMode == .disable)
        for bad in [
            "postgres://localhost/db", "postgres://u:p@host:0/db", "postgres://u:p@host:99999/db",
            "postgres://u:p@host/db?sslmode=verify-full", "postgres://u:p@host/db?foo=bar", "mysql://u:p@h/db",
            "postgres://u:p@:5432/db",
        ] {
            let error = #expect(throws: ZDDMError.self) { _ = try PostgresURL(bad) }
            #expect(error?.code == .invalidArgument)
        }
    }

    @Test("Parse errors never echo the URL's password")
    func parseErrorsHidePassword() {
        let secret = "Hunter2-\(distinctiveSecret)"
        for bad in ["postgres://u:\(secret)@host:notaport/db", "postgres://u:\(secret)@host/db?sslmode=\(secret)"] {
            let error = #expect(throws: ZDDMError.self) { _ = try PostgresURL(bad) }
            #expect(error?.description.contains(secret) == false, "\(String(describing: error))")
        }
    }

    @Test("A URL's description, debug description and dump hide the password")
    func descriptionHidesPassword() throws {
        let url = try PostgresURL("postgres://app:\(distinctiveSecret)@db:5432/orders?sslmode=disable")
        var dumped = ""
        dump(url, to: &dumped)
        for text in ["\(url)", String(reflecting: url), dumped] {
            #expect(!text.contains(distinctiveSecret), "\(text)")
        }
        #expect("\(url)" == "postgres://app:***@db:5432/orders?sslmode=disable")
    }

    @Test("Identifiers: letters, digits, underscores, at most 63 characters; quoted when used")
    func identifiers() throws {
        #expect(try SQLIdentifier("users_2024").quoted == "\"users_2024\"")
        #expect(try SQLIdentifier("_x").name == "_x")
        #expect(try SQLIdentifier(String(repeating: "a", count: 63)).name.count == 63)
        for bad in ["", "1abc", "a b", "a;b", "a\"b", "a'b", "a-b", "ä", String(repeating: "a", count: 64), "a\u{0}b"] {
            let error = #expect(throws: ZDDMError.self) { _ = try SQLIdentifier(bad, role: "table name") }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains("table name") == true)
        }
        let derived = #expect(throws: ZDDMError.self) {
            _ = try RowMapping<String>(
                table: String(repeating: "t", count: 50),
                keyColumn: "id",
                valueColumns: ["v"],
                encode: { ["v": .text($0)] },
                decode: { try $0.text("v") }
            )
        }
        #expect(derived?.message.contains("tombstone table name") == true)
    }

    @Test("Codecs: JSON round trip, raw bytes, and errors without the value")
    func codecs() throws {
        let json = JSONValueCodec<Person>()
        let person = Person(fullName: "Ada", email: "ada@example.com")
        #expect(try json.decode(json.encode(person)) == person)
        #expect(RawBytesValueCodec().decode(RawBytesValueCodec().encode([1, 2, 3])) == [1, 2, 3])
        let error = #expect(throws: ZDDMError.self) { _ = try json.decode(Array(distinctiveSecret.utf8)) }
        #expect(error?.description.contains(distinctiveSecret) == false)
    }
}
