import CSQLite
import Foundation
import MaqetCore

/// What `maqet db status` shows.
public struct StatusReport {
    public struct Pending { public var migration: Migration; public var description: String? }
    public struct Applied {
        public var entry: HistoryEntry
        /// Checksum of the script as maqet has it now (nil when the file no longer exists).
        public var currentChecksum: String?
        /// The recorded checksum differs from the script's current one.
        public var edited: Bool
    }
    public var dataDirectory: String
    public var databasePath: String
    public var exists: Bool
    public var version: SchemaVersion
    public var latestVersion: Int
    public var migrationsSource: String
    public var pending: [Pending]
    public var history: [Applied]
    public var backups: [BackupFile]
}

/// What `maqet db check` found.
public struct CheckReport {
    public var integrity: [String]
    public var foreignKeyViolations: [String]
    public var missing: [String]
    public var unexpected: [String]
    public var problems: [String]
    public var notes: [String]
    public var ok: Bool { problems.isEmpty }
}

/// What `maqet db restore` did.
public struct RestoreOutcome {
    public var databasePath: String
    public var restoredFrom: String
    public var version: Int
    public var latestVersion: Int
    /// The automatic backup of the database as it was before the restore (nil when it was empty).
    public var previousBackup: String?
    /// Where a damaged or non-SQLite live file was moved (nil when it was sound).
    public var movedAside: String?
}

/// The maintenance operations behind `maqet db ...`. None of them migrates except `migrate`.
public enum StateMaintenance {
    public static func status(_ configuration: StateConfiguration, verbosity: Int) throws -> StatusReport {
        let migrations = try MigrationSet.load(configuration)
        let database = try StateStore.openFile(configuration, create: false)
        defer { database?.close() }
        let version = try database.map { try readVersion($0) } ?? SchemaVersion(version: 0, layout: .empty)
        let history = try database.map { try HistoryEntry.all($0) } ?? []
        let pendingList = migrations.pending(after: version.version)
        let migrator = Migrator(configuration: configuration, migrations: migrations, verbosity: verbosity)
        let descriptions = migrator.descriptions(pendingList)
        let applied = history.map { entry -> StatusReport.Applied in
            let current = entry.checksum == nil ? nil : (try? migrations.migration(number: entry.version)?.checksum()) ?? nil
            let edited = entry.checksum != nil && current != nil && entry.checksum != current
            return StatusReport.Applied(entry: entry, currentChecksum: current, edited: edited)
        }
        return StatusReport(
            dataDirectory: configuration.dataDirectory, databasePath: configuration.databasePath, exists: database != nil,
            version: version, latestVersion: migrations.latestVersion, migrationsSource: migrations.source,
            pending: pendingList.map { StatusReport.Pending(migration: $0, description: descriptions[$0.number]) },
            history: applied, backups: Backups.list(in: configuration.dataDirectory))
    }

    /// `db migrate --dry-run`: what would run; writes nothing (not even the data directory).
    public static func dryRun(_ configuration: StateConfiguration, verbosity: Int) throws -> (version: SchemaVersion, latest: Int, pending: [StatusReport.Pending]) {
        let migrations = try MigrationSet.load(configuration)
        let database = try StateStore.openFile(configuration, create: false)
        defer { database?.close() }
        let version = try database.map { try readVersion($0) } ?? SchemaVersion(version: 0, layout: .empty)
        if version.version > migrations.latestVersion {
            throw StateStore.newerError(configuration.databasePath, version: version.version, latest: migrations.latestVersion)
        }
        let list = migrations.pending(after: version.version)
        // Loading each chunk checks it is well formed, as a real run would.
        let migrator = Migrator(configuration: configuration, migrations: migrations, verbosity: verbosity)
        if let database { _ = try migrator.run(database, dryRun: true) }
        let descriptions = migrator.descriptions(list)
        return (version, migrations.latestVersion, list.map { StatusReport.Pending(migration: $0, description: descriptions[$0.number]) })
    }

    /// `db backup [PATH]`: a verified manual backup of the database as it is (no migration first).
    public static func backup(_ configuration: StateConfiguration, to path: String?) throws -> String {
        guard let database = try StateStore.openFile(configuration, create: false) else {
            throw MaqetError("there is no database at \(configuration.databasePath) yet; nothing to back up", status: .notFound)
        }
        defer { database.close() }
        let absolute = path.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        do {
            return try Backups.create(from: database, directory: configuration.dataDirectory, kind: .manual, path: absolute)
        } catch let error as SQLiteError {
            throw StateStore.refusal(error, path: configuration.databasePath)
        }
    }

