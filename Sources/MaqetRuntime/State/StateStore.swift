import CSQLite
import Foundation
import MaqetCore

/// Where the state lives and how it is opened. Resolution order for the data directory:
/// `--maqet-data-dir`, `$MAQET_DATA_DIR`, `$XDG_DATA_HOME/maqet`, `~/.local/share/maqet`.
public struct StateConfiguration {
    public var dataDirectory: String
    /// An edited copy of the migrations (`--migrations-dir`, `$MAQET_MIGRATIONS_DIR`); nil = built in.
    public var migrationsDirectory: String?
    /// Automatic backups to keep (`$MAQET_KEEP_BACKUPS`, default 5).
    public var keepBackups: Int

    public var databasePath: String { (dataDirectory as NSString).appendingPathComponent("instances.db") }

    public init(dataDirOption: String?, migrationsDirOption: String?, environment: [String: String] = ProcessInfo.processInfo.environment) {
        func nonEmpty(_ s: String?) -> String? { (s?.isEmpty ?? true) ? nil : s }
        if let dir = nonEmpty(dataDirOption) ?? nonEmpty(environment["MAQET_DATA_DIR"]) {
            dataDirectory = dir
        } else if let xdg = nonEmpty(environment["XDG_DATA_HOME"]) {
            dataDirectory = (xdg as NSString).appendingPathComponent("maqet")
        } else {
            let home = nonEmpty(environment["HOME"]) ?? NSHomeDirectory()
            dataDirectory = (home as NSString).appendingPathComponent(".local/share/maqet")
        }
        dataDirectory = URL(fileURLWithPath: dataDirectory).standardizedFileURL.path
        migrationsDirectory = nonEmpty(migrationsDirOption) ?? nonEmpty(environment["MAQET_MIGRATIONS_DIR"])
        keepBackups = max(0, Int(environment["MAQET_KEEP_BACKUPS"] ?? "") ?? 5)
    }
}

/// The opened, migrated state database.
public final class StateStore {
    public let configuration: StateConfiguration
    public let database: Database
    /// What the open did, when it migrated.
    public let migration: MigrationOutcome?

    init(configuration: StateConfiguration, database: Database, migration: MigrationOutcome?) {
        self.configuration = configuration
        self.database = database
        self.migration = migration
    }

    /// Opens the state database, creating the data directory (0700) and migrating as needed.
    /// `notice` receives the one-line stderr notice about a migration and its backup. Pending
    /// migrations run in `runtime`'s Lua state (one state per process).
    public static func open(_ configuration: StateConfiguration, runtime: Runtime, notice: (String) -> Void) throws -> StateStore {
        let store = try open(configuration, verbosity: runtime.verbosity, runtime: runtime, notice: notice)
        runtime.stateConfiguration = configuration // for maqet.backup_state() and maqet.runner.launch
        return store
    }

    /// Opens the state database, creating the data directory (0700) and migrating as needed.
    /// Deciding "up to date" costs one query and a look at the migration file names; the Lua state
    /// and the scripts are only loaded when something is pending.
    public static func open(_ configuration: StateConfiguration, verbosity: Int = 0, runtime: Runtime? = nil, notice: (String) -> Void) throws -> StateStore {
        let migrations = try MigrationSet.load(configuration)
        let database = try openFile(configuration, create: true)!
        let latest = migrations.latestVersion
        do {
            if let version = try SchemaVersion.quickRead(database) {
                if version == latest { return StateStore(configuration: configuration, database: database, migration: nil) }
                if version > latest { throw newerError(database.path, version: version, latest: latest) }
            }
            let version = try SchemaVersion.read(database)
            if version.version > latest { throw newerError(database.path, version: version.version, latest: latest) }
            if version.version == latest && version.layout == .current {
                return StateStore(configuration: configuration, database: database, migration: nil)
            }
            let outcome = try Migrator(configuration: configuration, migrations: migrations, verbosity: verbosity, runtime: runtime).run(database)
            if let outcome, let backup = outcome.backupPath {
                notice(noticeLine(outcome, backup: backup))
            } else if let outcome, verbosity >= 2 {
                notice("created \(database.path) at schema version \(outcome.toVersion)")
            }
            return StateStore(configuration: configuration, database: database, migration: outcome)
        } catch let error as SQLiteError {
            throw refusal(error, path: database.path)
        }
    }

