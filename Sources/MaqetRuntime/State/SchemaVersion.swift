import CSQLite
import Foundation
import MaqetCore

/// What the version bookkeeping of a database looks like.
public enum SchemaLayout: Equatable {
    /// No tables at all: a new database (version 0).
    case empty
    /// maqet's layout: `schema_version(value INTEGER NOT NULL)` with one row, history in `schema_history`.
    case current
    /// The published Python maqet's layout: `schema_version(version INTEGER PRIMARY KEY, applied_at,
    /// description)`, one row per applied version.
    case python
}

/// The schema version of a database and how it is recorded.
public struct SchemaVersion: Equatable {
    public var version: Int
    public var layout: SchemaLayout

    /// DDL of maqet's own bookkeeping tables.
    static let createVersionTable = "CREATE TABLE IF NOT EXISTS schema_version (value INTEGER NOT NULL)"
    static let createHistoryTable = """
        CREATE TABLE IF NOT EXISTS schema_history (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            checksum TEXT,
            applied_at TEXT NOT NULL,
            duration_ms REAL,
            source TEXT
        )
        """

    /// Fast path: the version when the database is in maqet's layout with a single integer row;
    /// nil when it needs a closer look (`read`).
    static func quickRead(_ database: Database) throws -> Int? {
        let statement: Statement
        do {
            statement = try database.prepare("SELECT value FROM schema_version")
        } catch let error as SQLiteError where error.primaryCode == SQLITE_ERROR {
            return nil // no such table / no such column: not our layout
        }
        defer { statement.finalize() }
        guard try statement.step(), case .integer(let value) = statement.value(at: 0) else { return nil }
        if try statement.step() { return nil }
        return Int(value)
    }

    /// Reads the version. Throws `MaqetError(.databaseRefused)` for a database maqet must not touch:
    /// tables but no `schema_version`, or a `schema_version` it does not understand.
    public static func read(_ database: Database) throws -> SchemaVersion {
        let tables = try database.tableNames()
        if tables.isEmpty { return SchemaVersion(version: 0, layout: .empty) }
        guard tables.contains("schema_version") else {
            throw MaqetError("\(database.path) has tables (\(tables.prefix(5).joined(separator: ", "))\(tables.count > 5 ? ", ..." : "")) but no schema_version table: it was not made by maqet; refusing to touch it", status: .databaseRefused)
        }
        let columns = try database.columns(of: "schema_version")
        if columns.contains("value") {
            let rows = try database.query("SELECT value FROM schema_version")
            guard rows.count == 1, case .integer(let value) = rows[0][0], value >= 0 else {
                throw MaqetError("\(database.path): schema_version must hold exactly one integer row, found \(rows.count) row(s); refusing to guess the version", status: .databaseRefused)
            }
            return SchemaVersion(version: Int(value), layout: .current)
        }
        if columns.contains("version") {
            let value = try database.scalar("SELECT max(version) FROM schema_version")
            guard let value, case .integer(let version) = value, version >= 0 else {
                throw MaqetError("\(database.path): the Python-maqet schema_version table has no version rows; refusing to guess the version", status: .databaseRefused)
            }
            return SchemaVersion(version: Int(version), layout: .python)
        }
        throw MaqetError("\(database.path): schema_version has unknown columns (\(columns.joined(separator: ", "))); refusing to touch it", status: .databaseRefused)
    }

    /// Inside the migration transaction: turns a Python-layout or empty database into maqet's layout.
    /// Python rows become history rows (checksum NULL, source 'python-maqet').
    static func adoptCurrentLayout(_ database: Database, from version: SchemaVersion, migrations: MigrationSet) throws {
        switch version.layout {
        case .current:
            try database.execute(createHistoryTable)
        case .empty:
            try database.execute(createVersionTable)
            try database.execute(createHistoryTable)
            try database.run("INSERT INTO schema_version (value) VALUES (0)")
        case .python:
            let legacy = try database.query("SELECT version, applied_at, description FROM schema_version ORDER BY version")
            try database.execute("DROP TABLE schema_version")
            try database.execute(createVersionTable)
            try database.execute(createHistoryTable)
            try database.run("INSERT INTO schema_version (value) VALUES (?)", [.integer(Int64(version.version))])
            for row in legacy {
                guard let number = row[0].integerValue else { continue }
                let name = row[2].textValue ?? migrations.migration(number: Int(number))?.name ?? "python-maqet version \(number)"
                try database.run(
                    "INSERT OR REPLACE INTO schema_history (version, name, checksum, applied_at, duration_ms, source) VALUES (?, ?, NULL, ?, NULL, 'python-maqet')",
                    [.integer(number), .text(name), .text(row[1].textValue ?? "unknown")])
            }
        }
    }

    static func write(_ database: Database, version: Int) throws {
        try database.run("UPDATE schema_version SET value = ?", [.integer(Int64(version))])
    }
}

/// One row of `schema_history`.
public struct HistoryEntry {
    public var version: Int
    public var name: String
    public var checksum: String?
    public var appliedAt: String
    public var durationMs: Double?
    public var source: String?

    /// The history; for a database still in the Python layout, its `schema_version` rows.
    public static func all(_ database: Database) throws -> [HistoryEntry] {
        guard try database.hasTable("schema_history") else {
            guard try database.hasColumn("schema_version", "version") else { return [] }
            return try database.query("SELECT version, coalesce(description, 'version ' || version), applied_at FROM schema_version ORDER BY version").map {
                HistoryEntry(version: Int($0[0].integerValue ?? 0), name: $0[1].textValue ?? "", checksum: nil,
                             appliedAt: $0[2].textValue ?? "unknown", durationMs: nil, source: "python-maqet")
            }
        }
        return try database.query("SELECT version, name, checksum, applied_at, duration_ms, source FROM schema_history ORDER BY version").map {
            HistoryEntry(version: Int($0[0].integerValue ?? 0), name: $0[1].textValue ?? "", checksum: $0[2].textValue,
                         appliedAt: $0[3].textValue ?? "", durationMs: { if case .real(let d) = $0 { return d }; return $0.integerValue.map(Double.init) }($0[4]),
                         source: $0[5].textValue)
        }
    }

    func insert(_ database: Database) throws {
        try database.run(
            "INSERT OR REPLACE INTO schema_history (version, name, checksum, applied_at, duration_ms, source) VALUES (?, ?, ?, ?, ?, ?)",
            [.integer(Int64(version)), .text(name), checksum.map(SQLValue.text) ?? .null, .text(appliedAt),
             durationMs.map(SQLValue.real) ?? .null, source.map(SQLValue.text) ?? .null])
    }
}
