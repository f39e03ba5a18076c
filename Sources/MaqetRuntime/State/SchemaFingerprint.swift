import Foundation
import MaqetCore

/// A normalised description of a schema, one line per fact, so two databases can be compared
/// regardless of how their DDL was spelled: tables with their columns (name, type, not null, default,
/// primary key position), indexes (columns, uniqueness, partial), foreign keys, and triggers and views
/// with whitespace-normalised SQL. SQLite's own `sqlite_*` tables are left out.
public struct SchemaFingerprint: Equatable {
    public var lines: [String]

    public static func of(_ database: Database, excludingTables excluded: Set<String> = []) throws -> SchemaFingerprint {
        var lines: [String] = []
        for table in try database.tableNames() where !excluded.contains(table) {
            lines.append("table \(table)")
            for column in try database.query("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid", [.text(table)]) {
                let name = column[0].textValue ?? ""
                let type = (column[1].textValue ?? "").uppercased()
                let notNull = column[2].integerValue == 1 ? " NOT NULL" : ""
                let def = column[3].textValue.map { " DEFAULT \($0)" } ?? ""
                let pk = (column[4].integerValue ?? 0) > 0 ? " PRIMARY KEY(\(column[4].integerValue!))" : ""
                lines.append("column \(table).\(name) \(type)\(notNull)\(def)\(pk)")
            }
            for index in try database.query("SELECT name, \"unique\", origin, partial FROM pragma_index_list(?) ORDER BY name", [.text(table)]) {
                let name = index[0].textValue ?? ""
                let columns = try database.query("SELECT name FROM pragma_index_info(?) ORDER BY seqno", [.text(name)])
                    .map { $0[0].textValue ?? "<expr>" }.joined(separator: ", ")
                let unique = index[1].integerValue == 1 ? "unique " : ""
                let partial = index[3].integerValue == 1 ? " partial" : ""
                switch index[2].textValue {
                case "c":
                    lines.append("index \(name) \(unique)on \(table)(\(columns))\(partial)")
                case let origin:
                    // Automatic indexes (UNIQUE, PRIMARY KEY constraints) are named by position: name them by content.
                    lines.append("constraint-index \(unique)on \(table)(\(columns)) [\(origin ?? "?")]")
                }
            }
            for fk in try database.query("SELECT \"table\", \"from\", \"to\", on_update, on_delete, \"match\" FROM pragma_foreign_key_list(?) ORDER BY id, seq", [.text(table)]) {
                let values = fk.values.map { $0.textValue ?? "NULL" }
                lines.append("foreign-key \(table).\(values[1]) -> \(values[0]).\(values[2]) on update \(values[3]) on delete \(values[4]) match \(values[5])")
            }
        }
        for object in try database.query("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('trigger', 'view') ORDER BY type, name") {
            let table = object[2].textValue ?? ""
            if excluded.contains(table) { continue }
            lines.append("\(object[0].textValue ?? "") \(object[1].textValue ?? "") on \(table): \(normalise(object[3].textValue ?? ""))")
        }
        return SchemaFingerprint(lines: lines)
    }

    /// Collapses runs of whitespace to one space and trims, outside quotes as well (SQL text inside a
    /// trigger is compared by meaning, not by indentation).
    static func normalise(_ sql: String) -> String {
        var out = ""
        var pendingSpace = false
        for ch in sql {
            if ch.isWhitespace {
                pendingSpace = true
                continue
            }
            if pendingSpace && !out.isEmpty {
                // No space needed around punctuation: "x ( a )" and "x(a)" compare equal.
                if let last = out.last, !"(),;".contains(last), !"(),;".contains(ch) { out.append(" ") }
            }
            pendingSpace = false
            out.append(ch)
        }
        return out
    }

    /// Lines in `expected` but not here, and lines here but not in `expected`.
    public func differences(from expected: SchemaFingerprint) -> (missing: [String], unexpected: [String]) {
        let mine = Set(lines), theirs = Set(expected.lines)
        return (expected.lines.filter { !mine.contains($0) }, lines.filter { !theirs.contains($0) })
    }

    public var text: String { lines.joined(separator: "\n") }
}
