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
        keepBackups = Int(environment["MAQET_KEEP_BACKUPS"] ?? "") ?? 5
    }
}

/// The opened, migrated state database. (Placeholder: the migrator replaces `open`.)
public final class StateStore {
    public let configuration: StateConfiguration
    public let database: Database

    init(configuration: StateConfiguration, database: Database) {
        self.configuration = configuration
        self.database = database
    }

    /// Opens the state database, creating the data directory (0700) and migrating as needed.
    /// `notice` receives the one-line stderr notice about a migration and its backup.
    public static func open(_ configuration: StateConfiguration, runtime: Runtime, notice: (String) -> Void) throws -> StateStore {
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let database = try Database(path: configuration.databasePath)
        return StateStore(configuration: configuration, database: database)
    }
}
