import ZDDM

/// A PostgreSQL server and login, parsed from `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=MODE`.
///
/// The password is kept out of ``description``, `debugDescription` and reflection (`dump`), so logging or
/// printing the URL never shows it. User, password and database may be percent-encoded; the host may be an
/// IPv6 address in brackets. The scheme may also be `postgresql`.
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// How the connection uses TLS.
    public enum SSLMode: String, Sendable, Hashable, CaseIterable {
        /// Never use TLS.
        case disable
        /// Use TLS when the server offers it.
        case prefer
        /// Fail unless TLS is used.
        case require
    }

    /// The server's host name or address.
    public var host: String
    /// The server's port; 5432 by default.
    public var port: Int
    /// The user name.
    public var user: String
    /// The password, if any. Never printed.
    public var password: String?
    /// The database name; the user name by default, as in libpq.
    public var database: String
    /// The TLS mode; `prefer` by default, as in libpq.
    public var sslMode: SSLMode

    /// Creates a URL from its parts.
    /// - Parameters:
    ///   - host: The server's host.
    ///   - port: The server's port.
    ///   - user: The user name.
    ///   - password: The password, if any.
    ///   - database: The database name.
    ///   - sslMode: The TLS mode.
    public init(host: String, port: Int = 5432, user: String, password: String?, database: String, sslMode: SSLMode) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.sslMode = sslMode
    }

    /// Parses a URL.
    /// - Parameter url: `postgres://USER[:PASSWORD]@HOST[:PORT][/DB][?sslmode=disable|prefer|require]`.
    /// - Throws: ``ZDDM/ZDDMError`` with code ``ZDDM/ZDDMError/Code/invalidArgument`` saying which part is wrong; the
    ///   message never repeats the URL, which may hold a password.
    public init(_ url: String) throws {
        func invalid(_ message: String) -> ZDDMError {
            ZDDMError(.invalidArgument, message: "invalid PostgreSQL URL: " + message)
        }
        var rest: Substring
        if url.hasPrefix("postgres://") {
            rest = url.dropFirst("postgres://".count)
        } else if url.hasPrefix("postgresql://") {
            rest = url.dropFirst("postgresql://".count)
        } else {
            throw invalid("it must start with postgres:// or postgresql://")
        }
        // The user info ends at the last "@", so an unencoded "@" or "/" in a password still parses.
        guard let at = rest.lastIndex(of: "@") else { throw invalid("it needs a user: postgres://USER@HOST") }
        let userInfo = rest[..<at]
        rest = rest[rest.index(after: at)...]
        let user: String
        var password: String?
        if let colon = userInfo.firstIndex(of: ":") {
            user = try Self.percentDecoded(userInfo[..<colon], part: "user")
            password = try Self.percentDecoded(userInfo[userInfo.index(after: colon)...], part: "password")
        } else {
            user = try Self.percentDecoded(userInfo, part: "user")
        }
        guard !user.isEmpty else { throw invalid("the user name is empty") }

        var query: Substring = ""
        if let question = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: question)...]
            rest = rest[..<question]
        }
        var databasePart: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            databasePart = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var host: Substring
        var portPart: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw invalid("an IPv6 host needs a closing \"]\"") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                portPart = after.dropFirst()
            } else if !after.isEmpty {
                throw invalid("unexpected text after the IPv6 host")
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portPart = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw invalid("the host is empty") }
        var port = 5432
        if let portPart {
            guard let parsed = Int(portPart), (1...65535).contains(parsed) else {
                throw invalid("the port must be a number from 1 to 65535")
            }
            port = parsed
        }
        let database = databasePart.isEmpty ? user : try Self.percentDecoded(databasePart, part: "database name")

        var sslMode = SSLMode.prefer
        for item in query.split(separator: "&") where !item.isEmpty {
            let pair = item.split(separator: "=", maxSplits: 1)
            let name = pair.first.map(String.init) ?? ""
            guard name == "sslmode" else {
                throw invalid("unsupported option \(String(reflecting: String(name.prefix(40)))) (supported: sslmode)")
            }
            guard pair.count == 2, let mode = SSLMode(rawValue: String(pair[1])) else {
                throw invalid("sslmode must be disable, prefer or require")
            }
            sslMode = mode
        }
        self.init(
            host: String(host),
            port: port,
            user: user,
            password: password,
            database: database,
            sslMode: sslMode
        )
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        let secret = password == nil ? "" : ":***"
        return "postgres://\(user)\(secret)@\(shownHost):\(port)/\(database)?sslmode=\(sslMode.rawValue)"
    }

    /// The URL with the password replaced by `***`.
    public var debugDescription: String { description }

    /// The parts, with the password replaced by `***`.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "host": host, "port": port, "user": user, "password": password == nil ? "nil" : "***",
                "database": database, "sslMode": sslMode.rawValue,
            ]
        )
    }

    private static func percentDecoded(_ text: Substring, part: String) throws -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                throw ZDDMError(
                    .invalidArgument,
                    message: "invalid PostgreSQL URL: bad percent-encoding in the \(part)"
                )
            }
            bytes.append(high << 4 | low)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
