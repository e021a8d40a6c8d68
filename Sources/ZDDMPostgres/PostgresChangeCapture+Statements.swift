import ZDDM
import ZDDMSQL

extension PostgresChangeCapture {
    /// The SQL of change capture, built from validated, quoted names. The functions name the side tables with the
    /// table's schema, so they work whatever a writer's `search_path` is.
    struct Statements: Sendable {
        /// The statements of an install, in order, for one transaction.
        let install: [String]

        /// - Parameters:
        ///   - schema: The names.
        ///   - namespace: The table's schema, quoted by the server (`quote_ident`).
        ///   - keyType: The key column's type, as `format_type` spells it.
        init(_ schema: ChangeCaptureSchema, namespace: String, keyType: String) throws {
            let t = schema.table.quoted
            let k = schema.keyColumn.quoted
            let ver = schema.versionColumn.quoted
            let d = namespace + "." + schema.deletedTable.quoted
            let c = namespace + "." + schema.changeTable.quoted
            let before = try schema.object("before_write")
            let after = try schema.object("after_write")
            let beforeFunction = namespace + "." + before.quoted
            let afterFunction = namespace + "." + after.quoted
            let table = namespace + "." + t
            install = [
                "ALTER TABLE \(table) ADD COLUMN IF NOT EXISTS \(ver) bigint NOT NULL DEFAULT 0",
                """
                CREATE TABLE IF NOT EXISTS \(d) ("key" \(keyType) PRIMARY KEY, version bigint NOT NULL)
                """,
                """
                CREATE TABLE IF NOT EXISTS \(c) (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                "key" \(keyType) NOT NULL, version bigint NOT NULL, changed_at timestamptz NOT NULL DEFAULT now())
                """,
                """
                CREATE OR REPLACE FUNCTION \(beforeFunction)() RETURNS trigger LANGUAGE plpgsql AS $zddm$
                BEGIN
                    IF TG_OP = 'UPDATE' AND NEW.\(k) IS NOT DISTINCT FROM OLD.\(k) THEN
                        NEW.\(ver) := OLD.\(ver) + 1;
                    ELSE
                        NEW.\(ver) := COALESCE((SELECT x.version FROM \(d) x WHERE x."key" = NEW.\(k)), 0) + 1;
                    END IF;
                    RETURN NEW;
                END
                $zddm$
                """,
                """
                CREATE OR REPLACE FUNCTION \(afterFunction)() RETURNS trigger LANGUAGE plpgsql AS $zddm$
                BEGIN
                    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND NEW.\(k) IS DISTINCT FROM OLD.\(k)) THEN
                        INSERT INTO \(d) AS x ("key", version) VALUES (OLD.\(k), OLD.\(ver) + 1)
                            ON CONFLICT ("key") DO UPDATE SET version = GREATEST(x.version, EXCLUDED.version);
                        INSERT INTO \(c) ("key", version) VALUES (OLD.\(k), OLD.\(ver) + 1);
                    END IF;
                    IF TG_OP = 'DELETE' THEN
                        RETURN NULL;
                    END IF;
                    IF TG_OP = 'INSERT' OR NEW.\(k) IS DISTINCT FROM OLD.\(k) THEN
                        IF EXISTS (SELECT 1 FROM \(d) x WHERE x."key" = NEW.\(k) AND x.version >= NEW.\(ver)) THEN
                            RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
                                MESSAGE = 'zddm change capture: a concurrent delete of the same key committed '
                                    || 'first; retry the statement';
                        END IF;
                    END IF;
                    INSERT INTO \(c) ("key", version) VALUES (NEW.\(k), NEW.\(ver));
                    RETURN NULL;
                END
                $zddm$
                """,
                "DROP TRIGGER IF EXISTS \(before.quoted) ON \(table)",
                """
                CREATE TRIGGER \(before.quoted) BEFORE INSERT OR UPDATE ON \(table) \
                FOR EACH ROW EXECUTE FUNCTION \(beforeFunction)()
                """,
                "DROP TRIGGER IF EXISTS \(after.quoted) ON \(table)",
                """
                CREATE TRIGGER \(after.quoted) AFTER INSERT OR UPDATE OR DELETE ON \(table) \
                FOR EACH ROW EXECUTE FUNCTION \(afterFunction)()
                """,
            ]
        }

        /// The statements of an uninstall, in order, for one transaction (names resolved through the search path).
        static func uninstall(_ schema: ChangeCaptureSchema, removingData: Bool) throws -> [String] {
            let t = schema.table.quoted
            let before = try schema.object("before_write").quoted
            let after = try schema.object("after_write").quoted
            var statements = [
                "DROP TRIGGER IF EXISTS \(before) ON \(t)",
                "DROP TRIGGER IF EXISTS \(after) ON \(t)",
                "DROP FUNCTION IF EXISTS \(before)()",
                "DROP FUNCTION IF EXISTS \(after)()",
            ]
            if removingData {
                statements += [
                    "DROP TABLE IF EXISTS \(schema.changeTable.quoted)",
                    "DROP TABLE IF EXISTS \(schema.deletedTable.quoted)",
                    "ALTER TABLE \(t) DROP COLUMN IF EXISTS \(schema.versionColumn.quoted)",
                ]
            }
            return statements
        }
    }
}
