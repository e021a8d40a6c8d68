package import Foundation
import ZDDM

/// What the SQL backfill coordinators share: the coordination format, and how chunk bounds (keys) are kept as
/// JSON text.
package enum BackfillCoordination {
    /// The coordination format this version writes and reads.
    package static var format: Int { 1 }

    /// Refuses a run written in a newer format than this version reads.
    package static func check(format: Int, run: String) throws {
        guard format <= Self.format else {
            throw ZDDMError(
                .unsupported,
                message: "backfill run '\(run)' was written by a newer version of zddm (coordination format "
                    + "\(format); this version reads format \(Self.format)): upgrade, or start a new run"
            )
        }
    }

    /// A duration in seconds, for SQL.
    package static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(min(seconds, 1 << 40)) + Double(attoseconds) / 1e18
    }

    /// A key as JSON text.
    package static func encode<Key: Encodable>(_ key: Key, _ encoder: JSONEncoder) throws -> String {
        do {
            return String(decoding: try encoder.encode(key), as: UTF8.self)
        } catch {
            throw ZDDMError(.mappingFailed, message: "a backfill chunk's key cannot be encoded as JSON")
        }
    }

    /// A key from JSON text.
    package static func decode<Key: Decodable>(_ text: String, _ decoder: JSONDecoder) throws -> Key {
        do {
            return try decoder.decode(Key.self, from: Data(text.utf8))
        } catch {
            throw ZDDMError(
                .mappingFailed,
                message: "a backfill chunk's key in the coordination table does not decode as this key type "
                    + "(was the run started with another --key-type?)"
            )
        }
    }
}