    /// Schema version of a backup file (nil when it cannot be read).
    public static func version(ofBackup path: String) -> Int? {
        guard let database = try? Database(path: path, mode: .readOnly) else { return nil }
        defer { database.close() }
        return try? SchemaVersion.read(database).version
    }

    /// Finds a backup named on the command line: as given, else in the data directory.
    public static func resolveBackup(_ name: String, _ configuration: StateConfiguration) throws -> String {
        let candidates = [URL(fileURLWithPath: name).standardizedFileURL.path,
                          (configuration.dataDirectory as NSString).appendingPathComponent(name)]
        for candidate in candidates where FileManager.default.fileExists(atPath: candidate) { return candidate }
        throw MaqetError("no backup \(name) (looked in the current directory and \(configuration.dataDirectory)); list them with maqet db backups", status: .notFound)
    }

    /// `db restore BACKUP`: verifies the backup, backs up the current database, refuses while a VM is
    /// running (unless `force`), then copies the backup into the live database through SQLite's
    /// online backup API (other connections see the change as a normal write).
    public static func restore(_ configuration: StateConfiguration, backup name: String, force: Bool) throws -> RestoreOutcome {
        let migrations = try MigrationSet.load(configuration)
        let path = try resolveBackup(name, configuration)
        if path == configuration.databasePath { throw MaqetError("\(path) is the live database, not a backup", status: .usage) }
        let expected = try Backups.inspect(path: path)
        if expected.version > migrations.latestVersion {
            throw MaqetError("backup \(path) is at schema version \(expected.version), newer than this maqet knows (latest \(migrations.latestVersion)); refusing to restore it", status: .databaseRefused)
        }
        // A live file that is not a database or is damaged cannot be written through SQLite: it is
        // moved aside (never deleted) and the backup is restored into a new file.
        var movedAside: String?
        var live: Database
        do {
            live = try StateStore.openFile(configuration, create: true)!
            if try live.integrityCheck(quick: true) != ["ok"] {
                live.close()
                throw MaqetError("damaged", status: .databaseRefused)
            }
        } catch let error as MaqetError where error.status == .databaseRefused {
            movedAside = try moveAside(configuration)
            live = try StateStore.openFile(configuration, create: true)!
        } catch let error as SQLiteError where error.primaryCode == SQLITE_CORRUPT || error.primaryCode == SQLITE_NOTADB {
            movedAside = try moveAside(configuration)
            live = try StateStore.openFile(configuration, create: true)!
        }
        defer { live.close() }
        live.setBusyTimeout(milliseconds: Migrator.lockTimeoutMs)
        do {
            if movedAside == nil, try live.hasTable("vm_instances"), try live.hasColumn("vm_instances", "status") {
                let running = try live.query("SELECT name FROM vm_instances WHERE status = 'running' ORDER BY name").compactMap { $0[0].textValue }
                if !running.isEmpty && !force {
                    throw MaqetError("\(running.count) VM(s) are running (\(running.prefix(5).joined(separator: ", "))); stop them first, or pass --force to restore anyway (their processes will not match the restored state)")
                }
            }
            var previous: String?
            if try !live.tableNames().isEmpty {
                previous = try Backups.create(from: live, directory: configuration.dataDirectory, kind: .automatic)
                Backups.prune(in: configuration.dataDirectory, keep: max(1, configuration.keepBackups)) // never the one just taken
            }
            let source = try Database(path: path, mode: .readOnly)
            defer { source.close() }
            try source.copyContents(into: live, busyTimeoutMs: Int(Migrator.lockTimeoutMs))
            if movedAside != nil { _ = try live.query("PRAGMA journal_mode = WAL") }
            let restored = try SchemaVersion.read(live)
            guard restored.version == expected.version else {
                throw MaqetError("after restoring, \(configuration.databasePath) reads as version \(restored.version), the backup has \(expected.version)")
            }
            return RestoreOutcome(databasePath: configuration.databasePath, restoredFrom: path, version: expected.version,
                                  latestVersion: migrations.latestVersion, previousBackup: previous, movedAside: movedAside)
        } catch let error as SQLiteError {
            throw StateStore.refusal(error, path: configuration.databasePath)
        }
    }