    static func noticeLine(_ outcome: MigrationOutcome, backup: String) -> String {
        if outcome.fromVersion == outcome.toVersion {
            return "converted instances.db from the Python maqet layout at version \(outcome.toVersion) (backup: \(backup))"
        }
        return "migrated instances.db from version \(outcome.fromVersion) to \(outcome.toVersion) (backup: \(backup))"
    }

    /// Opens the database file without migrating it (for `maqet db ...`). A missing or 0-byte file
    /// is a new database: created when `create`, else nil. An existing file is opened read-write
    /// without SQLITE_OPEN_CREATE and nothing is written to it here (the journal mode is only set on
    /// a new database, by the migrator).
    public static func openFile(_ configuration: StateConfiguration, create: Bool) throws -> Database? {
        let path = configuration.databasePath
        var info = stat()
        let exists = stat(path, &info) == 0
        if !exists && errno != ENOENT { throw MaqetError(StateFiles.accessProblem(path, errno: errno)) }
        if !exists || info.st_size == 0 {
            guard create else { return nil }
            try makeDataDirectory(configuration.dataDirectory)
            if !exists { try StateFiles.createPrivateFile(path) }
        }
        // Side files SQLite would replay are looked at on a copy first (SideFiles).
        // SQLite would open a file it may not write read-only, and still add -wal/-shm beside it.
        if exists && access(path, R_OK | W_OK) != 0 { throw MaqetError(StateFiles.accessProblem(path, errno: errno)) }
        try SideFiles.check(path, latest: { (try? MigrationSet.load(configuration).latestVersion) ?? Int.max })
        do {
            let database = try Database(path: path, mode: .readWrite)
            // Reading the schema is the first access to the file: a non-database fails here.
            _ = try database.scalar("SELECT count(*) FROM sqlite_master")
            // SQLite quietly opens a file it may not write read-only; every later write would fail.
            if database.isReadOnly { throw MaqetError(StateFiles.accessProblem(path)) }
            StateFiles.tightenExisting(configuration)
            return database
        } catch let error as SQLiteError {
            throw refusal(error, path: path)
        }
    }

    /// Creates the data directory with mode 0700 when it is missing.
    static func makeDataDirectory(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw MaqetError("data directory \(path) exists and is not a directory") }
            return
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path && !FileManager.default.fileExists(atPath: parent) {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        }
        if mkdir(path, StateFiles.directoryMode) != 0 && errno != EEXIST {
            throw MaqetError("cannot create data directory \(path): \(String(cString: strerror(errno)))")
        }
        chmod(path, StateFiles.directoryMode) // mkdir applies the umask
    }

    /// An SQLite failure while opening: a file that is not a database or is damaged is refused (exit 3).
    static func refusal(_ error: SQLiteError, path: String) -> MaqetError {
        if let fault = StateFiles.environmentFault(error, path: path) { return MaqetError(fault) }
        switch error.primaryCode {
        case SQLITE_NOTADB:
            return MaqetError("\(path) is not an SQLite database (\(error.message)); it was left untouched. Move it aside or restore a backup (maqet db backups)", status: .databaseRefused)
        case SQLITE_CORRUPT:
            return MaqetError("\(path) is damaged (\(error.message)); it was left untouched. Restore a backup: maqet db backups, then maqet db restore BACKUP", status: .databaseRefused)
        case SQLITE_BUSY, SQLITE_LOCKED:
            return MaqetError("\(path) is locked by another process (\(error.message)); try again when it has finished")
        default:
            return MaqetError("\(path): \(error.description)")
        }
    }

    static func newerError(_ path: String, version: Int, latest: Int) -> MaqetError {
        MaqetError("""
            \(path) is at schema version \(version), newer than this maqet knows (latest \(latest)); it was left untouched. \
            Either restore a backup taken before a newer maqet migrated it (maqet db backups, then maqet db restore BACKUP), \
            or leave this database to the newer maqet and use a separate data directory (--maqet-data-dir DIR)
            """, status: .databaseRefused)
    }
}