    /// Renames a damaged live database (and its WAL) to `instances.db.damaged-YYYYMMDD-HHMMSS`
    /// without overwriting anything; drops its shared-memory index. Returns the new path.
    static func moveAside(_ configuration: StateConfiguration) throws -> String {
        let path = configuration.databasePath
        let base = path + ".damaged-" + Backups.stamp()
        let target = try Backups.linkUnique(path, base: base, what: "move the damaged \(path) aside as")
        unlink(path)
        if FileManager.default.fileExists(atPath: path + "-wal") { rename(path + "-wal", target + "-wal") }
        unlink(path + "-shm")
        return target
    }

    /// `db check`: integrity_check, foreign_key_check, and the schema compared with what the
    /// migrations up to the database's version produce on a fresh in-memory database.
    public static func check(_ configuration: StateConfiguration, verbosity: Int) throws -> CheckReport {
        let migrations = try MigrationSet.load(configuration)
        guard let database = try StateStore.openFile(configuration, create: false) else {
            throw MaqetError("there is no database at \(configuration.databasePath) yet; nothing to check", status: .notFound)
        }
        defer { database.close() }
        var report = CheckReport(integrity: [], foreignKeyViolations: [], missing: [], unexpected: [], problems: [], notes: [])
        do {
            report.integrity = try database.integrityCheck()
            if report.integrity != ["ok"] {
                report.problems += report.integrity.map { "integrity_check: \($0)" }
            }
            report.foreignKeyViolations = try database.query("PRAGMA foreign_key_check").map {
                "\($0[0].textValue ?? "?") rowid \($0[1].textValue ?? "NULL") references \($0[2].textValue ?? "?") (foreign key #\($0[3].textValue ?? "?"))"
            }
            report.problems += report.foreignKeyViolations.map { "foreign_key_check: \($0)" }
            let version = try readVersion(database)
            if version.version > migrations.latestVersion {
                report.problems.append("schema version \(version.version) is newer than this maqet knows (latest \(migrations.latestVersion)); the schema cannot be compared")
                return report
            }
            if version.version < migrations.latestVersion {
                report.notes.append("schema version \(version.version), latest \(migrations.latestVersion): \(migrations.latestVersion - version.version) migration(s) pending (maqet db migrate)")
            }
            if version.layout == .python {
                report.notes.append("version bookkeeping is still in the Python maqet layout; the next maqet command converts it")
            }
            let expected = try expectedFingerprint(migrations, upTo: version.version, configuration: configuration, verbosity: verbosity)
            let bookkeeping: Set<String> = version.layout == .current ? [] : ["schema_version", "schema_history"]
            let actual = try SchemaFingerprint.of(database, excludingTables: bookkeeping)
            let expectedLines = SchemaFingerprint(lines: expected.lines.filter { line in
                !bookkeeping.contains(where: { line == "table \($0)" || line.hasPrefix("column \($0).") || line.contains(" on \($0)(") })
            })
            let diff = actual.differences(from: expectedLines)
            report.missing = diff.missing
            report.unexpected = diff.unexpected
            report.problems += diff.missing.map { "schema: missing \($0)" }
            report.problems += diff.unexpected.map { "schema: unexpected \($0)" }
            for entry in try HistoryEntry.all(database) {
                if let recorded = entry.checksum, let migration = migrations.migration(number: entry.version),
                   let current = try? migration.checksum(), current != recorded {
                    report.notes.append("\(migration.fileName) was edited after it was applied (recorded sha256 \(recorded.prefix(12)), now \(current.prefix(12)))")
                }
            }
        } catch let error as SQLiteError {
            throw StateStore.refusal(error, path: configuration.databasePath)
        }
        return report
    }

    /// The schema the migrations 1...`version` produce on a fresh in-memory database.
    public static func expectedFingerprint(_ migrations: MigrationSet, upTo version: Int, configuration: StateConfiguration, verbosity: Int) throws -> SchemaFingerprint {
        let fresh = try Database(path: ":memory:")
        defer { fresh.close() }
        let subset = MigrationSet(migrations: Array(migrations.migrations.prefix(version)), source: migrations.source)
        if version > 0 {
            _ = try Migrator(configuration: configuration, migrations: subset, verbosity: verbosity).run(fresh)
        }
        return try SchemaFingerprint.of(fresh)
    }

    static func readVersion(_ database: Database) throws -> SchemaVersion {
        do {
            return try SchemaVersion.read(database)
        } catch let error as SQLiteError {
            throw StateStore.refusal(error, path: database.path)
        }
    }
}
